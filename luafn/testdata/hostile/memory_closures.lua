-- want: memory
function handle()
  local t = {}
  for i = 1, 1e8 do t[i] = function() return i end end
end
