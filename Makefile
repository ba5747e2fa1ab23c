# Moongate. `make run` starts the quickstart; `make test` runs every test.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOFLAGS_B := -trimpath -ldflags '$(LDFLAGS)'
export CGO_ENABLED = 0

BIN       := bin/moongate
DEVSIM    := bin/devsim
RECEIVER  := bin/receiver
ARM_TARGETS := dist/moongate-linux-armv6 dist/moongate-linux-armv7 dist/moongate-linux-arm64

.PHONY: all build run test vet unit smoke-arm stress-arm cross package bench bench-e2e fuzz clean

all: build

build:
	$(GO) build $(GOFLAGS_B) -o $(BIN) ./cmd/moongate
	$(GO) build $(GOFLAGS_B) -o $(DEVSIM) ./examples/devsim
	$(GO) build $(GOFLAGS_B) -o $(RECEIVER) ./examples/receiver

# The quickstart: the gateway on the embedded broker with a simulated sensor, five
# simulated MQTT devices, and the receiver that stands in for the cloud (it prints the
# alert batches the sink posts). Console: http://127.0.0.1:8080. Ctrl-C stops all three.
run: build
	@echo "console: http://127.0.0.1:8080   (Ctrl-C stops)"
	@$(RECEIVER) -listen 127.0.0.1:8090 & recv=$$!; \
	  $(DEVSIM) -broker tcp://127.0.0.1:1883 -devices 5 -rate 1 -watch 'alerts/#' >/dev/null 2>&1 & \
	  sim=$$!; trap 'kill $$sim $$recv 2>/dev/null' EXIT INT TERM; \
	  $(BIN) run -c examples/quickstart/moongate.yaml

test: vet unit smoke-arm stress-arm

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# third_party/gopher-lua is its own module (a patched fork, see its MOONGATE.md), so
# ./... does not reach it: its suite, with Lua's own tests, runs here too.
unit:
	$(GO) test -count=1 -timeout 10m ./...
	cd third_party/gopher-lua && $(GO) test -count=1 -timeout 5m .

# The ARM binaries, run under qemu-user through the same end-to-end path as on x86.
# The self-update tests build a second moongate for the architecture and check the type
# the gateway reports for itself (MOONGATE_E2E_TYPE).
smoke-arm: dist/moongate-linux-armv7 dist/moongate-linux-arm64
	MOONGATE_E2E_BIN=$(CURDIR)/dist/moongate-linux-armv7 MOONGATE_E2E_EXEC=qemu-arm MOONGATE_E2E_TYPE=moongate-linux-armv7 \
	  $(GO) test -count=1 -timeout 5m -run 'TestE2E/embedded|TestExampleFunctionTestsSameEverywhere|TestSelfUpdate' ./cmd/moongate
	MOONGATE_E2E_BIN=$(CURDIR)/dist/moongate-linux-arm64 MOONGATE_E2E_EXEC=qemu-aarch64 MOONGATE_E2E_TYPE=moongate-linux-arm64 \
	  $(GO) test -count=1 -timeout 5m -run 'TestE2E/embedded|TestExampleFunctionTestsSameEverywhere|TestSelfUpdate' ./cmd/moongate

# Badger on 32-bit ARM: 1M keys through compactions, reopen, read back, under qemu-arm.
stress-arm:
	MOONGATE_STRESS=1 GOARCH=arm GOARM=6 $(GO) test -count=1 -timeout 10m -exec qemu-arm -run TestStress32bit ./sync/store

# The long power-loss run: 20 kill -9 and power cuts per broker, on internal/powercut
# (needs /dev/fuse); `make test` runs 3. -seed N replays a failure.
.PHONY: test-powerloss
test-powerloss:
	$(GO) test -count=1 -timeout 30m -run '^TestPowerLoss$$' ./cmd/moongate -cuts 20

cross: $(ARM_TARGETS)

