package sink

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"

	"github.com/moongate/moongate/internal/mosquittotest"
)

// pki is the tests' CA, with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files: the one mosquittotest makes for its brokers.
type pki struct{ *mosquittotest.PKI }

func newPKI(t testing.TB) pki { return pki{mosquittotest.NewPKI(t, t.TempDir())} }

// serverTLS is a server config that asks for client certificates of the
// test CA when requireClient is set.
func (p pki) serverTLS(t testing.TB, requireClient bool) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if requireClient {
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(p.CA)
		pool.AppendCertsFromPEM(pem)
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg
}
