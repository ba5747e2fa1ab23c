-- footprint: every reading leaves one KV key and one outbox record behind, so that a run
-- of N readings builds the state whose memory footprint section 4 measures.
function handle(event)
  local device = string.match(event.topic or "", "^sensors/([^/]+)/temp$") or "unknown"
  local p = event.payload
  local seq = type(p) == "table" and p.seq or 0
  kv.set("readings/" .. device .. "/" .. seq, p)
  cloud.emit("readings", {device = device, seq = seq})
end
