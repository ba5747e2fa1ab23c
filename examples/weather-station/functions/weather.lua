-- weather: a rolling average of the outside temperature, an alert when it crosses a limit.
--
-- Every reading of the "outside" sensor (a BME280, or its simulated twin) arrives as
-- event.values = {temp = °C, humidity = %RH, pressure = hPa}. The last WINDOW
-- temperatures are kept in the function's KV store, so the average survives restarts.
-- When the average crosses ALERT_C (either way), one alert goes to the "alerts" stream
-- and to a retained MQTT topic; not one per reading. The returned table is emitted to the
-- "weather" stream (emit: in moongate.yaml), so every reading reaches the cloud.
local window_size = tonumber(env.WINDOW) or 10
local limit = tonumber(env.ALERT_C) or 30

function handle(event)
  local v = event.values
  if type(v) ~= "table" or type(v.temp) ~= "number" then
    log.warn(string.format("ignoring an event without values.temp from %s", tostring(event.sensor or event.topic)))
    return nil
  end

  local window = kv.get("window") or {}
  table.insert(window, v.temp)
  while #window > window_size do
    table.remove(window, 1)
  end
  kv.set("window", window)

  local sum = 0
  for _, t in ipairs(window) do
    sum = sum + t
  end
  local avg = sum / #window

  local hot = avg > limit
  if hot ~= (kv.get("hot") == true) then
    kv.set("hot", hot)
    local alert = {sensor = event.sensor, avg_c = avg, hot = hot, limit_c = limit, ts = event.ts}
    cloud.emit("alerts", alert)
    -- Retained: a dashboard that connects later still sees the current state.
    mqtt.publish("weather/" .. gateway.id .. "/alert", alert, {qos = 1, retain = true})
    log.warn(string.format("temperature average %.1f %s %g", avg, hot and "above" or "back below", limit))
  end

  return {temp_c = v.temp, avg_c = avg, humidity = v.humidity, pressure_hpa = v.pressure, ts = event.ts}
end
