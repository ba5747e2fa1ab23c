package mqtt

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// deadlineConn records the deadlines passed on to it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetDeadline(t time.Time) error { c.set = append(c.set, t); return nil }

func TestFramedConnCoalescesDeadlines(t *testing.T) {
	rec := &deadlineConn{}
	c := newFramedConn(rec, 0)
	start := time.Now()
	for i := range 1000 { // mochi's refresh before each packet, 10 ms of packets apart
		c.SetDeadline(start.Add(time.Duration(i)*10*time.Millisecond + 90*time.Second))
	}
	// 10 s of refreshes on a 90 s span: passed on when it moved 11 s, so once.
	if len(rec.set) != 1 {
		t.Fatalf("%d deadlines passed on, want 1", len(rec.set))
	}
	early := start.Add(time.Second)
	c.SetDeadline(early)
	if got := rec.set[len(rec.set)-1]; !got.Equal(early) {
		t.Fatalf("an earlier deadline was not passed on: %v", got)
	}
	c.SetDeadline(time.Time{})
	if got := rec.set[len(rec.set)-1]; !got.IsZero() {
		t.Fatalf("no deadline was not passed on: %v", got)
	}
	later := start.Add(time.Hour)
	c.SetDeadline(later)
	if got := rec.set[len(rec.set)-1]; !got.Equal(later) {
		t.Fatalf("a deadline after none was not passed on: %v", got)
	}
}

// TestEmbeddedKeepalive checks the keepalive over TCP with the deadlines coalesced: a
// device that pings within its keepalive stays connected, and one that goes silent is cut
// about 1.5 keepalives after its last packet.
func TestEmbeddedKeepalive(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{}, nil, newRecorder())
	conn := rawConnect(t, e.Addr(), packets.ConnectParams{Clean: true, Keepalive: 2, ClientIdentifier: "pinger"})
	defer conn.Close()
	resp := make([]byte, 2)
	for range 3 { // pings one keepalive apart
		time.Sleep(2 * time.Second)
		if _, err := conn.Write([]byte{0xc0, 0}); err != nil { // PINGREQ
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(conn, resp); err != nil || resp[0] != 0xd0 {
			t.Fatalf("pinging within the keepalive: %x, %v", resp, err)
		}
	}
	silent := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(resp); err == nil {
		t.Fatal("a packet instead of the end of the connection")
	}
	// mochi's deadline is 3 s (keepalive + keepalive/2); the slack takes up to an
	// eighth of it.
	if d := time.Since(silent); d < 2500*time.Millisecond || d > 4*time.Second {
		t.Fatalf("cut %v after the last packet, want about 3 s", d)
	}
}
