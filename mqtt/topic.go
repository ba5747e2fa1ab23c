package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxTopicLen is the longest topic name or filter MQTT can encode (a 16-bit length prefix).
const maxTopicLen = 65535

// ErrInvalidTopic is wrapped by every error of ValidTopic and ValidFilter.
var ErrInvalidTopic = errors.New("invalid topic")

// Match reports whether the topic name matches the topic filter, with MQTT 3.1.1
// semantics: '+' matches exactly one level (which may be empty), '#' matches the parent
// level and any number of levels below it, and a filter that starts with a wildcard does
// not match a topic that starts with '$' ([MQTT-4.7.2-1]).
//
// Match expects a filter accepted by ValidFilter and a topic accepted by ValidTopic; for
// other input the result is unspecified, but Match never panics. It does not allocate.
func Match(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		var fl, tl string
		var fmore, tmore bool
		fl, filter, fmore = cutLevel(filter)
		if fl == "#" {
			return !fmore
		}
		tl, topic, tmore = cutLevel(topic)
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case fmore && tmore:
			continue
		case fmore: // the topic ends here: only a trailing "#" also matches its parent level
			return filter == "#"
		default:
			return !tmore
		}
	}
}

// cutLevel splits s at its first '/': the level before it, the rest after it, and whether
// there was a '/' at all.
func cutLevel(s string) (level, rest string, more bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// ValidTopic reports why topic cannot be published to, or nil: it must be 1 to 65535
// bytes of UTF-8 without U+0000 and without the wildcards '+' and '#'.
func ValidTopic(topic string) error {
	if err := validString("topic", topic); err != nil {
		return err
	}
	if i := strings.IndexAny(topic, "+#"); i >= 0 {
		return fmt.Errorf("%w %q: wildcard %q in a topic name", ErrInvalidTopic, topic, topic[i])
	}
	return nil
}

// ValidFilter reports why filter cannot be subscribed to, or nil: it must be 1 to 65535
// bytes of UTF-8 without U+0000; '+' must be a whole level; '#' must be a whole level
// and the last one.
func ValidFilter(filter string) error {
	if err := validString("topic filter", filter); err != nil {
		return err
	}
	rest, more := filter, true
	for more {
		var level string
		level, rest, more = cutLevel(rest)
		switch {
		case level == "#" && more:
			return fmt.Errorf("%w %q: '#' must be the last level", ErrInvalidTopic, filter)
		case level != "#" && strings.IndexByte(level, '#') >= 0:
			return fmt.Errorf("%w %q: '#' must be a whole level", ErrInvalidTopic, filter)
		case level != "+" && strings.IndexByte(level, '+') >= 0:
			return fmt.Errorf("%w %q: '+' must be a whole level", ErrInvalidTopic, filter)
		}
	}
	return nil
}

func validString(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", ErrInvalidTopic, what)
	case len(s) > maxTopicLen:
		return fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrInvalidTopic, what, len(s), maxTopicLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w %q: %s is not valid UTF-8", ErrInvalidTopic, s, what)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w %q: %s contains U+0000", ErrInvalidTopic, s, what)
	}
	return nil
}
