-- want: contained
-- Every removed global is absent, under any name it could be reached by.
local removed = {"os", "io", "debug", "package", "require", "module", "dofile", "loadfile",
  "load", "loadstring", "collectgarbage", "getfenv", "setfenv", "newproxy", "coroutine",
  "channel", "_printregs", "_GOPHER_LUA_VERSION", "gcinfo"}
function handle()
  for _, name in ipairs(removed) do
    if _G[name] ~= nil or rawget(_G, name) ~= nil then return "escaped: " .. name end
  end
  if string.dump ~= nil or ("").dump ~= nil then return "escaped: string.dump" end
  for k in pairs(_G) do
    for _, name in ipairs(removed) do
      if k == name then return "escaped: " .. k end
    end
  end
  local ok = pcall(function() return os.exit() end)
  if ok then return "escaped: os.exit" end
  return "contained"
end
