-- want: memory
function handle()
  local keep, s = {}, string.rep("a", 1e6)
  for i = 1, 100 do keep[i] = s:upper() .. i end
end
