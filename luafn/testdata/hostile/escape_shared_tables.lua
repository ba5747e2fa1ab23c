-- want: contained
-- Every library table is read-only, whichever way a write is tried.
local libs = {string = string, table = table, math = math, mqtt = mqtt, kv = kv, cloud = cloud,
  gpio = gpio, log = log, json = json, time = time, env = env, gateway = gateway}
function handle()
  for name, lib in pairs(libs) do
    local attempts = {
      function() lib.injected = 1 end,
      function() rawset(lib, "injected", 1) end,
      function() setmetatable(lib, {}) end,
      function() table.insert(lib, 1) end,
      function() table.remove(lib) end,
      function() table.sort(lib) end,
    }
    for i, f in ipairs(attempts) do
      if pcall(f) then return "escaped: " .. name .. " attempt " .. i end
    end
    if rawget(lib, "injected") ~= nil or lib.injected ~= nil then return "escaped: " .. name end
    if getmetatable(lib) ~= false then return "escaped: metatable of " .. name end
  end
  if math.pi < 3.14 or gateway.id ~= "gw-test" then return "escaped: values changed" end
  return "contained"
end
