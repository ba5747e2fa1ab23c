-- want: pattern
function handle() return string.gsub(string.rep("a", 3000), "a*a*a*b", "") end
