-- temp_alert: publish alerts/<device> when a reading passes env.THRESHOLD.
--
-- Readings come from MQTT (topic sensors/<device>/temp, payload {"temp": 31.2} or a bare
-- number) and from the simulated sensor (event.values.temp). The returned alert is also
-- emitted to the "alerts" stream (emit: in moongate.yaml), and a per-device counter is kept
-- in the function's durable KV store.
local threshold = tonumber(env.THRESHOLD) or 30

local function reading(event)
  if event.source == "sensor" then
    return event.sensor, event.values.temp
  end
  local device = string.match(event.topic or "", "^sensors/([^/]+)/temp$")
  local p = event.payload
  if type(p) == "table" then
    return device, tonumber(p.temp)
  end
  return device, tonumber(p)
end

function handle(event)
  local device, temp = reading(event)
  if not device or not temp then
    log.warn(string.format("ignoring a reading without device or temperature on %s", tostring(event.topic)))
    return nil
  end
  kv.incr("readings/" .. device)
  if temp <= threshold then
    return nil
  end
  local alert = {device = device, temp = temp, threshold = threshold, ts = event.ts}
  mqtt.publish("alerts/" .. device, alert, {qos = 1})
  log.info(string.format("alert: %s at %g", device, temp))
  return alert
end
