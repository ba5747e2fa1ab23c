-- want: memory
-- A table's first walk with next or pairs builds its iteration index, larger than its
-- entries. Tables that fit the limit, then walked without allocating anything else,
-- must trip the bound on the indexes alone.
function handle()
  local kept = {}
  for round = 1, 40 do
    local t = {}
    for i = 1, 2000 do t[i + 0.5] = true end
    kept[round] = t
  end
  for _, t in ipairs(kept) do
    for _ in pairs(t) do end
  end
  return "escaped"
end
