package mqtt

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// openConnection opens the connection to an external broker as paho does, with the
// reads buffered: paho reads each packet's fixed header a byte at a time straight from
// the connection, three or four read calls per message, which took a seventh of the
// gateway's CPU under a stream of deliveries. A websocket is framed already, and is left
// as paho makes it.
func openConnection(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	if uri.Scheme == "ws" || uri.Scheme == "wss" {
		u := *uri
		u.User = nil // gorilla refuses URLs with credentials; they go in CONNECT
		var tc *tls.Config
		if uri.Scheme == "wss" {
			tc = o.TLSConfig
		}
		return paho.NewWebsocket(u.String(), tc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	}
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	conn, err := proxy.FromEnvironmentUsing(d).Dial("tcp", uri.Host) // all_proxy, as paho honours it
	if err != nil {
		return nil, err
	}
	switch uri.Scheme {
	case "tcp", "mqtt":
	case "ssl", "tls", "mqtts":
		cfg := o.TLSConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = uri.Hostname()
		}
		tc := tls.Client(conn, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), o.ConnectTimeout)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	default:
		conn.Close()
		return nil, fmt.Errorf("unknown scheme %q", uri.Scheme)
	}
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, 16<<10)}, nil
}

// bufferedConn reads through a buffer; paho reads on one goroutine.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
