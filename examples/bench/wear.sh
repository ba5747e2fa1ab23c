#!/usr/bin/env bash
# SD-card wear (issue 19): the bytes the real gateway writes per event, for a function
# that only publishes, one that writes one KV key and one that emits one outbox record,
# at 10, 100 and 1000 events/s, in each durability mode. It prints numbers and asserts
# nothing. Everything listens on 127.0.0.1 free ports and lives in a temporary directory
# (put it on the disk you care about with TMPDIR=...).
#
#   examples/bench/wear.sh [SECONDS]      (default 600 per run: 10 minutes, so that
#                                          compactions and value-log GC are included)
#   FUNCS="kv" RATES="10" MODES="batch" QOS=0 BATCH_INTERVAL=5s examples/bench/wear.sh 60
#
# Per run: devsim publishes at RATE readings/s (QoS $QOS) on the embedded broker for
# SECONDS; the gateway runs the function on each (trigger mqtt:sensors/+/temp, at the
# same QoS). Measured from the start of the load to 2 s after its end, the gateway still
# running:
#   written    write_bytes of /proc/PID/io: what the gateway made the kernel write to
#              storage (its data dir: the log goes to a file only at level warn)
#   fs         the file system's own count of what it wrote to its device, journal
#              included (/sys/fs/ext4/DEV/lifetime_write_kbytes), after a sync -f so
#              that pages still dirty count too. As root, each run gets a fresh 1 GiB
#              ext4 file system on a loop device of its own (WEAR_FS=loop, the
#              default as root), so only the gateway's data dir is counted; with
#              WEAR_FS=host the data dir is on WORK's file system and the count is
#              device-wide: on a shared machine other writers count too
#   B/ev       written / events invoked; fsB/ev: fs / events
#   per day    the larger of B/ev and fsB/ev (what the card sees) * rate * 86400: a
#              day at the run's rate (the 10/s rows: a day at 10 events/s)
#   state B    bytes of state one event changes: the KV key and value, or the outbox
#              record as the store accounts it (key + value)
#   WA         write amplification: the larger of B/ev and fsB/ev over state B
#   syncs      moongate_store_syncs_total per event
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-600}
FUNCS=${FUNCS:-publish kv outbox}
RATES=${RATES:-10 100 1000}
MODES=${MODES:-sync batch}
QOS=${QOS:-0}
BATCH_INTERVAL=${BATCH_INTERVAL:-5s} # gateway.batch_interval in batch mode
. examples/bench/lib.sh
WEAR_FS=${WEAR_FS:-$([ "$(id -u)" = 0 ] && command -v losetup >/dev/null && echo loop || echo host)}
MOUNTS=()
wear_cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || true; done
	cleanup
}
trap wear_cleanup EXIT

metric() { curl -fs "$API/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%.0f", s}'; }
written() {
	if [ ! -r /proc/"$GW_PID"/io ]; then
		echo "the gateway exited:" >&2
		cat "$dir/gateway.log" >&2
		exit 1
	fi
	awk '/^write_bytes/ {print $2}' /proc/"$GW_PID"/io
}
# fs_kb DIR: what the file system holding DIR has written to its device, in KiB.
fs_kb() {
	sync -f "$1"
	local f
	f=/sys/fs/ext4/$(basename "$(df --output=source "$1" | tail -1)")/lifetime_write_kbytes
	if [ -r "$f" ]; then cat "$f"; else echo 0; fi
}

trigger='mqtt:sensors/+/temp'
[ "$QOS" = 1 ] && trigger="$trigger@1"

