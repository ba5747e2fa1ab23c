-- want: pattern
-- Each call is cheap; the budget is per invocation.
function handle()
  local s = string.rep("a", 2000)
  while true do string.find(s, "a-b") end
end
