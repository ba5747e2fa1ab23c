package gateway

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/moongate/moongate/gateway/config"
)

// The examples under examples/cloud pass `moongate check` once the variables their
// comments name are set, and each configures the sink its directory is named for.
func TestCloudExampleConfigsCheck(t *testing.T) {
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	sa, _ := json.Marshal(map[string]string{"type": "service_account", "client_email": "moongate@proj.iam.gserviceaccount.com",
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "token_uri": "https://oauth2.googleapis.com/token"})
	writeSecret := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for k, v := range map[string]string{
		"LAMBDA_URL":            "https://abcdefghij.lambda-url.eu-west-1.on.aws/",
		"AWS_ACCESS_KEY_ID":     "AKIDEXAMPLE",
		"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
		"AWS_CONFIG_FILE":       filepath.Join(dir, "none"),
		"CLOUD_RUN_URL":         "https://ingest-abc123-ew.a.run.app",
		"GOOGLE_KEY_FILE":       writeSecret("sa.json", sa),
		"AZURE_FUNCTION_APP":    "moongate-ingest",
		"AZURE_TENANT_ID":       "00000000-0000-0000-0000-000000000000",
		"AZURE_CLIENT_ID":       "11111111-1111-1111-1111-111111111111",
		"AZURE_CLIENT_SECRET":   "not-a-secret",
		"AZURE_API_CLIENT_ID":   "22222222-2222-2222-2222-222222222222",
		"KNATIVE_BROKER_URL":    "http://broker-ingress.knative-eventing.svc.cluster.local/default/default",
		"OPENFAAS_URL":          "http://gateway.openfaas:8080",
		"INGEST_HMAC_SECRET":    "not-a-secret",
		"NATS_URL":              "tls://n1.example.net:4222,tls://n2.example.net:4222",
		"NATS_CREDS_FILE":       writeSecret("user.creds", []byte("-----BEGIN NATS USER JWT-----\n")),
	} {
		t.Setenv(k, v)
	}
	want := map[string]func(s *config.Sink) bool{
		"aws-lambda":      func(s *config.Sink) bool { return s.HTTP != nil && s.HTTP.Auth.AWSSigV4 != nil },
		"cloud-run":       func(s *config.Sink) bool { return s.HTTP != nil && s.HTTP.Auth.GoogleIDToken != nil },
		"azure-functions": func(s *config.Sink) bool { return s.HTTP != nil && s.HTTP.Auth.OAuth2 != nil },
		"knative":         func(s *config.Sink) bool { return s.HTTP != nil && s.HTTP.Format == "cloudevents" },
		"openfaas":        func(s *config.Sink) bool { return s.HTTP != nil && s.HTTP.HMACSecret != "" },
		"nats-jetstream":  func(s *config.Sink) bool { return s.JetStream != nil },
	}
	paths, _ := filepath.Glob(filepath.Join("..", "examples", "cloud", "*", "moongate.yaml"))
	if len(paths) != len(want) {
		t.Errorf("%d cloud examples, want %d: %v", len(paths), len(want), paths)
	}
	for _, p := range paths {
		cfg := loadChecked(t, p)
		name := filepath.Base(filepath.Dir(p))
		ok := want[name]
		if ok == nil || len(cfg.Sync.Sinks) != 1 || !ok(&cfg.Sync.Sinks[0]) {
			t.Errorf("%s: not the sink its directory names", p)
		}
	}
}
