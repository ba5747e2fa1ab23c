package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Wrong tokens are throttled per source address and counted; the API takes its token from
// the Authorization header only, never from the URL.
func TestTokenGuessingThrottled(t *testing.T) {
	dir := t.TempDir()
	const token = "a-long-enough-console-token"
	cfg := strings.Replace(baseConfig(dir, ""), "console: {listen: 127.0.0.1:0}", "console: {listen: 127.0.0.1:0, token: "+token+"}", 1)
	tg := startTest(t, dir, cfg)
	if r := call(t, "GET", tg.api+"/api/v1/status?token="+token, "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("?token= on the API: %d", r.status)
	}
	for i := 2; i <= maxTokenFailures; i++ {
		if r := call(t, "GET", tg.api+"/api/v1/status", "guess", nil); r.status != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, r.status)
		}
	}
	if r := call(t, "GET", tg.api+"/api/v1/status", token, nil); r.status != http.StatusTooManyRequests {
		t.Fatalf("after %d wrong tokens, even the right one waits: %d %s", maxTokenFailures, r.status, r.raw)
	}
	if n := testutil.ToFloat64(tg.g.metrics.authFailures); n != maxTokenFailures {
		t.Fatalf("counted %v failures, want %d", n, maxTokenFailures)
	}
}

func TestHostAllowed(t *testing.T) {
	gd := newGuard([]string{"gw.example.com"}, nil)
	for host, want := range map[string]bool{
		"127.0.0.1:8080": true, "[::1]:8080": true, "192.168.1.20:8080": true, "localhost:8080": true,
		"app.localhost": true, "GW.example.com:8443": true, "attacker.example": false, "127.0.0.1.nip.io:8080": false,
	} {
		if got := gd.hostAllowed(host); got != want {
			t.Errorf("%s: %v", host, got)
		}
	}
}

// gateway.debug.pprof serves Go's profiles behind the token; off, nothing of them is served.
func TestPprofSwitch(t *testing.T) {
	for _, on := range []bool{false, true} {
		dir := t.TempDir()
		const token = "a-long-enough-console-token"
		cfg := strings.Replace(baseConfig(dir, ""), "console: {listen: 127.0.0.1:0}",
			fmt.Sprintf("console: {listen: 127.0.0.1:0, token: %s}\n  debug: {pprof: %v}", token, on), 1)
		tg := startTest(t, dir, cfg)
		r := call(t, "GET", tg.api+"/debug/pprof/goroutine?debug=1", token, nil)
		served := r.status == http.StatusOK && strings.Contains(r.raw, "goroutine profile")
		if served != on {
			t.Fatalf("pprof %v: %d %.80s", on, r.status, r.raw)
		}
		if on {
			if r := call(t, "GET", tg.api+"/debug/pprof/goroutine?debug=1", "", nil); r.status != http.StatusUnauthorized {
				t.Fatalf("pprof without the token: %d", r.status)
			}
		}
		tg.stop(t)
	}
}

// A firmware upload is multipart/mixed: a web page can send multipart/form-data across
// origins without a preflight, so the guard refuses it, whatever the endpoint.
func TestFormUploadRefused(t *testing.T) {
	gd := newGuard(nil, nil)
	served := false
	h := gd.wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served = true }))
	for ct, want := range map[string]bool{
		"multipart/form-data; boundary=x": false, "text/plain": false, "application/x-www-form-urlencoded": false,
		"multipart/mixed; boundary=x": true, "application/json": true,
	} {
		served = false
		req := httptest.NewRequest("POST", "http://127.0.0.1/api/v1/firmware", strings.NewReader("--x--"))
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if served != want {
			t.Errorf("%s: served %v (status %d)", ct, served, rec.Code)
		}
	}
}
