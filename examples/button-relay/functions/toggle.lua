-- toggle: each press of the button (a falling edge, debounced 50 ms) switches the relay.
--
-- The relay's state lives in the function's KV store ("on"), along with a press counter.
-- gpio.write takes effect only after this invocation has committed, so a failed
-- invocation never clicks the relay, and the KV state always matches what was written.
-- If presses come faster than the function runs, the sensors fold them into one event
-- and count them in event.coalesced: the relay then ends where that many presses leave it.
function handle(event)
  local presses = 1 + (event.coalesced or 0)
  local on = kv.get("on") == true
  if presses % 2 == 1 then
    on = not on
  end
  kv.set("on", on)
  local total = kv.incr("presses", presses)
  gpio.write("relay", on and 1 or 0)
  log.info(string.format("button pressed (%d so far): relay %s", total, on and "on" or "off"))
  return {on = on, presses = total, at = event.ts}
end
