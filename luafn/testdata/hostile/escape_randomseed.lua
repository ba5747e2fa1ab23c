-- want: contained
-- math.randomseed seeds this VM's generator only (checked across functions in sandbox_test).
function handle()
  math.randomseed(42)
  local a = math.random(1, 1000000)
  math.randomseed(42)
  if math.random(1, 1000000) ~= a then return "escaped: seed has no effect" end
  return "contained"
end
