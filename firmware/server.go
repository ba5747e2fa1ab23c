package firmware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/moongate/moongate/internal/logkey"
)

// Publisher sends a message on the bus (mqtt.Bus has this method).
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error
}

// ImageSource is what the server reads the images from (Images is one).
type ImageSource interface {
	Newest(typ string, above uint64, now time.Time) (Manifest, bool)
	Get(typ string, counter uint64, now time.Time) (Manifest, bool)
	ReadAt(typ string, counter uint64, p []byte, off int64) (int, error)
	List() []Manifest
}

// The topics of PROTOCOL.md.
const (
	topicPrefix = "moongate/devices/"
	StateFilter = topicPrefix + "+/fw/state"
	GetFilter   = topicPrefix + "+/fw/get"
)

// The device states of PROTOCOL.md.
const (
	StatusIdle        = "idle"
	StatusOffered     = "offered"
	StatusDownloading = "downloading"
	StatusVerifying   = "verifying"
	StatusApplied     = "applied"
	StatusHealthy     = "healthy"
	StatusFailed      = "failed"
)

// State is a device's state message.
type State struct {
	Type    string `json:"type"`
	Version string `json:"version"`
	Counter uint64 `json:"counter"`
	Status  string `json:"status"`
	Target  uint64 `json:"target,omitempty"`
	Offset  int64  `json:"offset,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Offer is the offer message: the manifest and the chunk size.
type Offer struct {
	Manifest
	ChunkSize int `json:"chunk_size"`
}

// GetRequest is a device's get message.
type GetRequest struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// maxDevices bounds the devices the server keeps a session for: each costs a few hundred
// bytes, and a device id is a topic level anyone allowed to publish can make up.
const maxDevices = 10000

// chunkWorkers read and publish chunks; with the total rate they bound the chunk buffers
// in the gateway at once, whatever the number of devices.
const chunkWorkers = 4

// ServerOptions configure a Server.
type ServerOptions struct {
	ChunkSize  int // the most bytes a get is answered with
	DeviceRate int // bytes a second to one device
	TotalRate  int // bytes a second to all
	Now        func() time.Time
	Logger     *slog.Logger
	// Failed keep the image each device failed with across restarts; nil: in memory only.
	Failed *FailedDevices
	// Rollouts keep the rollouts across restarts; nil: in memory only.
	Rollouts *RolloutBook
	// RolloutsOnly offers images only through rollouts; else a published image is offered
	// at once to the devices of a type that has had no rollout.
	RolloutsOnly bool
	// OnState, when set, is told each state a device reports and the id of the rollout
	// that governs it ("" for none), under the server's lock: it must not block.
	OnState func(device string, st State, rollout string)
}

// Server is the gateway side of PROTOCOL.md: it reads the devices' state and get
// messages (Handle), offers them newer images and serves the chunks (Run).
type Server struct {
	pub    Publisher
	images ImageSource
	opts   ServerOptions
	total  *rate.Limiter
	book   *RolloutBook // guarded by mu

	mu       sync.Mutex
	devices  map[string]*session
	offers   map[string]bool // devices whose offer is to be (re)sent
	offerSig chan struct{}   // cap 1: offers has entries
	chunks   chan chunkJob   // at most one per device (session.pending), so never full
	delayed  sync.WaitGroup  // the timers that put back chunks held for their device's rate

	healthSig  chan struct{} // cap 1: a device applied an image, its health deadline is new
	notHealthy atomic.Uint64 // attempts past their health window without healthy
}

type session struct {
	state   State
	offer   Manifest // zero: none
	failed  uint64   // the counter this device failed with: never offered to it again
	reason  string   // why it failed
	pending bool     // a get of this device is queued or being served
	limit   *rate.Limiter
	// After applied: the counter that must report healthy, by when (zero: none awaited).
	awaiting uint64
	healthBy time.Time
	window   time.Duration
}

type chunkJob struct {
	device  string
	typ     string
	counter uint64
	off, n  int64
}

// NewServer makes a server that publishes with pub and reads images from images.
func NewServer(pub Publisher, images ImageSource, opts ServerOptions) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	book := opts.Rollouts
	if book == nil {
		book, _ = OpenRolloutBook("") // in memory: nothing to read
	}
	return &Server{pub: pub, images: images, opts: opts, book: book,
		total:   rate.NewLimiter(rate.Limit(opts.TotalRate), max(opts.TotalRate, opts.ChunkSize)),
		devices: map[string]*session{}, offers: map[string]bool{}, offerSig: make(chan struct{}, 1),
		chunks: make(chan chunkJob, maxDevices), healthSig: make(chan struct{}, 1)}
}

// Filters are the topic filters the server needs subscribed.
func (s *Server) Filters() []string { return []string{StateFilter, GetFilter} }

// Handle takes a message on one of Filters and reports whether it was one. It never
// blocks: the work is queued for Run.
func (s *Server) Handle(topic string, payload []byte) bool {
	device, kind, ok := parseTopic(topic)
	if !ok {
		return false
	}
	switch kind {
	case "state":
		s.handleState(device, payload)
	case "get":
		s.handleGet(device, payload)
	}
	return true
}

func parseTopic(topic string) (device, kind string, ok bool) {
	rest, ok := strings.CutPrefix(topic, topicPrefix)
	if !ok {
		return "", "", false
	}
	device, kind, ok = strings.Cut(rest, "/fw/")
	if !ok || device == "" || strings.Contains(device, "/") || (kind != "state" && kind != "get") {
		return "", "", false
	}
	return device, kind, true
}

func (s *Server) handleState(device string, payload []byte) {
	var st State
	if len(payload) == 0 {
		return // a retained state cleared
	}
	if err := json.Unmarshal(payload, &st); err != nil || !validType(st.Type) {
		s.opts.Logger.Debug("firmware: ignoring a state that is not one", "device", device)
		return
	}
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ses := s.devices[device]
	if ses == nil {
		if len(s.devices) >= maxDevices {
			s.opts.Logger.Warn("firmware: too many devices, ignoring a new one", "device", device, "max", maxDevices)
			return
		}
		ses = &session{limit: rate.NewLimiter(rate.Limit(s.opts.DeviceRate), max(s.opts.DeviceRate, s.opts.ChunkSize))}
		s.devices[device] = ses
	}
	if ses.state.Type != st.Type {
		*ses = session{limit: ses.limit, pending: ses.pending}
		if f, ok := s.opts.Failed.Get(device); ok && f.Type == st.Type {
			ses.failed, ses.reason = f.Counter, f.Reason
		}
	}
	ses.state = st
	s.observe(device, st, now)
	if s.opts.OnState != nil {
		id := ""
		if r := s.book.governing(st.Type); r != nil && r.Devices[device] != nil {
			id = r.ID
		}
		s.opts.OnState(device, st, id)
	}
	var next Manifest
	switch st.Status {
	case StatusFailed:
		s.opts.Logger.Warn("firmware: a device failed to update", "device", device, "type", st.Type,
			"counter", st.Counter, "target", st.Target, "error", st.Error)
		if st.Target != 0 {
			s.fail(device, ses, st.Target, st.Error)
		}
		ses.offer = Manifest{}
		next = s.offerFor(device, st, now, ses.failed)
	case StatusIdle, StatusHealthy:
		if ses.offer.Counter != 0 && st.Counter == ses.offer.Counter {
			s.opts.Logger.Info("firmware: device updated", "device", device, "type", st.Type, logkey.Version, st.Version, "counter", st.Counter)
		}
		if st.Counter < ses.awaiting {
			// Back on its old image before the window ends: not confirmed, and not offered
			// the same image again; the window or its failed state decides.
			return
		}
		ses.awaiting, ses.healthBy = 0, time.Time{}
		ses.offer = Manifest{}
		next = s.offerFor(device, st, now, ses.failed)
	case StatusApplied:
		s.awaitHealthy(device, ses, st, now)
		return
	case StatusOffered, StatusDownloading, StatusVerifying:
		if ses.offer.Counter != 0 && ses.offer.Counter == st.Target {
			return // in progress with this gateway's offer
		}
		if m, ok := s.images.Get(st.Type, st.Target, now); ok && st.Target > st.Counter {
			next = m // resume: the same image again, the device keeps its offset
		} else {
			next = s.offerFor(device, st, now, ses.failed)
		}
	default: // a state of a newer protocol: nothing to offer now
		return
	}
	if next.Counter == 0 {
		ses.offer = Manifest{}
		if m, ok := s.images.Newest(st.Type, 0, now); ok && m.Counter <= st.Counter {
			s.opts.Logger.Info("firmware: not offering an image that is not newer than the device runs (no downgrade)",
				"device", device, "type", st.Type, "device_counter", st.Counter, "newest_counter", m.Counter)
		} else if ok && m.Counter == ses.failed {
			s.opts.Logger.Info("firmware: not offering the image this device failed with",
				"device", device, "type", st.Type, "counter", m.Counter, "error", ses.reason)
		}
		return
	}
	ses.offer = next
	s.offers[device] = true
	select {
	case s.offerSig <- struct{}{}:
	default:
	}
}

// awaitHealthy starts the health window of a device that applied an image: healthy must
// come within the manifest's window, or watchHealth counts the attempt as failed. A
// repeated applied (the retained state again) keeps the deadline; after a gateway restart
// the window starts again from the retained applied.
func (s *Server) awaitHealthy(device string, ses *session, st State, now time.Time) {
	if st.Target <= st.Counter || st.Target == ses.awaiting || st.Target == ses.failed {
		return
	}
	window := DefaultHealthWindow
	if ses.offer.Counter == st.Target {
		window = ses.offer.Window()
	} else if m, ok := s.images.Get(st.Type, st.Target, now); ok {
		window = m.Window()
	}
	ses.awaiting, ses.healthBy, ses.window = st.Target, now.Add(window), window
	s.opts.Logger.Info("firmware: device applied an image, awaiting healthy", "device", device, "type", st.Type,
		"counter", st.Target, "window", window)
	s.wakeHealth()
}

// fail records that device failed with counter: it is not offered that image again, also
// after a restart when opts.Failed keeps it.
func (s *Server) fail(device string, ses *session, counter uint64, reason string) {
	ses.failed, ses.reason = counter, reason
	ses.awaiting, ses.healthBy = 0, time.Time{}
	if err := s.opts.Failed.Put(device, Failure{Type: ses.state.Type, Counter: counter, Reason: reason}); err != nil {
		s.opts.Logger.Warn("firmware: the failure is not kept across a restart", "device", device, logkey.Err, err)
	}
	s.rolloutFailed(device, ses.state.Type, counter, reason, s.opts.Now())
}

// watchHealth counts the attempts whose health window passed without healthy as failed,
// until ctx ends.
func (s *Server) watchHealth(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		wait := time.Hour // nothing awaited: sleep until a device applies an image
		if next := s.expireHealth(); !next.IsZero() {
			wait = max(next.Sub(s.opts.Now()), 0)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.healthSig:
		}
	}
}

// expireHealth fails the devices past their health deadline or their rollout's device
// timeout and returns the earliest deadline still ahead (zero: none).
func (s *Server) expireHealth() time.Time {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.expireRollouts(now)
	for d, ses := range s.devices {
		switch {
		case ses.healthBy.IsZero():
		case now.Before(ses.healthBy):
			if next.IsZero() || ses.healthBy.Before(next) {
				next = ses.healthBy
			}
		default:
			reason := fmt.Sprintf("not healthy within %s of applied", ses.window)
			s.opts.Logger.Warn("firmware: a device did not report healthy within the health window: the attempt failed",
				"device", d, "type", ses.state.Type, "counter", ses.awaiting, "window", ses.window)
			s.notHealthy.Add(1)
			ses.offer = Manifest{}
			s.fail(d, ses, ses.awaiting, reason)
		}
	}
	return next
}

// NotHealthy counts the attempts that passed their health window without healthy.
func (s *Server) NotHealthy() uint64 { return s.notHealthy.Load() }

// newest is the image to offer a device in st when no rollout governs its type: newer
// than what it runs (never a downgrade), and not the one it failed with.
func (s *Server) newest(st State, now time.Time, failed uint64) Manifest {
	m, ok := s.images.Newest(st.Type, st.Counter, now)
	if !ok || m.Counter == failed {
		return Manifest{}
	}
	return m
}

// ParseGet reads a get request for an image of size bytes and returns the range to
// answer with, at most chunkSize bytes.
func ParseGet(payload []byte, size int64, chunkSize int) (off, n int64, err error) {
	var g GetRequest
	if err := json.Unmarshal(payload, &g); err != nil {
		return 0, 0, fmt.Errorf("firmware: get: %w", err)
	}
	if g.Offset < 0 || g.Offset >= size {
		return 0, 0, fmt.Errorf("firmware: get: offset %d is outside the image of %d bytes", g.Offset, size)
	}
	if g.Length < 1 {
		return 0, 0, errors.New("firmware: get: length must be at least 1")
	}
	return g.Offset, min(g.Length, int64(chunkSize), size-g.Offset), nil
}

func (s *Server) handleGet(device string, payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ses := s.devices[device]
	if ses == nil || ses.offer.Counter == 0 || ses.pending {
		return // no offer to this device, or its previous get is still being answered
	}
	off, n, err := ParseGet(payload, ses.offer.Size, s.opts.ChunkSize)
	if err != nil {
		s.opts.Logger.Debug("firmware: ignoring a get", "device", device, logkey.Err, err)
		return
	}
	ses.pending = true
	s.chunks <- chunkJob{device: device, typ: ses.offer.Type, counter: ses.offer.Counter, off: off, n: n}
}

// Run sends the offers and serves the chunks until ctx ends.
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.watchHealth(ctx)
	}()
	for range chunkWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveChunks(ctx)
		}()
	}
	s.sendOffers(ctx)
	wg.Wait()
	s.delayed.Wait() // each fires within a second (a chunk at the device's rate) and then does nothing
}

func (s *Server) sendOffers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.offerSig:
		}
		s.mu.Lock()
		batch := map[string]Offer{}
		for d := range s.offers {
			if ses := s.devices[d]; ses != nil && ses.offer.Counter != 0 {
				batch[d] = Offer{Manifest: ses.offer, ChunkSize: s.opts.ChunkSize}
			}
		}
		clear(s.offers)
		s.mu.Unlock()
		for d, o := range batch {
			b, _ := json.Marshal(o)
			if err := s.pub.Publish(ctx, topicPrefix+d+"/fw/offer", b, 1, false); err != nil {
				s.opts.Logger.Warn("firmware: offer not sent", "device", d, logkey.Err, err)
				continue
			}
			s.opts.Logger.Info("firmware: offered", "device", d, "type", o.Type, logkey.Version, o.Version, "counter", o.Counter)
		}
	}
}

func (s *Server) serveChunks(ctx context.Context) {
	for {
		var j chunkJob
		select {
		case <-ctx.Done():
			return
		case j = <-s.chunks:
		}
		if !s.admit(ctx, j) {
			continue
		}
		if err := s.total.WaitN(ctx, int(j.n)); err != nil {
			return
		}
		s.serve(ctx, j)
	}
}

// admit holds back a chunk past its device's rate: the job goes back on the queue after
// the delay instead of holding a worker, so a slow device does not slow the others.
func (s *Server) admit(ctx context.Context, j chunkJob) bool {
	s.mu.Lock()
	ses := s.devices[j.device]
	s.mu.Unlock()
	if ses == nil {
		return false
	}
	r := ses.limit.ReserveN(time.Now(), int(j.n))
	if d := r.Delay(); d > 0 {
		r.Cancel()
		s.delayed.Add(1)
		time.AfterFunc(d, func() {
			defer s.delayed.Done()
			if ctx.Err() == nil {
				s.chunks <- j // the device's pending slot is still held: there is room
			}
		})
		return false
	}
	return true
}

func (s *Server) serve(ctx context.Context, j chunkJob) {
	defer func() {
		s.mu.Lock()
		if ses := s.devices[j.device]; ses != nil {
			ses.pending = false
		}
		s.mu.Unlock()
	}()
	// A new buffer per chunk: the embedded broker writes the payload to the device after
	// Publish returns.
	buf := make([]byte, j.n)
	if _, err := s.images.ReadAt(j.typ, j.counter, buf, j.off); err != nil {
		s.opts.Logger.Error("firmware: read a chunk", "type", j.typ, "counter", j.counter, "offset", j.off, logkey.Err, err)
		return
	}
	if err := s.pub.Publish(ctx, topicPrefix+j.device+"/fw/chunk/"+strconv.FormatInt(j.off, 10), buf, 0, false); err != nil {
		s.opts.Logger.Warn("firmware: chunk not sent", "device", j.device, logkey.Err, err)
	}
}

// DeviceStatus is what the server knows of one device: its last state and what it was
// offered (0: nothing).
type DeviceStatus struct {
	Device string `json:"device"`
	State
	Offered uint64 `json:"offered"`
	// Failed is the counter the device failed with (not offered to it again), and why.
	Failed       uint64 `json:"failed,omitempty"`
	FailedReason string `json:"failed_reason,omitempty"`
	// HealthyBy is when the image the device applied must have reported healthy.
	HealthyBy *time.Time `json:"healthy_by,omitempty"`
}

// Devices are the devices that reported a state since the server started, by id.
func (s *Server) Devices() []DeviceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeviceStatus, 0, len(s.devices))
	for d, ses := range s.devices {
		ds := DeviceStatus{Device: d, State: ses.state, Offered: ses.offer.Counter, Failed: ses.failed, FailedReason: ses.reason}
		if !ses.healthBy.IsZero() {
			by := ses.healthBy
			ds.HealthyBy = &by
		}
		out = append(out, ds)
	}
	slices.SortFunc(out, func(a, b DeviceStatus) int { return strings.Compare(a.Device, b.Device) })
	return out
}

// Published offers a newly published image to the known devices that are waiting for
// one (idle, healthy, failed with an older one), unless a rollout governs their type.
func (s *Server) Published(m Manifest) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offerAll(m.Type, now, s.deviceIDs())
}
