-- want: memory
-- Effects live outside the VM and are bounded too.
function handle()
  local big = string.rep("x", 100000)
  for i = 1, 1e6 do cloud.emit("s", big) end
end
