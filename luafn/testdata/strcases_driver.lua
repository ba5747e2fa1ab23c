-- Produces strcases.golden from strcases.txt with the reference Lua 5.1:
--   lua5.1 strcases_driver.lua strcases.txt > strcases.golden
-- Each output line is the serialized results of one expression, or "error: message".
function collect(f, s, c)
  local out = {}
  while true do
    local r = {f(s, c)}
    if r[1] == nil then break end
    c = r[1]
    out[#out + 1] = "(" .. table.concat(r, "|") .. ")"
  end
  return table.concat(out, " ")
end
local function ser(...)
  local out = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "string" then
      out[#out + 1] = string.format("%q", v)
    elseif type(v) == "number" then
      out[#out + 1] = string.format("%.14g", v)
    else
      out[#out + 1] = tostring(v)
    end
  end
  return table.concat(out, ", ")
end
local function pack(ok, ...)
  if not ok then
    return "error: " .. (string.gsub(tostring((...)), "^[^:]*:%d+: ", ""))
  end
  return (string.gsub(ser(...), "\n", "\\n"))
end
for line in io.lines(arg[1]) do
  local f = assert(loadstring("return " .. line))
  print(pack(pcall(f)))
end
