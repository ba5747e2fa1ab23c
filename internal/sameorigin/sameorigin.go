// Package sameorigin is the one rule by which the console, its API and the broker's
// websocket listener tell a page of their own from any other page the user has open.
package sameorigin

import (
	"net/http"
	"net/url"
	"strings"
)

// Allowed reports whether r may come from its Origin: a request without one is not from
// a browser (the CLI, a device) and passes; a browser's must be the request's own host,
// or listed in allowed ("https://ops.example.com:8443"; "*" allows any). The "null"
// origin of a file:// page is never its own.
func Allowed(r *http.Request, allowed []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(a, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}
