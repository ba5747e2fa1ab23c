package firmware

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is the bus as the server sees it: what it published, in order.
type recorder struct {
	mu   sync.Mutex
	msgs []published
}

type published struct {
	topic   string
	payload []byte
}

func (r *recorder) Publish(_ context.Context, topic string, payload []byte, _ byte, _ bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, published{topic, payload})
	return nil
}

const testChunk = 1024

// newTestServer stores one image of type esp32-env, counter 7, in a real image store.
func newTestServer(t testing.TB, dir string) (*Server, *recorder, []byte, Manifest) {
	pub, priv, _ := Keygen()
	k, _ := ParsePublicKey(pub)
	images, err := OpenImages(dir, 1<<20, []PublicKey{k}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { images.Close() })
	image := make([]byte, 10000)
	rand.Read(image)
	m, err := Sign(image, testSigning(), priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := images.Add(m, bytes.NewReader(image), testNow); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	s := NewServer(rec, images, ServerOptions{ChunkSize: testChunk, DeviceRate: 1 << 20, TotalRate: 1 << 20,
		Now: func() time.Time { return testNow }, Logger: slog.New(slog.DiscardHandler)})
	return s, rec, image, m
}

func TestServerOffersOnlyNewer(t *testing.T) {
	s, _, _, m := newTestServer(t, t.TempDir())
	for _, c := range []struct {
		state string
		offer bool
	}{
		{`{"type":"esp32-env","version":"1","counter":6,"status":"idle"}`, true},
		{`{"type":"esp32-env","version":"1","counter":7,"status":"idle"}`, false},
		{`{"type":"esp32-env","version":"1","counter":9,"status":"healthy"}`, false},
		{`{"type":"esp32-cam","version":"1","counter":1,"status":"idle"}`, false},
		{`{"type":"esp32-env","version":"1","counter":6,"status":"failed","target":7}`, false},
	} {
		s.Handle("moongate/devices/d/fw/state", []byte(c.state))
		s.mu.Lock()
		got := s.devices["d"].offer.Counter == m.Counter
		s.mu.Unlock()
		if got != c.offer {
			t.Errorf("state %s: offered %v, want %v", c.state, got, c.offer)
		}
	}
}

func TestParseGet(t *testing.T) {
	for _, c := range []struct {
		payload string
		off, n  int64
		bad     bool
	}{
		{`{"offset":0,"length":100}`, 0, 100, false},
		{`{"offset":9900,"length":1000}`, 9900, 100, false},
		{`{"offset":0,"length":99999}`, 0, testChunk, false},
		{`{"offset":10000,"length":1}`, 0, 0, true},
		{`{"offset":-1,"length":1}`, 0, 0, true},
		{`{"offset":0,"length":0}`, 0, 0, true},
		{`not json`, 0, 0, true},
	} {
		off, n, err := ParseGet([]byte(c.payload), 10000, testChunk)
		if (err != nil) != c.bad || (!c.bad && (off != c.off || n != c.n)) {
			t.Errorf("%s: got %d %d %v", c.payload, off, n, err)
		}
	}
}

// FuzzHandleGet sends the server any get (any device, any payload) and checks that what
// it queues stays inside the offered image and within a chunk, and that serving it
// publishes exactly those bytes of the image.
func FuzzHandleGet(f *testing.F) {
	s, rec, image, m := newTestServer(f, f.TempDir())
	s.Handle("moongate/devices/d/fw/state", []byte(`{"type":"esp32-env","version":"1","counter":1,"status":"idle"}`))
	f.Add("d", []byte(`{"offset":0,"length":1024}`))
	f.Add("d", []byte(`{"offset":9999,"length":5}`))
	f.Add("d/fw/get", []byte(`{"offset":1e3,"length":-1}`))
	f.Add("other", []byte(`{"offset":0,"length":1}`))
	f.Fuzz(func(t *testing.T, device string, payload []byte) {
		s.Handle("moongate/devices/"+device+"/fw/get", payload)
		select {
		case j := <-s.chunks:
			if j.device != "d" || j.off < 0 || j.n < 1 || j.n > testChunk || j.off+j.n > m.Size {
				t.Fatalf("queued %+v for %q %q", j, device, payload)
			}
			rec.msgs = nil
			s.serve(context.Background(), j)
			if len(rec.msgs) != 1 || !strings.HasSuffix(rec.msgs[0].topic, "/fw/chunk/"+strconv.FormatInt(j.off, 10)) ||
				!bytes.Equal(rec.msgs[0].payload, image[j.off:j.off+j.n]) {
				t.Fatalf("served %+v wrongly", j)
			}
		default:
		}
	})
}

// A device that asks faster than firmware.device_rate has its next chunk held back, put on
// the queue again later, without holding a worker.
func TestDeviceRateHoldsAChunkBack(t *testing.T) {
	s, _, _, _ := newTestServer(t, t.TempDir())
	s.opts.DeviceRate = testChunk // one chunk a second
	s.Handle("moongate/devices/d/fw/state", []byte(`{"type":"esp32-env","version":"1","counter":1,"status":"idle"}`))
	ctx, cancel := context.WithCancel(context.Background())
	j := chunkJob{device: "d", typ: "esp32-env", counter: 7, off: 0, n: testChunk}
	if !s.admit(ctx, j) {
		t.Fatal("the first chunk was held back")
	}
	if s.admit(ctx, j) {
		t.Fatal("a second chunk at once passed a rate of one chunk a second")
	}
	cancel()
	s.delayed.Wait()
}

// A device that applies an image and reports nothing more within the manifest's window
// fails the attempt; one that reports healthy on the new counter in time does not. The
// failure is kept across a new server (a gateway restart).
func TestHealthWindowFailsTheAttempt(t *testing.T) {
	dir := t.TempDir()
	s, _, _, m := newTestServer(t, dir)
	now := testNow
	s.opts.Now = func() time.Time { return now }
	failed, err := OpenFailedDevices(filepath.Join(dir, "failed-devices.json"))
	if err != nil {
		t.Fatal(err)
	}
	s.opts.Failed = failed
	for _, d := range []string{"sick", "ok"} {
		s.Handle("moongate/devices/"+d+"/fw/state", []byte(`{"type":"esp32-env","version":"1","counter":6,"status":"idle"}`))
		s.Handle("moongate/devices/"+d+"/fw/state", []byte(`{"type":"esp32-env","version":"1","counter":6,"status":"applied","target":7}`))
	}
	s.Handle("moongate/devices/ok/fw/state", []byte(`{"type":"esp32-env","version":"1.2.0","counter":7,"status":"healthy"}`))
	// Back on its old image, sick is not offered the image it applied again.
	clear(s.offers) // as if sendOffers had sent them
	s.Handle("moongate/devices/sick/fw/state", []byte(`{"type":"esp32-env","version":"1","counter":6,"status":"idle"}`))
	if s.offers["sick"] {
		t.Fatal("a device back on its old image within the window was offered the image again")
	}
	now = now.Add(m.Window() - time.Second)
	if next := s.expireHealth(); !next.Equal(testNow.Add(m.Window())) || s.NotHealthy() != 0 {
		t.Fatalf("before the window: next deadline %s, %d failed; want %s, 0", next, s.NotHealthy(), testNow.Add(m.Window()))
	}
	now = now.Add(time.Second)
	if next := s.expireHealth(); !next.IsZero() || s.NotHealthy() != 1 {
		t.Fatalf("at the window: next deadline %s, %d failed; want none, 1", next, s.NotHealthy())
	}
	for _, d := range s.Devices() {
		if want := map[string]uint64{"sick": 7, "ok": 0}[d.Device]; d.Failed != want {
			t.Errorf("%s: failed %d, want %d", d.Device, d.Failed, want)
		}
	}
	again, err := OpenFailedDevices(filepath.Join(dir, "failed-devices.json"))
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := again.Get("sick"); !ok || f.Counter != 7 || !strings.Contains(f.Reason, "not healthy") {
		t.Fatalf("after a reopen: %+v %v, want counter 7 not healthy", f, ok)
	}
	s2 := NewServer(&recorder{}, s.images, ServerOptions{ChunkSize: testChunk, DeviceRate: 1 << 20, TotalRate: 1 << 20,
		Now: s.opts.Now, Logger: slog.New(slog.DiscardHandler), Failed: again})
	s2.Handle("moongate/devices/sick/fw/state", []byte(`{"type":"esp32-env","version":"1","counter":6,"status":"idle"}`))
	if o := s2.devices["sick"].offer.Counter; o != 0 {
		t.Errorf("after a restart the device was offered counter %d, the one it failed with", o)
	}
}
