-- wear, one outbox record per reading (the sink is down: every record stays).
function handle(event)
  local p = event.payload
  cloud.emit("readings", {device = p.device, seq = p.seq, temp = p.temp})
end
