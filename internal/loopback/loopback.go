// Package loopback gives tests the free 127.0.0.1 ports they start real servers and
// child gateways on: tests talk to loopback only.
package loopback

import (
	"net"
	"testing"
)

// FreePort is a TCP port on 127.0.0.1 that was free a moment ago. Another process can
// take it before the caller listens; tests start their servers on it at once.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Port is FreePort outside a test (the benchmarks).
func Port() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
