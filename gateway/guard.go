package gateway

import (
	"mime"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/moongate/moongate/internal/sameorigin"
)

// guard keeps web pages the user happens to open from driving the console through the
// user's browser, and token guessers from trying for ever:
//   - Host must be a name this gateway answers to (an IP literal, localhost, this
//     machine's hostname, or gateway.console.hosts): a DNS-rebinding page, whose requests
//     carry its own domain, is refused;
//   - a request that changes state must not come from a foreign origin (browsers send
//     Origin with them; `null` from a file:// page is foreign too), and one with a body
//     must say it is JSON, which a cross-origin page cannot send without a preflight
//     that the gateway never answers;
//   - wrong tokens are throttled per source address.
type guard struct {
	hosts    map[string]bool // lowercase host names allowed besides IP literals and localhost
	origins  []string        // browser origins allowed besides the gateway's own
	failures *failureLimiter
}

func newGuard(hosts, origins []string) *guard {
	g := &guard{hosts: map[string]bool{}, origins: origins, failures: newFailureLimiter()}
	if h, err := os.Hostname(); err == nil && h != "" {
		h = strings.ToLower(h)
		g.hosts[h], g.hosts[h+".local"] = true, true
	}
	for _, h := range hosts {
		g.hosts[strings.ToLower(h)] = true
	}
	return g
}

func (gd *guard) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !gd.hostAllowed(r.Host) {
			writeError(w, http.StatusMisdirectedRequest,
				"host "+hostOnly(r.Host)+" is not served here: add it to gateway.console.hosts")
			return
		}
		if changesState(r.Method) {
			if !sameorigin.Allowed(r, gd.origins) {
				writeError(w, http.StatusForbidden, "refused: a request from another origin ("+r.Header.Get("Origin")+")")
				return
			}
			if r.ContentLength != 0 && !isJSON(r.Header.Get("Content-Type")) {
				writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func changesState(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

func isJSON(contentType string) bool {
	t, _, err := mime.ParseMediaType(contentType)
	return err == nil && t == "application/json"
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return strings.Trim(h, "[]")
	}
	return strings.Trim(hostport, "[]")
}

// hostAllowed: an IP literal cannot be rebound, so any is fine; a name must be known.
func (gd *guard) hostAllowed(hostport string) bool {
	h := strings.ToLower(hostOnly(hostport))
	if net.ParseIP(h) != nil || h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	return gd.hosts[h]
}

// failureLimiter throttles wrong tokens per source address: past maxFailures in a
// window, every request from that address is refused until the window ends.
type failureLimiter struct {
	mu     sync.Mutex
	window time.Duration
	max    int
	now    func() time.Time
	byHost map[string]*failures
}

type failures struct {
	since  time.Time
	count  int
	logged bool
}

const (
	maxTokenFailures  = 10
	tokenFailureReset = time.Minute
)

func newFailureLimiter() *failureLimiter {
	return &failureLimiter{window: tokenFailureReset, max: maxTokenFailures, now: time.Now, byHost: map[string]*failures{}}
}

// blocked reports whether host is throttled now.
func (l *failureLimiter) blocked(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.current(host)
	return f != nil && f.count >= l.max
}

// fail counts one wrong token from host; first reports the first failure of a window,
// to be logged (once per source per window, not per request).
func (l *failureLimiter) fail(host string) (first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.current(host)
	if f == nil {
		if len(l.byHost) >= 4096 { // a flood of sources: forget the oldest windows
			for h := range l.byHost {
				delete(l.byHost, h)
				break
			}
		}
		f = &failures{since: l.now()}
		l.byHost[host] = f
	}
	f.count++
	first, f.logged = !f.logged, true
	return first
}

func (l *failureLimiter) current(host string) *failures {
	f := l.byHost[host]
	if f != nil && l.now().Sub(f.since) >= l.window {
		delete(l.byHost, host)
		return nil
	}
	return f
}

func remoteHost(r *http.Request) string { return hostOnly(r.RemoteAddr) }
