-- wear, one KV write per reading: the device's last reading (one key per device).
function handle(event)
  local p = event.payload
  kv.set("last/" .. p.device, {seq = p.seq, temp = p.temp})
end