dist/moongate-linux-armv6: FORCE
	GOOS=linux GOARCH=arm GOARM=6 $(GO) build $(GOFLAGS_B) -o $@ ./cmd/moongate
dist/moongate-linux-armv7: FORCE
	GOOS=linux GOARCH=arm GOARM=7 $(GO) build $(GOFLAGS_B) -o $@ ./cmd/moongate
dist/moongate-linux-arm64: FORCE
	GOOS=linux GOARCH=arm64 $(GO) build $(GOFLAGS_B) -o $@ ./cmd/moongate
FORCE:

# Packages for a Pi and for servers: a .deb each for armhf (an armv6 binary, so the Pi
# Zero and 1 run it too), arm64 and amd64 (nfpm), and a .tar.gz each with the unit and
# INSTALL, in dist/pkg with SHA256SUMS and an ed25519-signed manifest per artefact. Set
# MOONGATE_SIGNING_KEY (moongate firmware keygen) for a release; without it a
# development key is made in dist/pkg. Tested by TestPackages (./packaging, as root).
PKG_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null); \
  if [ -n "$$v" ]; then echo "$${v#v}"; else echo "0.0.0~git$$(git rev-parse --short HEAD)"; fi)
PKG_ARCHES  ?= armhf arm64 amd64
package:
	GO=$(GO) packaging/build.sh '$(PKG_VERSION)' dist/pkg $(PKG_ARCHES)

# Go benchmarks of every package, then the end-to-end load run (devsim against the real
# binary, embedded broker and Mosquitto, durable invocations with ack latency).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./...
	examples/bench/run.sh 10

# The peer workload of issue 12 over TCP against the real binary: 100 devices, QoS 0 at
# full speed and at 20k/s, QoS 1 in and out, and a 100k QoS 1 backlog drained from
# Mosquitto; Mosquitto passing the same readings through is measured in the same rounds,
# alternating. Then issue 21's bad neighbour: ten good devices, quiet and beside a
# flooding device and a runaway function. Takes about 5 minutes; run it on an otherwise
# idle machine. E2E_FLAGS="-scenarios full -rounds 1" for one part.
bench-e2e: build
	$(GO) run ./examples/bench/e2e -moongate $(BIN) $(E2E_FLAGS)

# Over-the-air updates on the real binary and fwdevice processes: a 1 MiB image to 1 and
# to 50 devices at once (time, gateway CPU and peak RSS), then a rollout to 10 devices
# with the default settings. About 3 minutes, mostly the default rate limits.
.PHONY: bench-firmware
bench-firmware: build
	$(GO) run ./examples/bench/firmware -moongate $(BIN) $(FW_FLAGS)

# A fleet push: 100 gateway processes (each with its embedded broker and console) on a
# 3-node NATS cluster's MQTT listeners; revision 1 with 5 functions while 10 of them are
# stopped, back 30 s later (time to every report, p50/p99/max), NATS's message counts,
# the gateways' total RSS; then a revision that does not compile, refused by all. About
# 1 minute and 2.7 GiB of RAM (measured); FLEET_FLAGS="-gateways 6 -offline 2 -back 5s" for a small one.
.PHONY: bench-fleet
bench-fleet: build
	$(GO) run ./examples/bench/fleet -moongate $(BIN) $(FLEET_FLAGS)

# SD-card wear: bytes the gateway writes per event (publish only, one KV write, one outbox
# record; 10, 100, 1000 events/s; sync and batch durability). WEAR_SECS per run: the
# default 600 takes 3 hours for the 18 runs; FUNCS, RATES, MODES, QOS select.
.PHONY: bench-wear
WEAR_SECS ?= 600
bench-wear:
	examples/bench/wear.sh $(WEAR_SECS)

# Also the data dirs the examples' configs create where moongate ran them.
clean:
	rm -rf bin dist moongate-data moongate-data-* examples/*/moongate-data*
