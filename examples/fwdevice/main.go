// Command fwdevice simulates a device that takes its firmware over the air from a Moongate
// gateway: the device side of firmware/PROTOCOL.md. It resumes a download from its last
// good offset after a disconnect or a restart of either side, verifies the sha256 and the
// signature before it "applies" the image, and reports healthy. Flags make it misbehave the
// ways real devices do, for the tests.
//
//	fwdevice -broker tcp://127.0.0.1:1883 -id dev-1 -type esp32-env -version 1.0.0 -counter 1 -key fw.pub -dir state/
//
// Its state (the running version, a partial download) is kept in -dir, as flash would keep
// it. It prints one line per step on stdout (offered, resumed, healthy, failed ...).
package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/firmware"
)

// The device-side timings of PROTOCOL.md.
const (
	getTimeout    = 5 * time.Second
	getTries      = 5
	offerWait     = 10 * time.Second
	restateRounds = 3
	stateEvery    = 64 << 10 // bytes between downloading states
)

type options struct {
	broker, id, typ, version string
	counter                  uint64
	keyFile, dir             string
	dropAt, corruptAt        int64
	failVerify, neverHealthy bool
	healthWindow             time.Duration
	exit                     bool
}

func main() {
	var o options
	flag.StringVar(&o.broker, "broker", "tcp://127.0.0.1:1883", "broker URL")
	flag.StringVar(&o.id, "id", "fwdev-1", "device id: the MQTT client id and the topic level")
	flag.StringVar(&o.typ, "type", "esp32-env", "device type")
	flag.StringVar(&o.version, "version", "1.0.0", "the version it runs at first (-dir keeps the one it updated to)")
	flag.Uint64Var(&o.counter, "counter", 1, "the version counter it runs at first")
	flag.StringVar(&o.keyFile, "key", "", "the public key it trusts (moongate firmware keygen), required")
	flag.StringVar(&o.dir, "dir", "fwdevice-state", "where it keeps its running version and a partial download")
	flag.Int64Var(&o.dropAt, "drop-at", -1, "drop the connection once, when this many bytes are held, then reconnect and resume")
	flag.Int64Var(&o.corruptAt, "corrupt-at", -1, "flip a bit of the chunk that holds this offset, once (the sha256 check must catch it)")
	flag.BoolVar(&o.failVerify, "fail-verify", false, "fail the signature check of every downloaded image")
	flag.BoolVar(&o.neverHealthy, "never-healthy", false, "apply, never confirm healthy: revert after -health-window and report failed")
	flag.DurationVar(&o.healthWindow, "health-window", 0, "how long an applied image has to confirm itself healthy (0: the manifest's health window)")
	flag.BoolVar(&o.exit, "exit", false, "exit after the first update ends (healthy: 0, failed: 3)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	d, err := newDevice(o, logger)
	if err == nil {
		err = d.run(ctx)
	}
	var f failure
	switch {
	case errors.As(err, &f):
		os.Exit(3)
	case err != nil && ctx.Err() == nil:
		logger.Error("fwdevice", "err", err)
		os.Exit(1)
	}
}

// failure ends a run with -exit after a failed update.
type failure struct{ reason string }

func (f failure) Error() string { return f.reason }

type running struct {
	Version string `json:"version"`
	Counter uint64 `json:"counter"`
}

type chunk struct {
	off  int64
	data []byte
}

type device struct {
	o      options
	keys   []firmware.PublicKey
	logger *slog.Logger
	run0   running
	client paho.Client
	offers chan firmware.Offer
	chunks chan chunk
	lost   chan struct{} // the connection dropped (the gateway, and its broker, went away)
	conns  atomic.Int64  // connections made: a lost one that is not the last is not news

	// The download in progress: its offer (nil: none) and the bytes held.
	offer    *firmware.Offer
	offset   int64
	received int64 // chunk bytes taken this process, resumes show in it
	dropped  bool
	corrupt  bool
}

func newDevice(o options, logger *slog.Logger) (*device, error) {
	if o.keyFile == "" {
		return nil, errors.New("-key is required")
	}
	b, err := os.ReadFile(o.keyFile)
	if err != nil {
		return nil, err
	}
	k, err := firmware.ParsePublicKey(string(b))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, err
	}
	d := &device{o: o, keys: []firmware.PublicKey{k}, logger: logger, run0: running{o.version, o.counter},
		offers: make(chan firmware.Offer, 4), chunks: make(chan chunk, 4), lost: make(chan struct{}, 1)}
	if b, err := os.ReadFile(d.path("running.json")); err == nil {
		_ = json.Unmarshal(b, &d.run0)
	}
	if b, err := os.ReadFile(d.path("download.json")); err == nil {
		var of firmware.Offer
		if json.Unmarshal(b, &of) == nil {
			if fi, err := os.Stat(d.path("download.bin")); err == nil && fi.Size() <= of.Size {
				d.offer, d.offset = &of, fi.Size()
			}
		}
	}
	return d, nil
}

