package sink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store/storetest"
)

// TestSigV4TestSuite signs requests of AWS's published Signature Version 4
// test suite (credentials AKIDEXAMPLE, 2015-08-30T12:36:00Z, us-east-1,
// service "service") the way the sink signs its own, and compares the
// Authorization header with the suite's.
func TestSigV4TestSuite(t *testing.T) {
	const prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
	for _, tc := range []struct {
		name, method, target string
		header               map[string]string
		body                 string
		authz                string
	}{
		{"get-vanilla", "GET", "/", nil, "",
			"SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{"get-vanilla-query-order-key-case", "GET", "/?Param2=value2&Param1=value1", nil, "",
			"SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
		{"post-vanilla", "POST", "/", nil, "",
			"SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
		{"post-vanilla-query", "POST", "/?Param1=value1", nil, "",
			"SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"},
		{"post-header-key-case", "POST", "/", map[string]string{"My-Header1": "value1"}, "",
			"SignedHeaders=host;my-header1;x-amz-date, Signature=c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"},
		{"post-header-value-case", "POST", "/", map[string]string{"My-Header1": "VALUE1"}, "",
			"SignedHeaders=host;my-header1;x-amz-date, Signature=cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"},
		{"post-x-www-form-urlencoded", "POST", "/", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "Param1=value1",
			"SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSigV4(&AWSSigV4{Region: "us-east-1", Service: "service",
				AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"})
			if err != nil {
				t.Fatal(err)
			}
			s.now = func() time.Time { return time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC) }
			s.hashHeader = false // the suite's requests carry no X-Amz-Content-Sha256
			req, err := http.NewRequest(tc.method, "https://example.amazonaws.com"+tc.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			if _, err := s.authorize(context.Background(), req, []byte(tc.body)); err != nil {
				t.Fatal(err)
			}
			if got := req.Header.Get("Authorization"); got != prefix+tc.authz {
				t.Errorf("Authorization\n got %s\nwant %s", got, prefix+tc.authz)
			}
			if got := req.Header.Get("X-Amz-Date"); got != "20150830T123600Z" {
				t.Errorf("X-Amz-Date %q", got)
			}
		})
	}
}

var testCreds = aws.Credentials{AccessKeyID: "AKIDMOONGATE", SecretAccessKey: "c2VjcmV0LWtleS1vZi10aGUtdGVzdA", SessionToken: "session-tok"}

// verifySigV4 checks a request the way AWS does: it rebuilds the request
// from what arrived, with the headers the Authorization names, signs it with
// the SDK's signer and the caller's credentials at the request's X-Amz-Date,
// and compares.
func verifySigV4(r *request, host string, creds aws.Credentials, region, service string) bool {
	authz := r.header.Get("Authorization")
	_, after, ok := strings.Cut(authz, "SignedHeaders=")
	if !ok {
		return false
	}
	signed, _, _ := strings.Cut(after, ",")
	at, err := time.Parse("20060102T150405Z", r.header.Get("X-Amz-Date"))
	if err != nil {
		return false
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+host+"/ingest", bytes.NewReader(r.wire))
	if err != nil {
		return false
	}
	req.Header = http.Header{}
	for _, name := range strings.Split(signed, ";") {
		switch name {
		case "host", "content-length", "x-amz-date":
		default:
			req.Header[http.CanonicalHeaderKey(name)] = r.header.Values(name)
		}
	}
	sum := sha256.Sum256(r.wire)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), service, region, at); err != nil {
		return false
	}
	return req.Header.Get("Authorization") == authz && time.Since(at).Abs() < 5*time.Minute
}

func sigV4Config(url string, creds aws.Credentials) Config {
	cfg := httpConfig(url)
	cfg.HTTP.Headers = nil
	cfg.HTTP.Gzip = "on" // the signature covers the bytes as sent
	cfg.HTTP.Auth.AWSSigV4 = &AWSSigV4{Region: "eu-west-1", AccessKeyID: creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey, SessionToken: creds.SessionToken}
	return cfg
}

func TestSigV4Receiver(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	var rc *receiver
	var refusedCount atomic.Int32
	rc = newReceiver(t, func(r *request) reply {
		if !verifySigV4(r, rc.addr, testCreds, "eu-west-1", "lambda") || r.header.Get("X-Amz-Security-Token") != "session-tok" {
			refusedCount.Add(1)
			return reply{status: http.StatusForbidden, body: `{"Message":"signature does not match"}`}
		}
		return reply{status: http.StatusOK}
	})

	// Wrong keys: refused, so never acknowledged.
	wrong := testCreds
	wrong.SecretAccessKey = "not-the-key"
	bad := sigV4Config(rc.url(), wrong)
	bad.Name = "wrong"
	sBad := newSink(t, bad, st, nil, nil)
	appendN(t, st, "a", 0, 50)
	stopBad := run(t, sBad)
	poll.Within(t, 5*time.Second, "two refusals", func() bool { return refusedCount.Load() >= 2 })
	stopBad()
	if p := pending(st, "wrong", "a"); p != 50 {
		t.Fatalf("%d pending after refused signatures, want 50", p)
	}

	// Right keys: accepted, every record once the receiver verified it.
	before := refusedCount.Load()
	s := newSink(t, sigV4Config(rc.url(), testCreds), st, nil, nil)
	run(t, s)
	poll.Within(t, 5*time.Second, "signed batches acknowledged", func() bool { return pending(st, "cloud", "a") == 0 })
	if n := refusedCount.Load(); n != before {
		t.Errorf("%d requests with the right keys refused", n-before)
	}
	for _, r := range rc.requests() {
		if r.header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("request %d not gzipped: the test signs only the plain body", r.n)
		}
	}
}

