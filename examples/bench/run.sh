#!/usr/bin/env bash
# End-to-end figures of the real binary (issues 2 and 4). It prints numbers and asserts
# nothing: the machine's load changes them. Everything listens on 127.0.0.1 free ports and
# lives in a temporary directory.
#
#   examples/bench/run.sh [SECONDS]          (default 10; DEVICES=50 by default)
#   SECTIONS="2" examples/bench/run.sh       (only the sections named, of 0 1 2 3 4)
#
# 0. sizes of the three ARM binaries, built as `make cross` builds them.
# 1. quickstart: messages/s through examples/quickstart's function with examples/devsim at
#    full rate (-rate 0 -qos 1), on the embedded broker and on Mosquitto, and how many of
#    the alerts the function published came back (devsim -watch 'alerts/#'). The gateway
#    line is what the gateway invoked and committed per second (from /metrics); with
#    Mosquitto, devsim's acks come from the broker, so only that line measures the
#    gateway. Mosquitto keeps its default in-flight window of 20 toward the gateway (see
#    TestBrokerBacklog in cmd/moongate for why not more).
# 2. durable: invocations/s of a function doing kv.incr + cloud.emit (fsync on, QoS 1) on
#    the embedded broker, where a device's PUBACK waits for the commit: devsim's ack
#    latency is the durable ack latency (at saturation, with devsim's 32 messages in
#    flight per device, and with one in flight per device).
# 3. idle RSS of `moongate run` on the quickstart after 5 s, on x86-64 and under
#    qemu-aarch64 / qemu-arm (there the RSS is qemu's, emulator included).
# 4. footprint of the gateway holding 100k KV keys and 100k outbox records its cloud sink
#    could not deliver (FOOTPRINT=100000 readings, one key and one record each): RSS and
#    disk once they are written, after a restart on them, and under a steady load of
#    LOAD=1000 readings/s on top (each adding its key and record).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-10}
DEVICES=${DEVICES:-50}
SECTIONS=" ${SECTIONS:-0 1 2 3} "
section() { [[ $SECTIONS == *" $1 "* ]]; }
. examples/bench/lib.sh