func (d *device) path(name string) string { return filepath.Join(d.o.dir, name) }
func (d *device) topic(s string) string   { return "moongate/devices/" + d.o.id + "/fw/" + s }
func (d *device) say(format string, args ...any) {
	fmt.Printf(format+"\n", args...)
}

// connect subscribes to the offers and chunks first, then reports the state (PROTOCOL.md).
func (d *device) connect() error {
	if d.client != nil {
		d.client.Disconnect(0)
	}
	conn := d.conns.Add(1)
	opts := paho.NewClientOptions().AddBroker(d.o.broker).SetClientID(d.o.id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) {
			if d.conns.Load() != conn {
				return
			}
			select {
			case d.lost <- struct{}{}:
			default:
			}
		})
	c := paho.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("connect %s: %v", d.o.broker, t.Error())
	}
	subs := map[string]byte{d.topic("offer"): 1, d.topic("chunk/+"): 0}
	t := c.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) {
		if m.Topic() == d.topic("offer") {
			var of firmware.Offer
			if json.Unmarshal(m.Payload(), &of) == nil {
				select {
				case d.offers <- of:
				default:
				}
			}
			return
		}
		off, err := strconv.ParseInt(m.Topic()[len(d.topic("chunk/")):], 10, 64)
		if err == nil {
			select {
			case d.chunks <- chunk{off, append([]byte(nil), m.Payload()...)}:
			default: // one request at a time: a full queue holds stale replies
			}
		}
	})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		c.Disconnect(0)
		return fmt.Errorf("subscribe: %v", t.Error())
	}
	d.client = c
	st := d.stateMessage(firmware.StatusIdle, "", 0, 0)
	if d.offer != nil {
		st = d.stateMessage(firmware.StatusDownloading, "", d.offer.Counter, d.offset)
	}
	return d.publishState(st)
}

func (d *device) state(status, reason string) error {
	if d.offer != nil {
		return d.stateOf(status, reason, d.offer.Counter, d.offset)
	}
	return d.stateOf(status, reason, 0, 0)
}

// stateOf reports a state. The connection may drop between two messages (the gateway
// restarted): the device connects again and says it once more, as a real one would,
// rather than give up.
func (d *device) stateOf(status, reason string, target uint64, offset int64) error {
	st := d.stateMessage(status, reason, target, offset)
	err := d.publishState(st)
	for try := 0; err != nil && try < 30; try++ {
		d.say("state %s not sent (%v): connecting again", status, err)
		time.Sleep(time.Second)
		if err = d.connect(); err == nil {
			err = d.publishState(st)
		}
	}
	return err
}

func (d *device) stateMessage(status, reason string, target uint64, offset int64) firmware.State {
	return firmware.State{Type: d.o.typ, Version: d.run0.Version, Counter: d.run0.Counter, Status: status, Error: reason,
		Target: target, Offset: offset}
}

func (d *device) publishState(st firmware.State) error {
	b, _ := json.Marshal(st)
	t := d.client.Publish(d.topic("state"), 1, true, b)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("publish state: %v", t.Error())
	}
	return nil
}

