package sink

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2/jws"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store/storetest"
)

// googleTokenServer plays Google's token endpoint for a service account: it
// verifies the RS256 assertion with the account's public key and answers
// with an ID token for the assertion's target_audience.
type googleTokenServer struct {
	srv   *httptest.Server
	key   *rsa.PrivateKey
	email string

	mu     sync.Mutex
	issued map[string]string // id token -> audience
	errs   []string
}

func newGoogleTokenServer(t *testing.T) *googleTokenServer {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	g := &googleTokenServer{key: key, email: "moongate@proj.iam.gserviceaccount.com", issued: map[string]string{}}
	g.srv = httptest.NewServer(http.HandlerFunc(g.handle))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *googleTokenServer) refuse(w http.ResponseWriter, format string, args ...any) {
	g.mu.Lock()
	g.errs = append(g.errs, fmt.Sprintf(format, args...))
	g.mu.Unlock()
	http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
}

func (g *googleTokenServer) handle(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	if gt := r.PostForm.Get("grant_type"); gt != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		g.refuse(w, "grant_type %q", gt)
		return
	}
	parts := strings.Split(r.PostForm.Get("assertion"), ".")
	if len(parts) != 3 {
		g.refuse(w, "assertion is not a JWS")
		return
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err != nil || rsa.VerifyPKCS1v15(&g.key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		g.refuse(w, "bad signature")
		return
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Iss, Aud       string
		TargetAudience string `json:"target_audience"`
		Exp            int64
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Iss != g.email || claims.Aud != g.srv.URL+"/token" || claims.TargetAudience == "" {
		g.refuse(w, "claims %s", raw)
		return
	}
	idTok, err := jws.Encode(&jws.Header{Algorithm: "RS256", Typ: "JWT"}, &jws.ClaimSet{
		Iss: "https://accounts.google.com", Aud: claims.TargetAudience, Sub: g.email,
		Iat: time.Now().Unix(), Exp: time.Now().Add(time.Hour).Unix(),
	}, g.key)
	if err != nil {
		g.refuse(w, "encode: %v", err)
		return
	}
	g.mu.Lock()
	g.issued[idTok] = claims.TargetAudience
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"id_token": idTok})
}

// keyFile writes the service account key file as the Google console gives it.
func (g *googleTokenServer) keyFile(t *testing.T, mode os.FileMode) string {
	der, err := x509.MarshalPKCS8PrivateKey(g.key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "proj", "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": g.email, "client_id": "1", "token_uri": g.srv.URL + "/token",
	})
	p := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGoogleIDToken(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	g := newGoogleTokenServer(t)
	const audience = "https://ingest-abc123-ew.a.run.app"
	rc := newReceiver(t, func(r *request) reply {
		tok, _ := strings.CutPrefix(r.header.Get("Authorization"), "Bearer ")
		g.mu.Lock()
		aud := g.issued[tok]
		g.mu.Unlock()
		if aud != audience {
			return reply{status: http.StatusUnauthorized}
		}
		return reply{status: http.StatusOK}
	})
	cfg := httpConfig(rc.url())
	cfg.HTTP.Headers = nil
	cfg.HTTP.Auth.GoogleIDToken = &GoogleIDToken{Audience: audience, CredentialsFile: g.keyFile(t, 0o644)}
	if err := Check(cfg); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Fatalf("a world-readable key file: %v", err)
	}
	cfg.HTTP.Auth.GoogleIDToken.CredentialsFile = g.keyFile(t, 0o600)
	s := newSink(t, cfg, st, nil, nil)
	appendN(t, st, "a", 0, 10)
	run(t, s)
	poll.Within(t, 10*time.Second, "delivered with an ID token", func() bool { return pending(st, "cloud", "a") == 0 })
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.errs) > 0 || len(g.issued) != 1 {
		t.Errorf("token server: %d tokens issued, errors %v", len(g.issued), g.errs)
	}
}
