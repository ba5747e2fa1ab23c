package sink

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moongate/moongate/internal/tlsfiles"
	"github.com/moongate/moongate/sync/store"
)

// HTTP responses are read whole to keep the connection in step; only this
// much is kept, for commands and error messages.
const maxResponseBody = 1 << 20

// maxRetryAfter bounds a Retry-After, so a wrong header cannot park a sink
// for days.
const maxRetryAfter = 15 * time.Minute

// gzip states of an HTTP sink.
const (
	gzipOff         int32 = iota // never
	gzipOn                       // always
	gzipAuto                     // auto, not yet offered by the receiver
	gzipAutoOn                   // auto, the receiver said Accept-Encoding: gzip
	gzipAutoRefused              // auto, the receiver refused a gzipped body with 415
)

// httpTransport posts batches as SPEC §7 requests. It writes HTTP/1.1 itself
// (with net/http's Request.Write and ReadResponse) because net/http's client
// never pipelines, and pipelining on one connection is what keeps several
// batches of a stream in flight and still in order. Proxies are not used.
type httpTransport struct {
	cfg    *HTTPConfig
	url    *url.URL
	addr   string
	tls    *tls.Config // nil for plain http
	header http.Header
	secret []byte
	gzip   atomic.Int32
	dialer net.Dialer
	auth   authorizer // nil: none
	// lambda is set when the receiver is a Lambda function, which reports a
	// handler's error in a 200 response.
	lambda bool
	// binary sets the ce-* headers of CloudEvents binary mode; nil otherwise.
	binary func(h http.Header, r store.Record)
	now    func() time.Time // Config.Clock's, for Retry-After dates
}

func newHTTPTransport(cfg *HTTPConfig, gateway string, now func() time.Time) (*httpTransport, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	t := &httpTransport{cfg: cfg, url: u, header: make(http.Header), secret: []byte(cfg.HMACSecret), now: now}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	t.addr = net.JoinHostPort(u.Hostname(), port)
	if u.Scheme == "https" {
		t.tls, err = tlsfiles.Files{CA: cfg.CAFile, Cert: cfg.CertFile, Key: cfg.KeyFile}.Config(u.Hostname())
		if err != nil {
			return nil, err
		}
		t.tls.NextProtos = []string{"http/1.1"}
	}
	for k, v := range cfg.Headers {
		t.header.Set(k, v)
	}
	t.header.Set("User-Agent", "moongate")
	t.header.Set("Content-Type", ctJSON)
	if cfg.Format == FormatCloudEvents {
		switch cfg.CloudEvents.Mode {
		case CEBatched:
			t.header.Set("Content-Type", ctCEBatch)
		case CEStructured:
			t.header.Set("Content-Type", ctCEStructured)
		case CEBinary:
			t.binary = func(h http.Header, r store.Record) {
				newCEEncoder(gateway, r.Stream, &cfg.CloudEvents).ceHeaders(h, r)
			}
		}
	}
	switch cfg.Gzip {
	case "on":
		t.gzip.Store(gzipOn)
	case "off":
		t.gzip.Store(gzipOff)
	default:
		t.gzip.Store(gzipAuto)
	}
	t.dialer = net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
	t.auth, err = newAuthorizer(cfg.Auth, cfg.Timeout, t.tls)
	if err != nil {
		return nil, err
	}
	t.lambda = cfg.Auth.AWSSigV4 != nil && cfg.Auth.AWSSigV4.Service == "lambda"
	return t, nil
}

func (t *httpTransport) keyed() bool         { return true }
func (t *httpTransport) run(context.Context) {}

func (t *httpTransport) open(ctx context.Context, _ string) (pipe, error) {
	dctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	conn, err := t.dialer.DialContext(dctx, "tcp", t.addr)
	if err != nil {
		return nil, err // "dial tcp ADDR: ..." already
	}
	if t.tls != nil {
		tc := tls.Client(conn, t.tls)
		if err := tc.HandshakeContext(dctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("tls %s: %w", t.addr, err)
		}
		conn = tc
	}
	p := &httpPipe{
		t:          t,
		conn:       conn,
		bw:         bufio.NewWriterSize(conn, 64<<10),
		budget:     &budgetReader{r: conn, left: math.MaxInt64}, // bounded while headers are read
		readerDone: make(chan struct{}),
	}
	p.br = bufio.NewReaderSize(p.budget, 16<<10)
	p.stop = context.AfterFunc(ctx, func() { p.fail(ctx.Err()) })
	go p.readLoop()
	return p, nil
}

