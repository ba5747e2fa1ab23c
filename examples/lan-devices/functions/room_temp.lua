-- Keeps the last temperature of each room (the device's user names the room) and warns
-- when one is too warm.
function handle(event)
  local room = event.topic:match("^sensors/([^/]+)/temp$")
  local temp = type(event.payload) == "table" and tonumber(event.payload.temp) or tonumber(event.payload)
  if not room or not temp then
    error("want sensors/<room>/temp with a number, got " .. event.topic)
  end
  kv.set("temp/" .. room, temp)
  if temp > 28 then
    mqtt.publish("commands/" .. room .. "/fan", {on = true})
  end
  return {room = room, temp = temp}
end
