package console

import (
	"fmt"
	"net/url"
	"strings"
)

// filter is a client's server-side selection, from the query string. A set field drops
// the messages that do not carry it: ?function=x passes no events.
type filter struct {
	types    uint8 // bit set of typeBits; zero means every type
	function string
	topic    string
}

var typeBits = map[string]uint8{
	TypeEvent:      1 << 0,
	TypeInvocation: 1 << 1,
	TypeLog:        1 << 2,
	TypeSync:       1 << 3,
	TypeSensor:     1 << 4,
	TypeFirmware:   1 << 5,
}

func parseFilter(q url.Values, canMatchTopic bool) (filter, error) {
	var f filter
	for _, list := range q["types"] {
		for _, t := range strings.Split(list, ",") {
			t = strings.TrimSpace(t)
			if t == "" || t == TypeSkipped {
				continue
			}
			bit, ok := typeBits[t]
			if !ok {
				return filter{}, fmt.Errorf("unknown message type %q in types", t)
			}
			f.types |= bit
		}
	}
	f.function = q.Get("function")
	f.topic = q.Get("topic")
	if f.topic != "" && !canMatchTopic {
		return filter{}, fmt.Errorf("topic filters are not supported here")
	}
	return f, nil
}

func (f *filter) accepts(typ, function, topic string, match func(filter, topic string) bool) bool {
	if f.types != 0 && f.types&typeBits[typ] == 0 {
		return false
	}
	if f.function != "" && f.function != function {
		return false
	}
	if f.topic != "" && (topic == "" || !match(f.topic, topic)) {
		return false
	}
	return true
}