// request builds the request for b: the body as it goes on the wire
// (gzipped or not), its signature over exactly those bytes, and its
// credentials.
func (t *httpTransport) request(ctx context.Context, b *batch) (*inflight, error) {
	body, gz := b.body, false
	switch t.gzip.Load() {
	case gzipOn, gzipAutoOn:
		body, gz = gzipBody(b.body), true
	}
	h := t.header.Clone()
	h.Set("Idempotency-Key", b.key())
	if t.binary != nil {
		t.binary(h, b.recs[0])
	}
	if gz {
		h.Set("Content-Encoding", "gzip")
	}
	if len(t.secret) > 0 {
		mac := hmac.New(sha256.New, t.secret)
		mac.Write(body)
		h.Set("X-Moongate-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
	req := &http.Request{
		Method:        http.MethodPost,
		URL:           t.url,
		Host:          t.url.Host,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
	}
	f := &inflight{b: b, req: req, gz: gz}
	if t.auth != nil {
		g, err := t.auth.authorize(ctx, req, body)
		if err != nil {
			return f, err
		}
		f.grant = g
	}
	return f, nil
}

var gzipWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed) // a valid level never fails
	return w
}}

func gzipBody(b []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(b)/4 + 64)
	w := gzipWriters.Get().(*gzip.Writer)
	w.Reset(&buf)
	w.Write(b) // writes to a bytes.Buffer do not fail
	w.Close()
	gzipWriters.Put(w)
	return buf.Bytes()
}

// classify maps the response to f to what the lane does next.
func (t *httpTransport) classify(resp *http.Response, body []byte, f *inflight) result {
	if strings.Contains(strings.ToLower(resp.Header.Get("Accept-Encoding")), "gzip") {
		t.gzip.CompareAndSwap(gzipAuto, gzipAutoOn)
	}
	code, gz := resp.StatusCode, f.gz
	switch {
	case code >= 200 && code < 300 && t.functionError(resp, body):
		// The function failed: nothing was delivered, and the same
		// records will likely work once the function is fixed.
		return result{outcome: retry, err: fmt.Errorf("function error: %w", statusError(resp, body))}
	case (code == http.StatusUnauthorized || code == http.StatusForbidden) && t.auth != nil && t.auth.refused(f.grant, code):
		return result{outcome: resend, err: statusError(resp, body)}
	case code >= 200 && code < 300:
		cmds, err := parseCommands(body)
		if err != nil {
			err = fmt.Errorf("response commands: %w", err)
		}
		return result{outcome: delivered, commands: cmds, err: err}
	case code == http.StatusUnsupportedMediaType && gz && t.refuseGzip():
		return result{outcome: resend, err: statusError(resp, body)}
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500,
		code < 200, code < 400, // 1xx and 3xx: nothing to do with the records
		code == http.StatusUnauthorized, code == http.StatusForbidden, code == http.StatusNotFound,
		code == http.StatusMethodNotAllowed, code == http.StatusProxyAuthRequired,
		code == http.StatusUnsupportedMediaType && gz:
		return result{outcome: retry, err: statusError(resp, body), retryAfter: retryAfter(resp.Header.Get("Retry-After"), t.now())}
	default:
		return result{outcome: rejected, err: statusError(resp, body)}
	}
}

// functionError reports a Lambda handler's error in a 2xx response: an
// X-Amz-Function-Error header, or, from a Lambda function, the runtime's
// {"errorMessage": .., "errorType": ..} body.
func (t *httpTransport) functionError(resp *http.Response, body []byte) bool {
	if resp.Header.Get("X-Amz-Function-Error") != "" {
		return true
	}
	if !t.lambda || !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
		return false
	}
	var v struct {
		ErrorMessage *string `json:"errorMessage"`
		ErrorType    *string `json:"errorType"`
	}
	return json.Unmarshal(body, &v) == nil && v.ErrorMessage != nil && v.ErrorType != nil
}

// refuseGzip turns "auto" compression off for good after a 415 to a gzipped
// body; it reports false in "on" mode, where the 415 stays an error to see.
func (t *httpTransport) refuseGzip() bool {
	for {
		switch s := t.gzip.Load(); s {
		case gzipAutoRefused:
			return true
		case gzipAutoOn:
			if t.gzip.CompareAndSwap(s, gzipAutoRefused) {
				return true
			}
		default:
			return false
		}
	}
}

func statusError(resp *http.Response, body []byte) error {
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		return fmt.Errorf("http %s", resp.Status)
	}
	return fmt.Errorf("http %s: %s", resp.Status, msg)
}

// retryAfter parses a Retry-After value, delay-seconds or an HTTP date
// (RFC 9110 §10.2.3). Anything else, or a time in the past, is 0.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		d = maxRetryAfter
		if err == nil && n < uint64(maxRetryAfter/time.Second) {
			d = time.Duration(n) * time.Second
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// httpPipe is one HTTP/1.1 connection with pipelined requests: the lane
// writes requests, a reader goroutine reads the responses in order.
type httpPipe struct {
	t    *httpTransport
	conn net.Conn
	bw   *bufio.Writer
	br   *bufio.Reader
	// budget bounds what the reader may take from the connection for one response's
	// status line and headers (http.ReadResponse has no limit of its own).
	budget *budgetReader
	stop   func() bool

	mu       sync.Mutex
	queue    []*inflight // written, not yet answered, in order
	answered int         // responses read on this connection
	dead     error

	readerDone chan struct{}
}

type inflight struct {
	b   *batch
	req *http.Request
	gz  bool
	// grant is the credentials it was sent with.
	grant grant
	// idle is true when the request went out on a connection that had
	// answered before and was idle since: if it then fails before any byte
	// of a response, the server probably closed the idle connection as the
	// request left, and the request is resent at once.
	idle bool
}

func (p *httpPipe) window() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	// One request until the server has shown it keeps the connection open;
	// a server that closes after every response then gets one at a time.
	if p.answered == 0 {
		return 1
	}
	return math.MaxInt
}