# gateway DIR BROKER FUNCTION TRIGGER [EXTRA]: writes DIR/moongate.yaml, starts the
# gateway, waits for its API; sets API, MQTT and GW_PID.
gateway() {
	local dir=$1 broker=$2 fn=$3 trigger=$4 extra=${5:-} bin=${BIN:-$WORK/moongate} exec=${EXEC:-}
	API=http://127.0.0.1:$(free_port)
	MQTT=$(free_port)
	mkdir -p "$dir/functions"
	cp "$fn" "$dir/functions/"
	cat >"$dir/moongate.yaml" <<YAML
gateway:
  id: bench
  data_dir: ./data
  console: {listen: ${API#http://}}
mqtt:
  broker: $broker
  embedded: {listen: 127.0.0.1:$MQTT}
$extra
functions:
  - name: f
    source: functions/$(basename "$fn")
    triggers: ["$trigger"]
    env: {THRESHOLD: "30"}
    emit: alerts
YAML
	(cd "$dir" && exec $exec "$bin" run -c moongate.yaml >gateway.log 2>&1) &
	GW_PID=$!
	PIDS+=("$GW_PID")
	for _ in $(seq 600); do
		curl -fs "$API/api/v1/status" >/dev/null 2>&1 && return
		sleep 0.1
	done
	echo "gateway did not start:" >&2
	cat "$dir/gateway.log" >&2
	exit 1
}

invocations() {
	curl -fs "$API/metrics" | awk '/^moongate_invocations_total\{function="f",result="ok"\}/ {s += $2} END {printf "%d", s}'
}

# load NAME DEVSIM_BROKER [DEVSIM FLAGS]: runs devsim at full rate, then waits until the
# gateway has invoked everything, and prints both sides. The gateway's rate runs from
# devsim's start to the moment its invocation count reached its final value.
load() {
	local name=$1 broker=$2
	shift 2
	local before start out final t_last poll
	before=$(invocations)
	(while :; do echo "$(date +%s.%N) $(invocations)"; sleep 0.1; done) >"$WORK/poll" &
	poll=$!
	start=$(date +%s.%N)
	out=$("$WORK/devsim" -broker "$broker" -devices "$DEVICES" -rate 0 -qos 1 -duration "${SECS}s" "$@" 2>/dev/null)
	# The gateway may still be working through what a broker queued: wait until its
	# count has not moved for 2 s.
	while :; do
		sleep 1
		final=$(tail -1 "$WORK/poll" | cut -d' ' -f2)
		[ "$(tail -21 "$WORK/poll" | head -1 | cut -d' ' -f2)" = "$final" ] && [ "$(wc -l <"$WORK/poll")" -gt 21 ] && break
	done
	kill "$poll"; wait "$poll" 2>/dev/null || true
	t_last=$(awk -v f="$final" '$2 == f {print $1; exit}' "$WORK/poll")
	printf '%-22s devsim: %s\n' "$name" "$(echo "$out" | head -1)"
	[ "$(echo "$out" | wc -l)" -gt 1 ] && printf '%-22s devsim: %s\n' "" "$(echo "$out" | tail -1)"
	awk -v n="$((final - before))" -v a="$t_last" -v b="$start" -v name="$name" \
		'BEGIN {printf "%-22s gateway: invoked and committed %d in %.2fs = %.0f/s\n", name, n, a - b, n / (a - b)}'
}

# alerts: every alert the function published is also in the outbox (emit: alerts).
alerts() {
	printf '%-22s alerts published (outbox): %s\n' "" "$(curl -fs "$API/metrics" | awk '/^moongate_outbox_pending_records / {print $2}')"
}

if section 0; then
echo "== 0. binary sizes (as make cross builds them)"
for t in arm:6 arm:7 arm64:; do
	arch=${t%%:*} arm=${t#*:}
	GOOS=linux GOARCH=$arch GOARM=$arm go build -trimpath -ldflags '-s -w' -o "$WORK/size" ./cmd/moongate
	printf '%-22s %s bytes (%.1f MiB)\n' "linux/$arch${arm:+v$arm}" "$(stat -c %s "$WORK/size")" "$(echo "$(stat -c %s "$WORK/size") / 1048576" | bc -l)"
done

fi

if section 1; then
echo "== 1. quickstart function, $DEVICES devices, ${SECS}s at full rate (QoS 1)"
gateway "$WORK/qs-embedded" embedded examples/quickstart/functions/temp_alert.lua 'mqtt:sensors/+/temp@1'
load "embedded broker" "tcp://127.0.0.1:$MQTT" -watch 'alerts/#' -linger 2s
alerts
kill "$GW_PID"; wait "$GW_PID" || true

MQ=$(free_port)
cat >"$WORK/mosquitto.conf" <<CONF
listener $MQ 127.0.0.1
user $(id -un)
allow_anonymous true
persistence false
max_queued_messages 0
CONF
/usr/sbin/mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
PIDS+=($!)
sleep 0.5
gateway "$WORK/qs-mosquitto" "tcp://127.0.0.1:$MQ" examples/quickstart/functions/temp_alert.lua 'mqtt:sensors/+/temp@1'
load "mosquitto" "tcp://127.0.0.1:$MQ" -watch 'alerts/#' -linger 2s
alerts
kill "$GW_PID"; wait "$GW_PID" || true

fi

if section 2; then
echo "== 2. durable invocations (kv.incr + cloud.emit, fsync on), $DEVICES devices, QoS 1, embedded broker"
gateway "$WORK/durable" embedded examples/bench/functions/durable.lua 'mqtt:sensors/+/temp@1'
load "durable" "tcp://127.0.0.1:$MQTT" -latency
# One message in flight per device: the latency of a commit, not of a queue.
load "durable, window 1" "tcp://127.0.0.1:$MQTT" -latency -window 1
kill "$GW_PID"; wait "$GW_PID" || true

fi

if section 3; then
echo "== 3. idle RSS of moongate run on the quickstart, after 5 s (VmRSS)"
rss() {
	local name=$1 dir=$WORK/rss-$1 bin=${BIN:-$WORK/moongate} exec=${EXEC:-}
	API=http://127.0.0.1:$(free_port)
	cp -r examples/quickstart "$dir"
	sed -i "s/127.0.0.1:8080/${API#http://}/; s/127.0.0.1:1883/127.0.0.1:$(free_port)/" "$dir/moongate.yaml"
	(cd "$dir" && exec $exec "$bin" run -c moongate.yaml >gateway.log 2>&1) &
	GW_PID=$!
	PIDS+=("$GW_PID")
	for _ in $(seq 600); do
		curl -fs "$API/api/v1/status" >/dev/null 2>&1 && break
		sleep 0.1
	done
	sleep 5
	printf '%-22s %s\n' "$name" "$(grep VmRSS /proc/"$GW_PID"/status)"
	kill "$GW_PID"; wait "$GW_PID" || true
}
rss x86-64
GOOS=linux GOARCH=arm64 go build -trimpath -ldflags '-s -w' -o "$WORK/moongate-arm64" ./cmd/moongate
BIN=$WORK/moongate-arm64 EXEC=qemu-aarch64 rss arm64-qemu-aarch64
GOOS=linux GOARCH=arm GOARM=7 go build -trimpath -ldflags '-s -w' -o "$WORK/moongate-armv7" ./cmd/moongate
BIN=$WORK/moongate-armv7 EXEC=qemu-arm rss armv7-qemu-arm
fi

if section 4; then
N=${FOOTPRINT:-100000} LOAD=${LOAD:-1000}
echo "== 4. gateway footprint with $N KV keys and $N pending outbox records"
# The sink's port has no listener: every record stays pending, as when the uplink is down.
SINK="sync:
  sinks:
    - name: cloud
      streams: [readings]
      http: {url: http://127.0.0.1:$(free_port)/ingest}"
footprint() {
	local name=$1 dir=$2
	printf '%-22s RSS %s (anon %s, file %s), pending %s, disk %s\n' "$name" \
		"$(awk '/^VmRSS/ {print $2 / 1024 " MB"}' /proc/"$GW_PID"/status)" \
		"$(awk '/^RssAnon/ {print $2 / 1024 " MB"}' /proc/"$GW_PID"/status)" \
		"$(awk '/^RssFile/ {print $2 / 1024 " MB"}' /proc/"$GW_PID"/status)" \
		"$(curl -fs "$API/metrics" | awk '/^moongate_outbox_pending_records / {print $2}')" \
		"$(du -sh "$dir/data" | cut -f1)"
}
fp=$WORK/footprint
gateway "$fp" embedded examples/bench/functions/footprint.lua 'mqtt:sensors/+/temp@1' "$SINK"
"$WORK/devsim" -broker "tcp://127.0.0.1:$MQTT" -devices "$DEVICES" -rate 0 -qos 1 -count $((N / DEVICES)) >/dev/null 2>&1
sleep 10
footprint "written, idle 10 s" "$fp"
kill "$GW_PID"; wait "$GW_PID" || true
gateway "$fp" embedded examples/bench/functions/footprint.lua 'mqtt:sensors/+/temp@1' "$SINK"
sleep 10
footprint "restarted, idle 10 s" "$fp"
"$WORK/devsim" -broker "tcp://127.0.0.1:$MQTT" -devices "$DEVICES" -rate "$(awk -v l="$LOAD" -v d="$DEVICES" 'BEGIN {print l / d}')" -qos 1 -prefix load \
	-duration "${SECS}s" >/dev/null 2>&1 &
sim=$!
peak=0
while kill -0 "$sim" 2>/dev/null; do
	r=$(awk '/^VmRSS/ {print $2}' /proc/"$GW_PID"/status)
	[ "$r" -gt "$peak" ] && peak=$r
	sleep 0.2
done
footprint "${LOAD}/s for ${SECS}s" "$fp"
printf '%-22s peak RSS during the load %s MB\n' "" "$((peak / 1024))"
kill "$GW_PID"; wait "$GW_PID" || true
fi