func (d *device) run(ctx context.Context) error {
	if err := d.connect(); err != nil {
		return err
	}
	defer func() { d.client.Disconnect(250) }()
	d.say("running %s counter %d", d.run0.Version, d.run0.Counter)
	for {
		if d.offer == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-d.lost: // the gateway went away: report again to the next one
				d.say("connection lost while idle")
				if err := d.reconnect(ctx); err != nil {
					return err
				}
				continue
			case of := <-d.offers:
				if err := d.take(of); err != nil {
					d.say("refused offer: %v", err)
					// With the offer's counter as the target: the gateway does not offer it again.
					if err := d.stateOf(firmware.StatusFailed, err.Error(), of.Counter, 0); err != nil {
						return err
					}
					continue
				}
			}
		} else {
			d.say("resuming %s counter %d at offset %d", d.offer.Version, d.offer.Counter, d.offset)
		}
		err := d.update(ctx)
		var f failure
		switch {
		case errors.As(err, &f):
			d.say("failed: %s", f.reason)
			if err := d.state(firmware.StatusFailed, f.reason); err != nil {
				return err
			}
			d.discard()
			if d.o.exit {
				return f
			}
		case err != nil:
			return err
		default:
			d.say("healthy %s counter %d (received %d bytes)", d.run0.Version, d.run0.Counter, d.received)
			if d.o.exit {
				return nil
			}
		}
	}
}

// take checks an offer before downloading anything: the device's own type, a counter
// above its own, the signature over the manifest with the device's key.
func (d *device) take(of firmware.Offer) error {
	if of.Type != d.o.typ {
		return fmt.Errorf("offer for type %q", of.Type)
	}
	if of.Counter <= d.run0.Counter {
		return fmt.Errorf("offer of counter %d, not above the running %d: no downgrade", of.Counter, d.run0.Counter)
	}
	if of.ChunkSize < 1 {
		return errors.New("offer without a chunk size")
	}
	if err := checkManifest(of.Manifest, d.keys); err != nil {
		return err
	}
	d.say("offered %s counter %d (%d bytes)", of.Version, of.Counter, of.Size)
	return d.begin(of)
}

func checkManifest(m firmware.Manifest, keys []firmware.PublicKey) error {
	b, _ := json.Marshal(m)
	pm, err := firmware.ParseManifest(b)
	if err != nil {
		return err
	}
	return pm.CheckSigned(keys, time.Now())
}

