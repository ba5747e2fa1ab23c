-- want: contained
-- Patterns work while the chunk loads too (the budget is set before the top level runs).
local words = {}
for w in string.gmatch(string.rep("word ", 500), "%a+") do words[#words + 1] = w end
function handle() if #words == 500 then return "contained" end return "broken: " .. #words end
