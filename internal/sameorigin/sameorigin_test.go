package sameorigin

import (
	"net/http/httptest"
	"testing"
)

func TestAllowed(t *testing.T) {
	for _, c := range []struct {
		host, origin string
		allowed      []string
		want         bool
	}{
		{"127.0.0.1:8080", "", nil, true},
		{"127.0.0.1:8080", "http://127.0.0.1:8080", nil, true},
		{"127.0.0.1:8080", "http://127.0.0.1:9999", nil, false},
		{"127.0.0.1:8080", "null", nil, false},
		{"127.0.0.1:8080", "http://evil.example", nil, false},
		{"127.0.0.1:8080", "https://ops.example.com", []string{"https://ops.example.com"}, true},
		{"127.0.0.1:8080", "https://other.example", []string{"*"}, true},
		{"pi.local:8080", "HTTP://PI.LOCAL:8080", nil, true},
	} {
		r := httptest.NewRequest("POST", "http://"+c.host+"/", nil)
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if got := Allowed(r, c.allowed); got != c.want {
			t.Errorf("host %s origin %q allowed %v: %v", c.host, c.origin, c.allowed, got)
		}
	}
}
