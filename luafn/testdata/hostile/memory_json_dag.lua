-- want: memory
-- A DAG of 40 levels encodes to 2^40 leaves.
function handle()
  local t = {"leaf"}
  for i = 1, 40 do t = {t, t} end
  return #json.encode(t)
end
