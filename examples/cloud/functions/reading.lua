-- reading: every sample of the simulated sensor becomes one record of the "readings"
-- stream (emit: in moongate.yaml), which the sink of each example sends to its cloud.
function handle(event)
  return {sensor = event.sensor, temp = event.values.temp, ts = event.ts}
end
