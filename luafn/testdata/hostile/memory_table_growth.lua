-- want: memory
function handle()
  local t = {}
  while true do t[#t + 1] = {} end
end
