-- want: registry
-- j - i + 1 overflows: must not read as a small count.
function handle() return unpack({}, -2^63, 2^63) end
