-- want: pattern
-- Took 25 s in gopher-lua's matcher, longer inputs never return.
function handle() return string.find(string.rep("a", 400), ".-.-.-b") end
