package gateway

import (
	"mime"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/moongate/moongate/internal/sameorigin"
)

// guard keeps web pages the user happens to open from driving the console through the
// user's browser, and token guessers from trying for ever:
//   - Host must be a name this gateway answers to (an IP literal, localhost, this
//     machine's hostname, or gateway.console.hosts): a DNS-rebinding page, whose requests
//     carry its own domain, is refused;
//   - a request that changes state must not come from a foreign origin (browsers send
//     Origin with them; `null` from a file:// page is foreign too), and one with a body
//     must say it is JSON (or multipart/mixed), which a cross-origin page cannot send without a preflight
//     that the gateway never answers;
//
// Wrong tokens are throttled per source address by tokenAuth.
type guard struct {
	hosts   map[string]bool // lowercase host names allowed besides IP literals and localhost
	origins []string        // browser origins allowed besides the gateway's own
}

func newGuard(hosts, origins []string) *guard {
	g := &guard{hosts: map[string]bool{}, origins: origins}
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
			if r.ContentLength != 0 && !bodyTypeAllowed(r.Header.Get("Content-Type")) {
				writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json (multipart/mixed for a firmware image)")
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

// bodyTypeAllowed: JSON, or multipart/mixed (a firmware upload). Neither is a type a
// cross-origin page may send without a preflight; multipart/form-data would be.
func bodyTypeAllowed(contentType string) bool {
	t, _, err := mime.ParseMediaType(contentType)
	return err == nil && (t == "application/json" || t == "multipart/mixed")
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

func remoteHost(r *http.Request) string { return hostOnly(r.RemoteAddr) }