echo "== SD-card wear: ${SECS}s per run, QoS $QOS readings, batch_interval $BATCH_INTERVAL, embedded broker, data dir on $WEAR_FS ext4 (fs: $([ "$WEAR_FS" = loop ] && echo "its own" || echo "device-wide"))"
printf '%-6s %-8s %6s %8s %11s %11s %8s %8s %11s %7s %6s %8s\n' mode function rate events written fs B/ev fsB/ev "per day" "state B" WA syncs/ev
for mode in $MODES; do
	for fn in $FUNCS; do
		for rate in $RATES; do
			dir=$WORK/$mode-$fn-$rate
			mkdir -p "$dir/functions" "$dir/data"
			if [ "$WEAR_FS" = loop ]; then
				truncate -s 1G "$dir.img"
				mkfs.ext4 -q -F "$dir.img"
				mount -o loop "$dir.img" "$dir/data"
				MOUNTS+=("$dir/data")
			fi
			cp "examples/bench/functions/wear_$fn.lua" "$dir/functions/"
			API=http://127.0.0.1:$(free_port)
			MQTT=$(free_port)
			cat >"$dir/moongate.yaml" <<YAML
gateway:
  id: wear
  data_dir: ./data
  log_level: warn
  durability: $mode
  batch_interval: $BATCH_INTERVAL
  console: {listen: ${API#http://}}
mqtt:
  embedded: {listen: 127.0.0.1:$MQTT}
functions:
  - name: f
    source: functions/wear_$fn.lua
    triggers: ["$trigger"]
YAML
			(cd "$dir" && exec "$WORK/moongate" run -c moongate.yaml >gateway.log 2>&1) &
			GW_PID=$!
			PIDS+=("$GW_PID")
			up=
			for _ in $(seq 600); do
				curl -fs "$API/api/v1/status" >/dev/null 2>&1 && { up=1; break; }
				kill -0 "$GW_PID" 2>/dev/null || break
				sleep 0.1
			done
			if [ -z "$up" ]; then
				echo "the gateway did not start:" >&2
				cat "$dir/gateway.log" >&2
				exit 1
			fi
			# 10 devices above 10/s, each at a tenth of the rate.
			devices=1
			[ "$rate" -gt 10 ] && devices=10
			w0=$(written) f0=$(fs_kb "$dir/data") i0=$(metric moongate_invocations_total) s0=$(metric moongate_store_syncs_total)
			"$WORK/devsim" -broker "tcp://127.0.0.1:$MQTT" -devices "$devices" \
				-rate "$(awk -v r="$rate" -v d="$devices" 'BEGIN {print r / d}')" -qos "$QOS" -duration "${SECS}s" >/dev/null 2>&1
			sleep 2
			w1=$(written) f1=$(fs_kb "$dir/data") i1=$(metric moongate_invocations_total) s1=$(metric moongate_store_syncs_total)
			case $fn in
			kv) # one key per device, overwritten by every reading
				state=$(curl -fs "$API/api/v1/functions/f/kv" | grep -o '"key":"[^"]*","value":[^}]*},"size":[0-9]*' |
					awk -F'"size":' '{split($1, k, "\""); n++; s += length(k[4]) + $2} END {if (n) printf "%.0f", s / n; else print 0}') ;;
			outbox)
				state=$(awk -v b="$(metric moongate_outbox_pending_bytes)" -v r="$(metric moongate_outbox_pending_records)" 'BEGIN {if (r) printf "%.0f", b / r; else print 0}') ;;
			*) state=0 ;;
			esac
			kill "$GW_PID"; wait "$GW_PID" || true
			if [ "$WEAR_FS" = loop ]; then
				umount "$dir/data"
				rm -f "$dir.img"
			fi
			awk -v mode="$mode" -v fn="$fn" -v rate="$rate" -v ev="$((i1 - i0))" -v w="$((w1 - w0))" -v fs="$(((f1 - f0) * 1024))" \
				-v st="$state" -v sy="$((s1 - s0))" 'BEGIN {
				be = ev ? w / ev : 0; fe = ev ? fs / ev : 0
				card = fe > be ? fe : be # what the card sees: the larger of the two counts
				printf "%-6s %-8s %6d %8d %11d %11d %8.0f %8.0f %11s %7s %6s %8.3f\n", mode, fn, rate, ev, w, fs, be, fe,
					sprintf("%.2f GB", card * rate * 86400 / 1e9), st ? st : "-", st ? sprintf("%.0f", card / st) : "-", ev ? sy / ev : 0
			}'
		done
	done
done
