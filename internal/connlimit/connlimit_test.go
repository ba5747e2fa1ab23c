package connlimit

import (
	"net"
	"testing"
	"time"
)

func addr(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1} }

func TestAcquire(t *testing.T) {
	l := &Limiter{Max: 3, PerHost: 2}
	r1, ok1 := l.Acquire(addr("10.0.0.1"))
	_, ok2 := l.Acquire(addr("10.0.0.1"))
	if _, ok := l.Acquire(addr("10.0.0.1")); !ok1 || !ok2 || ok {
		t.Fatalf("per host: %v %v %v", ok1, ok2, ok)
	}
	if _, ok := l.Acquire(addr("10.0.0.2")); !ok {
		t.Fatal("another host is refused below the total cap")
	}
	if _, ok := l.Acquire(addr("10.0.0.3")); ok {
		t.Fatal("past the total cap")
	}
	r1()
	r1() // twice is once
	if _, ok := l.Acquire(addr("10.0.0.3")); !ok || l.Open() != 3 || l.Refused() != 2 {
		t.Fatalf("after a release: open %d, refused %d", l.Open(), l.Refused())
	}
}

// Past the cap, Accept closes the connection at once; the open ones are untouched.
func TestListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := &Limiter{PerHost: 1}
	wrapped := Listen(ln, lim)
	defer wrapped.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := wrapped.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	server := <-accepted
	second, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := second.Read(make([]byte, 1)); err == nil || lim.Refused() != 1 {
		t.Fatalf("the second connection: %v, refused %d", err, lim.Refused())
	}
	if _, err := first.Write([]byte("x")); err != nil {
		t.Fatalf("the first connection: %v", err)
	}
	server.Close()
	if lim.Open() != 0 {
		t.Fatalf("open after Close: %d", lim.Open())
	}
}
