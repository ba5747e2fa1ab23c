-- want: runtime: position out of bounds
-- Lua 5.1 would shift 2^63 slots, each into the table's hash part.
function handle()
  table.insert({1, 2, 3}, -1e18, "x")
end
