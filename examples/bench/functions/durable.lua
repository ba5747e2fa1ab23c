-- durable: one KV increment and one outbox record per reading, the cost of a durable
-- invocation (both commit in one transaction before the device gets its PUBACK).
function handle(event)
  local device = string.match(event.topic or "", "^sensors/([^/]+)/temp$") or "unknown"
  local p = event.payload
  kv.incr("readings/" .. device)
  cloud.emit("readings", {device = device, seq = type(p) == "table" and p.seq or nil})
end
