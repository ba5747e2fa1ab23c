package tlsfiles

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moongate/moongate/internal/mosquittotest"
)

// The cases every user of a TLS client config (external broker, HTTPS and MQTT sinks)
// shares: a private CA is trusted and the system roots stay, a client certificate is
// presented, and bad files are refused when the config is built.
func TestConfig(t *testing.T) {
	p := mosquittotest.NewPKI(t, t.TempDir())
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	dial := func(f Files) error {
		cfg, err := f.Config("127.0.0.1")
		if err != nil {
			return err
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(Files{CA: p.CA, Cert: p.ClientCert, Key: p.ClientKey}); err != nil {
		t.Fatalf("with the CA and a client certificate: %v", err)
	}
	if err := dial(Files{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: %v, want the server refused as unknown", err)
	}
	cfg, err := Files{CA: p.CA}.Config("")
	if err != nil {
		t.Fatal(err)
	}
	sys, err := (Files{}).Config("")
	if err != nil {
		t.Fatal(err)
	}
	// Subjects is deprecated for verifying; here it only counts what the pools hold.
	if got, want := len(cfg.RootCAs.Subjects()), len(sys.RootCAs.Subjects())+1; got != want {
		t.Errorf("%d roots with the CA, want the %d system roots and the CA", got, want-1)
	}

	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o644)
	for _, c := range []struct {
		f    Files
		want string
	}{
		{Files{CA: filepath.Join(dir, "missing.pem")}, "tls ca"},
		{Files{CA: notPEM}, "no PEM certificate"},
		{Files{Cert: p.ClientCert}, "cert and key go together"},
		{Files{Cert: p.ClientCert, Key: p.ServerKey}, "tls client certificate"},
	} {
		if _, err := c.f.Config(""); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.f, err, c.want)
		}
	}
}
