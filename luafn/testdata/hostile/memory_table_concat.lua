-- want: memory
function handle()
  local t = {}
  for i = 1, 1000 do t[i] = "x" end
  return #table.concat(t, string.rep("-", 100000))
end
