-- want: contained
-- getmetatable("").__index is the string library in gopher-lua; writes to it would
-- persist in a pooled VM. Run twice: the second run checks the first changed nothing.
local evil = function() return "evil" end
runs = (runs or 0) + 1
function handle()
  if ("x"):upper() ~= "X" or string.upper("x") ~= "X" or string.len("abc") ~= 3 then
    return "escaped: string methods changed (run " .. runs .. ")"
  end
  local mt = getmetatable("")
  local attempts = {
    function() mt.__index.upper = evil end,
    function() mt.__index = {upper = evil} end,
    function() rawset(mt, "__index", {upper = evil}) end,
    function() rawset(mt.__index, "upper", evil) end,
    function() setmetatable(mt, nil) end,
    function() setmetatable(mt.__index, {__index = function() return evil end}) end,
    function() string.upper = evil end,
    function() rawset(string, "upper", evil) end,
    function() table.insert(mt.__index, evil) end,
    function() setmetatable("", {__index = {upper = evil}}) end,
  }
  for i, f in ipairs(attempts) do
    if pcall(f) then return "escaped: attempt " .. i end
  end
  if ("x"):upper() ~= "X" or mt.__index.upper("x") ~= "X" then return "escaped: after attempts" end
  return "contained"
end