func (p *httpPipe) alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dead == nil
}

func (p *httpPipe) send(ctx context.Context, b *batch) {
	f, authErr := p.t.request(ctx, b)
	req := f.req
	p.mu.Lock()
	if p.dead != nil {
		err := p.dead
		p.mu.Unlock()
		b.done <- result{outcome: resend, err: err}
		return
	}
	f.idle = len(p.queue) == 0 && p.answered > 0
	p.queue = append(p.queue, f)
	if authErr != nil {
		// Unsent, b fails, and with it the pipe, so that no later batch
		// overtakes it.
		p.mu.Unlock()
		p.fail(authErr)
		return
	}
	if len(p.queue) == 1 {
		p.conn.SetReadDeadline(time.Now().Add(p.t.cfg.Timeout))
	}
	p.mu.Unlock()

	p.conn.SetWriteDeadline(time.Now().Add(p.t.cfg.Timeout))
	err := req.Write(p.bw)
	if err == nil {
		err = p.bw.Flush()
	}
	if err != nil {
		p.fail(fmt.Errorf("write: %w", err))
	}
}

func (p *httpPipe) readLoop() {
	defer close(p.readerDone)
	for {
		// Peek with no deadline while idle notices a server closing the
		// connection, so the next batch opens a new one instead.
		if _, err := p.br.Peek(1); err != nil {
			p.fail(err)
			return
		}
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.mu.Unlock()
			p.fail(errors.New("response without a request"))
			return
		}
		f := p.queue[0]
		p.mu.Unlock()

		res, closing, err := p.read(f)
		if err != nil {
			p.fail(err)
			return
		}
		p.mu.Lock()
		if p.dead != nil { // failed meanwhile; fail has completed f
			p.mu.Unlock()
			return
		}
		p.queue = p.queue[1:]
		p.answered++
		if closing {
			// Dead before the lane hears of f, so that it does not send
			// another request on a connection the server is closing.
			p.dead = errPeerClosed
			rest := p.queue
			p.queue = nil
			p.mu.Unlock()
			p.conn.Close()
			f.b.done <- res
			for _, f := range rest {
				f.b.done <- result{outcome: resend, err: errPeerClosed}
			}
			return
		}
		if len(p.queue) > 0 {
			p.conn.SetReadDeadline(time.Now().Add(p.t.cfg.Timeout))
		} else {
			p.conn.SetReadDeadline(time.Time{})
		}
		p.mu.Unlock()
		f.b.done <- res
	}
}

// read reads f's response, skipping interim 1xx responses.
func (p *httpPipe) read(f *inflight) (result, bool, error) {
	for {
		p.budget.left = maxResponseHeader
		resp, err := http.ReadResponse(p.br, f.req)
		if err != nil {
			return result{}, false, fmt.Errorf("read response: %w", err)
		}
		p.budget.left = math.MaxInt64 // the body is bounded below
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
		}
		resp.Body.Close()
		if err != nil {
			return result{}, false, fmt.Errorf("read response body: %w", err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		return p.t.classify(resp, body, f), resp.Close, nil
	}
}

// maxResponseHeader bounds a response's status line and headers: an endless header line
// from a broken or hostile endpoint would otherwise grow in memory until the gateway dies.
const maxResponseHeader = 64 << 10

var errResponseHeaderTooLarge = fmt.Errorf("response header larger than %d KiB", maxResponseHeader>>10)

// budgetReader reads at most left bytes, then fails.
type budgetReader struct {
	r    io.Reader
	left int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errResponseHeaderTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// fail ends the pipe: the connection is closed and every outstanding batch
// completes with err, in order.
func (p *httpPipe) fail(err error) {
	p.mu.Lock()
	if p.dead != nil {
		p.mu.Unlock()
		return
	}
	p.dead = err
	q := p.queue
	p.queue = nil
	p.mu.Unlock()
	p.conn.Close()
	for _, f := range q {
		f.b.done <- failure(err, f)
	}
}

func failure(err error, f *inflight) result {
	var ae authError
	switch {
	case errors.As(err, &ae):
		return result{outcome: retry, err: err}
	case f.idle && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)):
		return result{outcome: resend, err: err}
	}
	return result{outcome: unreachable, err: err}
}

func (p *httpPipe) close() {
	p.stop()
	p.fail(errPipeClosed)
	<-p.readerDone
}
