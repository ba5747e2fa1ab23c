-- wear, publish only: one QoS 0 publish per reading, nothing stored.
function handle(event)
  local p = event.payload
  mqtt.publish("out/" .. p.device, {temp = p.temp})
end
