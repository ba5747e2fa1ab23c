package luafn

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStringLibReference runs every expression of testdata/strcases.txt in the sandbox
// and compares the results with those of the reference Lua 5.1 in strcases.golden
// (see strcases_driver.lua for how it is made, and for the serializer used by both).
func TestStringLibReference(t *testing.T) {
	exprs := readLines(t, "testdata/strcases.txt")
	want := readLines(t, "testdata/strcases.golden")
	if len(exprs) != len(want) {
		t.Fatalf("%d expressions, %d golden results", len(exprs), len(want))
	}
	driver, err := os.ReadFile("testdata/strcases_driver.lua")
	if err != nil {
		t.Fatal(err)
	}
	// Reuse the driver's collect, ser and pack; replace its loadstring loop.
	pre := string(driver)
	pre = pre[:strings.Index(pre, "for line in io.lines")]
	var src strings.Builder
	src.WriteString(pre)
	src.WriteString("local cases = {\n")
	for _, e := range exprs {
		src.WriteString("function() return " + e + " end,\n")
	}
	// The result travels as JSON, which has no room for bytes that are not UTF-8: the
	// handler writes bytes from 128 up as \ddd (without patterns, which are under test)
	// and so does escapeHigh for the golden lines.
	src.WriteString(`}
local function esc(s)
  local b = {}
  for i = 1, #s do
    local c = s:byte(i)
    b[i] = c < 128 and string.char(c) or ("\\" .. c)
  end
  return table.concat(b)
end
function handle() local out = {} for i, f in ipairs(cases) do out[i] = esc(pack(pcall(f))) end return out end
`)
	f := newFn(t, src.String(), Limits{Timeout: 5 * time.Second}, Host{})
	got := call(t, f, nil).value().([]any)
	// Argument errors keep gopher-lua's wording: "to gsub" for "to 'gsub'", and nil
	// for "no value".
	argErr := regexp.MustCompile(`to '(\w+)' \(`)
	for i, e := range exprs {
		w := escapeHigh(strings.ReplaceAll(argErr.ReplaceAllString(want[i], "to $1 ("), "got no value", "got nil"))
		if g := got[i].(string); g != w {
			t.Errorf("%s\n  got  %s\n  want %s", e, g, w)
		}
	}
}

func escapeHigh(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 128 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "\\%d", c)
		}
	}
	return b.String()
}

func readLines(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}
