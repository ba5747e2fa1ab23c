package gateway

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moongate/moongate/gateway/console"
	"github.com/moongate/moongate/internal/throttle"
)

// tokenAuth checks the console token that the API and the live stream present, and
// throttles the sources that present wrong ones.
type tokenAuth struct {
	token    string // "" (a loopback listener with no token): every request is allowed
	failures *throttle.Failures
	refused  prometheus.Counter // moongate_console_auth_failures_total
	logger   *slog.Logger
}

// Wrong tokens allowed per source address and window before it is refused outright.
const (
	maxTokenFailures  = 10
	tokenFailureReset = time.Minute
)

func newTokenAuth(token string, refused prometheus.Counter, logger *slog.Logger) *tokenAuth {
	return &tokenAuth{token: token, failures: throttle.New(maxTokenFailures, tokenFailureReset), refused: refused, logger: logger}
}

// authorized checks the live stream's token (header, subprotocol or ?token=). With no
// token set (a loopback listener), every request is allowed.
func (ta *tokenAuth) authorized(r *http.Request) bool {
	return ta.accepted(r, console.BearerToken(r))
}

// accepted compares a presented token with the gateway's in constant time, and
// throttles the sources that present wrong ones.
func (ta *tokenAuth) accepted(r *http.Request, got string) bool {
	if ta.token == "" {
		return true
	}
	host := remoteHost(r)
	if ta.failures.Blocked(host) {
		return false
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(ta.token)) == 1 {
		return true
	}
	ta.refused.Inc()
	if ta.failures.Fail(host) {
		ta.logger.Warn("console: refused a wrong or missing token; further failures from this address this minute are counted, not logged",
			"remote", host)
	}
	return false
}

// require guards an API endpoint: the token comes in the Authorization header only,
// so that it never lands in a URL, a log line or the browser's history.
func (ta *tokenAuth) require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ta.failures.Blocked(remoteHost(r)) && ta.token != "" {
			writeError(w, http.StatusTooManyRequests, "too many wrong tokens from this address: wait a minute")
			return
		}
		if !ta.accepted(r, headerToken(r)) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeError(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func headerToken(r *http.Request) string {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	return ""
}
