-- want: memory
function handle() return #string.rep("x", 1e9) end
