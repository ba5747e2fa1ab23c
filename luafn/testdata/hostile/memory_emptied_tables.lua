-- want: memory
-- Go maps keep their capacity after deletes: a table filled and emptied again still
-- holds its peak. Counted as empty, a thousand of them would hold 200 times the limit.
function handle()
  local kept = {}
  for round = 1, 1000 do
    local t = {}
    for i = 1, 20000 do t["k" .. i] = i end
    for i = 1, 20000 do t["k" .. i] = nil end
    kept[round] = t
  end
  return "escaped"
end
