-- want: memory
-- Each item is capped at two-digit widths, so the growth is in the results kept.
function handle()
  local keep = {}
  local f = string.rep("%99d", 50)
  for i = 1, 1e6 do
    keep[i] = string.format(f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
      1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
  end
end
