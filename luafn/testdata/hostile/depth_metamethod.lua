-- want: depth
-- Recursion through a metamethod runs through Go (L.Call) on every level.
function handle()
  local t = setmetatable({}, {})
  getmetatable(t).__index = function(t, k) return t[k .. "x"] end
  return t.a
end
