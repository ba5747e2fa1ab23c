-- want: registry
function handle() return select("#", unpack({}, 1, 1e8)) end
