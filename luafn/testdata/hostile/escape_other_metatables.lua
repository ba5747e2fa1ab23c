-- want: contained
-- Metatables of numbers, booleans, nil and functions are not settable from Lua.
function handle()
  for i, v in ipairs({1, true, print}) do
    if pcall(setmetatable, v, {__index = function() return "evil" end}) then
      return "escaped: setmetatable on " .. type(v)
    end
  end
  if pcall(setmetatable, nil, {}) then return "escaped: nil" end
  if getmetatable(1) ~= nil then return "escaped: number metatable" end
  return "contained"
end
