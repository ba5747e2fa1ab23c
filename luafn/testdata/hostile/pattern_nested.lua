-- want: pattern
function handle() return string.find(string.rep("a", 300), string.rep("a?", 300) .. "b") end
