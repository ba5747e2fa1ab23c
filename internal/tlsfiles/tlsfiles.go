// Package tlsfiles builds a TLS client's config from PEM files, the one way for every
// connection the gateway makes: to an external broker, to an HTTPS sink, to a cloud MQTT
// broker. A CA file is trusted besides the system roots (a private CA does not cut the
// gateway off from public endpoints); a client certificate needs its key. The files are
// read once, when the config is built, so a missing file is a config error, not a retry.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files names the PEM files; empty fields are unused.
type Files struct {
	CA   string // a bundle trusted besides the system roots
	Cert string // client certificate; needs Key
	Key  string // private key of Cert
}

// Empty reports whether no file is named.
func (f Files) Empty() bool { return f == Files{} }

// Config reads the files and returns a client config for serverName (empty: the host
// the connection dials).
func (f Files) Config(serverName string) (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: no PEM certificate in it", f.CA)
		}
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tls: cert and key go together")
	}
	cfg := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
