# Sourced by the bench scripts: a temporary WORK dir removed on exit with every process in
# PIDS, the gateway and devsim built into it, and free_port.
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

export CGO_ENABLED=0
go build -trimpath -ldflags '-s -w' -o "$WORK/moongate" ./cmd/moongate
go build -o "$WORK/devsim" ./examples/devsim

# free_port picks a port below Linux's ephemeral range (32768 up), so that no client
# connection takes it between the pick and the listen, and that no socket uses now.
free_port() {
	local p
	while :; do
		p=$(shuf -i 20000-32767 -n 1)
		ss -Htan "sport = :$p" | grep -q . || { echo "$p"; return; }
	done
}
