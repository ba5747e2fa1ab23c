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
