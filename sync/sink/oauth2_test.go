package sink

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store/storetest"
)

// tokenServer is a real OAuth 2.0 token endpoint for the client credentials
// grant, and the registry of the tokens it issued, which the receiver checks.
type tokenServer struct {
	srv       *httptest.Server
	clientID  string
	secret    string
	expiresIn int // seconds

	mu      sync.Mutex
	issued  map[string]time.Time // token -> expiry
	fetches int
	fail    bool // answer 500
	scopes  []string
}

func newTokenServer(t *testing.T, clientID, secret string, expiresIn int) *tokenServer {
	ts := &tokenServer{clientID: clientID, secret: secret, expiresIn: expiresIn, issued: map[string]time.Time{}}
	ts.srv = httptest.NewServer(http.HandlerFunc(ts.handle))
	t.Cleanup(ts.srv.Close)
	return ts
}

func (ts *tokenServer) handle(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.fail {
		http.Error(w, `{"error":"temporarily_unavailable"}`, http.StatusInternalServerError)
		return
	}
	if id != ts.clientID || secret != ts.secret {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_client"}`)
		return
	}
	ts.fetches++
	ts.scopes = strings.Fields(r.PostForm.Get("scope"))
	tok := fmt.Sprintf("tok-%d", ts.fetches)
	ts.issued[tok] = time.Now().Add(time.Duration(ts.expiresIn) * time.Second)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": ts.expiresIn})
}

// valid reports whether an Authorization header carries a live token.
func (ts *tokenServer) valid(authz string) bool {
	tok, ok := strings.CutPrefix(authz, "Bearer ")
	ts.mu.Lock()
	defer ts.mu.Unlock()
	exp, known := ts.issued[tok]
	return ok && known && time.Now().Before(exp)
}

func (ts *tokenServer) revokeAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	clear(ts.issued)
}

func (ts *tokenServer) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.fetches
}

// bearerReceiver answers 401 to a request without a live token.
func bearerReceiver(t *testing.T, ts *tokenServer) (*receiver, *atomic.Int32) {
	refused := new(atomic.Int32)
	rc := newReceiver(t, func(r *request) reply {
		if !ts.valid(r.header.Get("Authorization")) {
			refused.Add(1)
			return reply{status: http.StatusUnauthorized, header: map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`}}
		}
		return reply{status: http.StatusOK}
	})
	return rc, refused
}

func oauth2Config(url string, ts *tokenServer, secret string) Config {
	cfg := httpConfig(url)
	cfg.HTTP.Headers = nil
	cfg.HTTP.Auth.OAuth2 = &OAuth2ClientCredentials{TokenURL: ts.srv.URL + "/token", ClientID: ts.clientID,
		ClientSecret: secret, Scopes: []string{"api://moongate/.default"}}
	return cfg
}

// TestOAuth2RefreshOn401: a token the receiver stops accepting is replaced
// at once and the batch resent, without the sink's backoff.
func TestOAuth2RefreshOn401(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	ts := newTokenServer(t, "gw-kitchen", "s3cr3t-value", 3600)
	rc, refused := bearerReceiver(t, ts)
	cfg := oauth2Config(rc.url(), ts, "s3cr3t-value")
	// A backoff would outlast the test: the resend after a 401 must not wait.
	cfg.Backoff = Backoff{Base: time.Hour, Cap: time.Hour}
	var logs logBuffer
	s := newSink(t, cfg, st, nil, logs.logger())
	appendN(t, st, "a", 0, 5)
	run(t, s)
	poll.Within(t, 5*time.Second, "the first batch", func() bool { return pending(st, "cloud", "a") == 0 })
	ts.revokeAll()
	appendN(t, st, "a", 5, 5)
	poll.Within(t, 5*time.Second, "the second batch, with a new token", func() bool { return pending(st, "cloud", "a") == 0 })
	if n := ts.count(); n != 2 {
		t.Errorf("%d tokens fetched, want 2", n)
	}
	if refused.Load() != 1 {
		t.Errorf("%d requests refused, want 1", refused.Load())
	}
	if got := strings.Join(ts.scopes, " "); got != "api://moongate/.default" {
		t.Errorf("scopes %q", got)
	}
	if logs.count("s3cr3t") > 0 {
		t.Error("the client secret was logged")
	}
}

// TestOAuth2RefreshBeforeExpiry: a token is replaced a minute before it
// expires, so no request carries one that expires on the way; and a token
// that is refused even fresh gets the backoff, not a loop.
func TestOAuth2RefreshBeforeExpiry(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	// 61 s tokens: a minute early means a new one after about a second.
	ts := newTokenServer(t, "gw", "pw", 61)
	rc, refused := bearerReceiver(t, ts)
	s := newSink(t, oauth2Config(rc.url(), ts, "pw"), st, nil, nil)
	run(t, s)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ts.count() < 3; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("only %d tokens fetched in 10s", ts.count())
		}
		appendN(t, st, "a", i, 1)
		time.Sleep(20 * time.Millisecond)
	}
	poll.Within(t, 5*time.Second, "all delivered", func() bool { return pending(st, "cloud", "a") == 0 })
	if refused.Load() != 0 {
		t.Errorf("%d requests refused: a token was used past its expiry", refused.Load())
	}
	tokens := map[string]bool{}
	for _, r := range rc.requests() {
		tokens[r.header.Get("Authorization")] = true
	}
	if len(tokens) < 2 {
		t.Errorf("requests carried %d distinct tokens", len(tokens))
	}
}

func TestOAuth2TokenServerDown(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	ts := newTokenServer(t, "gw", "the-secret-xyz", 3600)
	ts.fail = true
	rc, _ := bearerReceiver(t, ts)
	var logs logBuffer
	s := newSink(t, oauth2Config(rc.url(), ts, "the-secret-xyz"), st, nil, logs.logger())
	appendN(t, st, "a", 0, 3)
	run(t, s)
	poll.Within(t, 5*time.Second, "backing off", func() bool { return s.Status().State == BackingOff })
	if len(rc.requests()) != 0 {
		t.Error("a request went out without a token")
	}
	if st := s.Status(); !strings.Contains(st.LastError, "token") || strings.Contains(st.LastError, "the-secret-xyz") {
		t.Errorf("last error %q", st.LastError)
	}
	ts.mu.Lock()
	ts.fail = false
	ts.mu.Unlock()
	poll.Within(t, 5*time.Second, "delivered once the token server is back", func() bool { return pending(st, "cloud", "a") == 0 })
	if logs.count("the-secret-xyz") > 0 {
		t.Error("the client secret was logged")
	}
}

func TestSecretFileMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret")
	if err := os.WriteFile(p, []byte("pw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := oauth2Config("http://127.0.0.1:1/", &tokenServer{srv: httptest.NewUnstartedServer(nil), clientID: "gw"}, "")
	cfg.HTTP.Auth.OAuth2.ClientSecretFile = p
	if err := Check(cfg); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Fatalf("a 0644 secret file: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(cfg); err != nil {
		t.Fatalf("a 0600 secret file: %v", err)
	}
	cfg.HTTP.Auth.OAuth2.ClientSecret = "also"
	if err := Check(cfg); err == nil || !strings.Contains(err.Error(), "one of client_secret and client_secret_file") {
		t.Fatalf("both secrets: %v", err)
	}
}