// TestLambdaFunctionErrorIsNotAck: Lambda answers a handler's error with
// 200 and X-Amz-Function-Error (or the runtime's errorMessage body); that
// must not acknowledge the batch.
func TestLambdaFunctionErrorIsNotAck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header map[string]string
	}{
		{"header", map[string]string{"X-Amz-Function-Error": "Unhandled"}},
		{"body", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := storetest.Open(t, t.TempDir())
			defer st.Close()
			var failing atomic.Bool
			failing.Store(true)
			var errors atomic.Int32
			rc := newReceiver(t, func(r *request) reply {
				if failing.Load() {
					errors.Add(1)
					return reply{status: http.StatusOK, header: tc.header,
						body: `{"errorMessage":"cannot read properties of undefined","errorType":"TypeError","trace":[]}`}
				}
				return reply{status: http.StatusOK}
			})
			s := newSink(t, sigV4Config(rc.url(), testCreds), st, nil, nil)
			appendN(t, st, "a", 0, 20)
			run(t, s)
			poll.Within(t, 5*time.Second, "three function errors", func() bool { return errors.Load() >= 3 })
			if p := pending(st, "cloud", "a"); p != 20 {
				t.Fatalf("%d pending after function errors, want 20: an error answer acknowledged records", p)
			}
			if st := s.Status(); st.State != BackingOff || !strings.Contains(st.LastError, "function error") || st.Delivered != 0 {
				t.Errorf("status %+v", st)
			}
			failing.Store(false)
			poll.Within(t, 5*time.Second, "acknowledged once the function works", func() bool { return pending(st, "cloud", "a") == 0 })
		})
	}
}

// TestSigV4FromEnvironment takes the keys from the AWS_* variables, as the
// SDK's default chain does.
func TestSigV4FromEnvironment(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", testCreds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testCreds.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", testCreds.SessionToken)
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	s, err := newSigV4(&AWSSigV4{Region: "eu-west-1", Service: "lambda"})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"x":1}`)
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:9/ingest", bytes.NewReader(body))
	if _, err := s.authorize(context.Background(), req, body); err != nil {
		t.Fatal(err)
	}
	r := &request{header: req.Header, wire: body}
	if sum := sha256.Sum256(body); req.Header.Get("X-Amz-Content-Sha256") != hex.EncodeToString(sum[:]) {
		t.Errorf("X-Amz-Content-Sha256 %q", req.Header.Get("X-Amz-Content-Sha256"))
	}
	if !verifySigV4(r, "127.0.0.1:9", testCreds, "eu-west-1", "lambda") {
		t.Errorf("signature from the environment's keys does not verify: %s", req.Header.Get("Authorization"))
	}
}

// TestSigV4ProfileCredentialProcess takes the keys from a shared config profile
// whose credential_process (as IAM Roles Anywhere's signing helper is used)
// prints them; a 403 drops the cached keys, so keys the process hands out
// afterwards are used on the next attempt.
func TestSigV4ProfileCredentialProcess(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	// Temporary keys: each set has an access key id of its own.
	writeKeys := func(id, secret string) {
		b, _ := json.Marshal(map[string]any{"Version": 1, "AccessKeyId": id, "SecretAccessKey": secret,
			"SessionToken": testCreds.SessionToken, "Expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		if err := os.WriteFile(keys, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKeys("AKIDEXPIRED", "expired-secret")
	conf := filepath.Join(dir, "config")
	if err := os.WriteFile(conf, []byte("[profile gateway]\ncredential_process = cat "+keys+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"AWS_CONFIG_FILE": conf, "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "none"),
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_EC2_METADATA_DISABLED": "true"} {
		t.Setenv(k, v)
	}
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	var rc *receiver
	var refused atomic.Int32
	rc = newReceiver(t, func(r *request) reply {
		if !verifySigV4(r, rc.addr, testCreds, "eu-west-1", "lambda") {
			refused.Add(1)
			return reply{status: http.StatusForbidden, body: `{"message":"The security token included in the request is expired"}`}
		}
		return reply{status: http.StatusOK}
	})
	cfg := sigV4Config(rc.url(), aws.Credentials{})
	cfg.HTTP.Auth.AWSSigV4.Profile = "gateway"
	s := newSink(t, cfg, st, nil, nil)
	appendN(t, st, "a", 0, 10)
	run(t, s)
	poll.Within(t, 5*time.Second, "the old keys refused", func() bool { return refused.Load() >= 1 })
	writeKeys(testCreds.AccessKeyID, testCreds.SecretAccessKey)
	poll.Within(t, 5*time.Second, "delivered with the keys the process hands out now", func() bool { return pending(st, "cloud", "a") == 0 })
}
