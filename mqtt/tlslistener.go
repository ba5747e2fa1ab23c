package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
)

// CheckServerTLS reads a TLS listener's files as the broker would, for moongate check.
func CheckServerTLS(certFile, keyFile, clientCA string) error {
	_, err := serverTLS(certFile, keyFile, clientCA)
	return err
}

// serverTLS is the TLS listener's configuration: the broker's certificate and, with
// clientCA, client certificates required and verified against it.
func serverTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("a TLS listener needs a certificate and its key")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		cfg.ClientCAs = x509.NewCertPool()
		if !cfg.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s: no PEM certificate in it", clientCA)
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// certificateIdentity is the common name of the verified client certificate of a TLS
// connection, under the broker's wrappers.
func certificateIdentity(c net.Conn) (string, bool) {
	for {
		switch v := c.(type) {
		case *framedConn:
			c = v.Conn
		case *tls.Conn:
			st := v.ConnectionState()
			if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
				return "", false
			}
			cn := st.PeerCertificates[0].Subject.CommonName
			return cn, cn != ""
		default:
			return "", false
		}
	}
}
