package config

import (
	"strings"
	"testing"
)

func TestFunctionNames(t *testing.T) {
	for _, ok := range []string{"a", "temp-alert", "fn_2", "0x", strings.Repeat("x", 63)} {
		if err := CheckFunctionName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "../x", "Bad Name/..", "UPPER", "a.b", "-x", "_x", strings.Repeat("x", 64), "é"} {
		if err := CheckFunctionName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	p := write(t, "functions:\n  - {name: \"Temp Alert\", source: f.lua, triggers: [\"mqtt:x\"]}\n")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p+":2: functions[0].name: \"Temp Alert\" is not a valid function name") {
		t.Errorf("config with a bad name: %v", err)
	}
}

func TestTokenRules(t *testing.T) {
	for _, c := range []struct{ console, want string }{
		{`{listen: 0.0.0.0:8080, token: short}`, "is 5 characters"},
		{`{listen: 0.0.0.0:8080, token: " spaced-token-long-enough "}`, "spaces around it"},
		{`{listen: 0.0.0.0:8080, token: generate}`, ""},
		{`{listen: 0.0.0.0:8080, token: a-token-of-enough-length}`, ""},
		{`{listen: 127.0.0.1:8080, token: short}`, ""},
	} {
		p := write(t, "gateway:\n  console: "+c.console+"\n")
		_, err := Load(p)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.console, err, c.want)
		}
	}
}
