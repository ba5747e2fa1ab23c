package luafn

import (
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
	src.WriteString("}\nfunction handle() local out = {} for i, f in ipairs(cases) do out[i] = pack(pcall(f)) end return out end\n")
	f := newFn(t, src.String(), Limits{Timeout: 5 * time.Second}, Host{})
	got := call(t, f, nil).Value.([]any)
	// Argument errors keep gopher-lua's wording: "to gsub" for "to 'gsub'", and nil
	// for "no value".
	argErr := regexp.MustCompile(`to '(\w+)' \(`)
	for i, e := range exprs {
		w := strings.ReplaceAll(argErr.ReplaceAllString(want[i], "to $1 ("), "got no value", "got nil")
		if g := got[i].(string); g != w {
			t.Errorf("%s\n  got  %s\n  want %s", e, g, w)
		}
	}
}

func readLines(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}
