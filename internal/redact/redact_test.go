package redact

import "testing"

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"tcp://user:PASS@host:1883":     "tcp://user:xxxxx@host:1883",
		"tcp://host:1883":               "tcp://host:1883",
		"ssl://only-user@host":          "ssl://only-user@host",
		"tcp://user:PA SS%zz@host:1883": "tcp://user:xxxxx@host:1883",
		"embedded":                      "embedded",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
	if got := String(`connect "tcp://u:PASS@h:1" failed: dial tcp`); got != `connect "tcp://u:xxxxx@h:1" failed: dial tcp` {
		t.Errorf("String: %q", got)
	}
}