// begin starts a download, or keeps the bytes held when the offer is the same image.
func (d *device) begin(of firmware.Offer) error {
	if d.offer != nil && d.offer.SHA256 == of.SHA256 {
		d.offer.ChunkSize = of.ChunkSize
		return nil
	}
	b, _ := json.Marshal(of)
	if err := os.WriteFile(d.path("download.json"), b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(d.path("download.bin"), nil, 0o644); err != nil {
		return err
	}
	d.offer, d.offset = &of, 0
	return d.state(firmware.StatusOffered, "")
}

func (d *device) discard() {
	os.Remove(d.path("download.json"))
	os.Remove(d.path("download.bin"))
	d.offer, d.offset = nil, 0
}

// update downloads the rest of the offered image, verifies, applies and confirms it.
func (d *device) update(ctx context.Context) error {
	f, err := os.OpenFile(d.path("download.bin"), os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := d.state(firmware.StatusDownloading, ""); err != nil {
		return err
	}
	lastState := d.offset
	for d.offset < d.offer.Size {
		if d.o.dropAt >= 0 && !d.dropped && d.offset >= d.o.dropAt {
			d.dropped = true
			d.say("dropping the connection at offset %d", d.offset)
			d.client.Disconnect(0)
			if err := d.reconnect(ctx); err != nil {
				return err
			}
			d.say("resumed at offset %d", d.offset)
		}
		c, err := d.fetch(ctx)
		if err != nil {
			return err
		}
		if !d.corrupt && d.o.corruptAt >= c.off && d.o.corruptAt < c.off+int64(len(c.data)) {
			d.corrupt = true
			c.data[d.o.corruptAt-c.off] ^= 0x40
		}
		if _, err := f.WriteAt(c.data, c.off); err != nil {
			return err
		}
		d.offset += int64(len(c.data))
		d.received += int64(len(c.data))
		if d.offset-lastState >= stateEvery {
			lastState = d.offset
			if err := d.state(firmware.StatusDownloading, ""); err != nil {
				return err
			}
		}
	}
	return d.verifyAndApply(ctx, f)
}

func (d *device) reconnect(ctx context.Context) error {
	for {
		err := d.connect()
		if err == nil {
			return nil
		}
		d.logger.Warn("reconnect", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// fetch asks for the next chunk and waits for it, with the retries of PROTOCOL.md.
func (d *device) fetch(ctx context.Context) (chunk, error) {
	want := min(int64(d.offer.ChunkSize), d.offer.Size-d.offset)
	for round := 0; round < restateRounds; round++ {
		for try := 0; try < getTries; try++ {
			b, _ := json.Marshal(firmware.GetRequest{Offset: d.offset, Length: want})
			d.client.Publish(d.topic("get"), 0, false, b)
			timeout := time.After(getTimeout)
		wait:
			for {
				select {
				case <-ctx.Done():
					return chunk{}, ctx.Err()
				case c := <-d.chunks:
					if c.off == d.offset && int64(len(c.data)) == want {
						return c, nil
					}
					if c.off != d.offset {
						continue // a late reply to an earlier try
					}
					break wait // the wrong length: ask again
				case <-timeout:
					break wait
				case of := <-d.offers:
					if of.SHA256 != d.offer.SHA256 {
						return chunk{}, failure{"the gateway offers another image now"}
					}
					// The same image again (the gateway restarted): go on from the offset.
				case <-d.lost:
					d.say("connection lost at offset %d", d.offset)
					if err := d.reconnect(ctx); err != nil {
						return chunk{}, err
					}
					d.say("resumed at offset %d", d.offset)
					try = -1 // a new connection: the tries start again
					break wait
				}
			}
		}
		// The gateway does not answer: say where we are, and wait for its offer again.
		if err := d.state(firmware.StatusDownloading, ""); err != nil {
			return chunk{}, err
		}
		select {
		case <-ctx.Done():
			return chunk{}, ctx.Err()
		case of := <-d.offers:
			if of.SHA256 != d.offer.SHA256 {
				return chunk{}, failure{"the gateway offers another image now"}
			}
		case <-time.After(offerWait):
		}
	}
	return chunk{}, failure{"gateway not answering"}
}

func (d *device) verifyAndApply(ctx context.Context, f *os.File) error {
	if err := d.state(firmware.StatusVerifying, ""); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	var digest [32]byte
	h.Sum(digest[:0])
	switch err := d.offer.Check(n, digest, d.keys, time.Now()); {
	case errors.Is(err, firmware.ErrDigest) || errors.Is(err, firmware.ErrSize):
		return failure{"sha256: " + err.Error()}
	case err != nil:
		return failure{"signature: " + err.Error()}
	case d.o.failVerify:
		return failure{"signature: the check failed (-fail-verify)"}
	}
	// Apply: the image goes to the spare slot, and the device boots into it.
	if err := os.Rename(d.path("download.bin"), d.path("slot.bin")); err != nil {
		return err
	}
	if err := d.state(firmware.StatusApplied, ""); err != nil {
		return err
	}
	d.say("applied %s counter %d", d.offer.Version, d.offer.Counter)
	if d.o.neverHealthy {
		window := cmp.Or(d.o.healthWindow, d.offer.Window())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(window):
		}
		os.Remove(d.path("slot.bin")) // the bootloader reverts to the old image
		return failure{fmt.Sprintf("not healthy within %s: reverted", window)}
	}
	d.run0 = running{d.offer.Version, d.offer.Counter}
	b, _ := json.Marshal(d.run0)
	if err := os.WriteFile(d.path("running.json"), b, 0o644); err != nil {
		return err
	}
	d.discard()
	return d.state(firmware.StatusHealthy, "")
}
