package mqtt

import (
	"errors"
	"strings"
	"testing"
)

var matchTests = []struct {
	filter, topic string
	want          bool
}{
	{"a/b/c", "a/b/c", true},
	{"a/b/c", "a/b", false},
	{"a/b", "a/b/c", false},
	{"A/b", "a/b", false},
	{"a b/ü", "a b/ü", true},
	{"a/+/c", "a/b/c", true},
	{"a/+/c", "a//c", true},
	{"a/+/c", "a/b/d", false},
	{"a/+", "a/", true},
	{"a/+", "a", false},
	{"a/+/+", "a/b", false},
	{"+", "a", true},
	{"+", "/a", false},
	{"+", "", true}, // not a valid topic, but "+" does match one empty level
	{"+/+", "/a", true},
	{"/+", "/a", true},
	{"+/a", "/a", true},
	{"#", "a/b/c", true},
	{"#", "/", true},
	{"a/#", "a", true},
	{"a/#", "a/", true},
	{"a/#", "a/b/c", true},
	{"a/#", "ab", false},
	{"a/#", "b/a", false},
	{"a/b/#", "a", false},
	{"a/+/#", "a/b", true},
	{"a/+/#", "a", false},
	{"sport/tennis/player1/#", "sport/tennis/player1", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"sport/+", "sport", false},
	{"sport/+", "sport/", true},
	{"#", "$SYS/broker/uptime", false},
	{"#", "$SYS", false},
	{"+", "$SYS", false},
	{"+/broker/uptime", "$SYS/broker/uptime", false},
	{"$SYS/#", "$SYS/broker/uptime", true},
	{"$SYS/+/uptime", "$SYS/broker/uptime", true},
	{"$SYS", "$SYS", true},
	{"+/$x", "a/$x", true}, // '$' is special only at the start of a topic
	{"a/#", "a/$x", true},
	{"/", "/", true},
	{"//", "//", true},
	{"/", "//", false},
	{"a//b", "a//b", true},
	{"a/+/b", "a//b", true},
	{"/#", "/", true},
	{"/#", "a", false},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchTests {
		if got := Match(tt.filter, tt.topic); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
		if tt.topic != "" {
			if got := refMatch(tt.filter, tt.topic); got != tt.want {
				t.Errorf("refMatch(%q, %q) = %v, want %v (the reference is wrong)", tt.filter, tt.topic, got, tt.want)
			}
		}
	}
}

func TestValidFilter(t *testing.T) {
	valid := []string{"#", "+", "a", "a/#", "+/+/#", "/", "//", "a//b", "/+", "$SYS/#", "a/+/b", "a b", "ü/+", strings.Repeat("a", maxTopicLen)}
	for _, f := range valid {
		if err := ValidFilter(f); err != nil {
			t.Errorf("ValidFilter(%q) = %v, want nil", f, err)
		}
	}
	invalid := []string{"", "a#", "#/a", "a/#/b", "##", "/#/", "a+", "+a/b", "a/b+", "++", "a/+b/c", "a\x00b", "\xff", "a/\xc3", strings.Repeat("a", maxTopicLen+1)}
	for _, f := range invalid {
		err := ValidFilter(f)
		if err == nil {
			t.Errorf("ValidFilter(%q) = nil, want an error", f)
		} else if !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("ValidFilter(%q) = %v, does not wrap ErrInvalidTopic", f, err)
		}
	}
}

func TestValidTopic(t *testing.T) {
	valid := []string{"a", "/", "a/b", "a//b", "$SYS/x", "a b", "ü", strings.Repeat("a", maxTopicLen)}
	for _, s := range valid {
		if err := ValidTopic(s); err != nil {
			t.Errorf("ValidTopic(%q) = %v, want nil", s, err)
		}
	}
	invalid := []string{"", "a/+", "+", "#", "a/#", "a#b", "\x00", "a\x00", "\xff", strings.Repeat("a", maxTopicLen+1)}
	for _, s := range invalid {
		err := ValidTopic(s)
		if err == nil {
			t.Errorf("ValidTopic(%q) = nil, want an error", s)
		} else if !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("ValidTopic(%q) = %v, does not wrap ErrInvalidTopic", s, err)
		}
	}
}

// refMatch is the MQTT 3.1.1 matching rule written the obvious way, to check Match against.
func refMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	return refLevels(strings.Split(filter, "/"), strings.Split(topic, "/"))
}

func refLevels(f, t []string) bool {
	switch {
	case len(f) == 0:
		return len(t) == 0
	case f[0] == "#":
		return true // this level and all below, or none: "a/#" matches "a"
	case len(t) == 0:
		return false
	case f[0] != "+" && f[0] != t[0]:
		return false
	}
	return refLevels(f[1:], t[1:])
}

func FuzzMatch(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.filter, tt.topic)
	}
	f.Add("a/#/b", "a/x/b")
	f.Add("a+/b", "a+/b")
	f.Add("#", "")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		got := Match(filter, topic) // whatever the input, no panic
		ferr, terr := ValidFilter(filter), ValidTopic(topic)
		if terr == nil {
			if ValidFilter(topic) != nil {
				t.Fatalf("valid topic %q is not a valid filter", topic)
			}
			if !Match(topic, topic) {
				t.Fatalf("topic %q does not match itself as a filter", topic)
			}
		}
		if ferr != nil || terr != nil {
			return
		}
		if want := refMatch(filter, topic); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", filter, topic, got, want)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	cases := []struct{ name, filter, topic string }{
		{"exact", "sensors/kitchen/temp", "sensors/kitchen/temp"},
		{"plus", "sensors/+/temp", "sensors/kitchen/temp"},
		{"hash", "sensors/#", "sensors/kitchen/temp/raw"},
		{"miss", "sensors/+/humidity", "sensors/kitchen/temp"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				Match(c.filter, c.topic)
			}
		})
	}
}
