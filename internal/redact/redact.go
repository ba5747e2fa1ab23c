// Package redact keeps credentials out of what the gateway shows: logs, the API's
// answers, error messages and `moongate check`.
package redact

import (
	"net/url"
	"strings"
)

// URL returns raw with the password of its userinfo replaced by "xxxxx"
// (tcp://user:xxxxx@host:1883), also when raw does not parse as a URL.
func URL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		return u.Redacted()
	} else if err == nil {
		return raw
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		scheme, rest = "", raw
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return raw
	}
	user, _, _ := strings.Cut(rest[:at], ":")
	out := user + ":xxxxx" + rest[at:]
	if ok {
		out = scheme + "://" + out
	}
	return out
}

// String replaces every URL with userinfo inside s, for error texts that quote one.
func String(s string) string {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '"' || r == '\'' })
	for _, f := range fields {
		if strings.Contains(f, "://") && strings.Contains(f, "@") {
			s = strings.ReplaceAll(s, f, URL(f))
		}
	}
	return s
}
