package sink

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/moongate/moongate/sync/store"
)

// CloudEvents modes of HTTPConfig.CloudEvents.
const (
	CEBatched    = "batched"    // one request per batch: application/cloudevents-batch+json
	CEStructured = "structured" // one event per request: application/cloudevents+json
	CEBinary     = "binary"     // one event per request: the data as the body, attributes as ce-* headers
)

// DefaultCEType is the CloudEvents type of a record whose stream has none configured.
const DefaultCEType = "io.moongate.record"

// CloudEventsConfig shapes the events of an HTTP sink whose Format is "cloudevents".
type CloudEventsConfig struct {
	Mode string // CEBatched (default), CEStructured or CEBinary
	// Type is the event type of every stream not in Types. Default DefaultCEType.
	Type  string
	Types map[string]string // stream -> event type
}

// Content types of the CloudEvents modes (CloudEvents JSON format §3 and §4).
const (
	ctCEBatch      = "application/cloudevents-batch+json"
	ctCEStructured = "application/cloudevents+json"
	ctJSON         = "application/json"
)

// ceEncoder writes each record as one CloudEvent 1.0 in the JSON format:
//
//	{"specversion":"1.0","id":"..","source":"moongate://gw/fn","type":"..","subject":"stream",
//	 "time":"2026-12-02T05:00:00.123Z","datacontenttype":"application/json","data":{}}
//
// It writes the JSON itself rather than through the SDK's event.Event: the
// events of a batch are appended one by one to stop at MaxBytes, at the cost
// of the SPEC §7 format, and the SDK would bring a second JSON library into
// the gateway. The tests parse every mode with the SDK and validate it.
type ceEncoder struct {
	gateway string
	typ     string // of this stream
	mode    string
	// fn and source cache the last record's function and its event source: a
	// stream's records mostly come from one function.
	fn, source string
	// ts and time cache the last record's timestamp, formatted: a backlog's records
	// come many to a millisecond.
	ts   int64
	time []byte
}

func newCEEncoder(gateway, stream string, cfg *CloudEventsConfig) *ceEncoder {
	typ := cfg.Types[stream]
	if typ == "" {
		typ = cfg.Type
	}
	return &ceEncoder{gateway: gateway, typ: typ, mode: cfg.Mode}
}

func (e *ceEncoder) body(recs []store.Record) []byte {
	b, _ := e.pack(recs, int(^uint(0)>>1))
	return b
}

// pack writes a batch (CEBatched) of events within maxBytes, at least one,
// or the one event of a structured or binary request.
func (e *ceEncoder) pack(recs []store.Record, maxBytes int) ([]byte, int) {
	switch e.mode {
	case CEBinary:
		return rawOrNull(recs[0].Data), 1
	case CEStructured:
		return e.appendEvent(make([]byte, 0, 256+len(recs[0].Data)), recs[0]), 1
	}
	b := append(make([]byte, 0, 4096), '[')
	n := 0
	for _, r := range recs {
		mark := len(b)
		if n > 0 {
			b = append(b, ',')
		}
		b = e.appendEvent(b, r)
		if n > 0 && len(b)+1 > maxBytes {
			b = b[:mark]
			break
		}
		n++
	}
	return append(b, ']'), n
}

func (e *ceEncoder) appendEvent(b []byte, r store.Record) []byte {
	b = append(b, `{"specversion":"1.0","id":`...)
	b = appendString(b, r.ID)
	if e.source == "" || r.Function != e.fn {
		e.fn, e.source = r.Function, ceSource(e.gateway, r.Function)
	}
	b = append(b, `,"source":`...)
	b = appendString(b, e.source)
	b = append(b, `,"type":`...)
	b = appendString(b, e.typ)
	b = append(b, `,"subject":`...)
	b = appendString(b, r.Stream)
	if e.time == nil || r.TS != e.ts {
		e.ts, e.time = r.TS, time.UnixMilli(r.TS).UTC().AppendFormat(e.time[:0], time.RFC3339Nano)
	}
	b = append(b, `,"time":"`...)
	b = append(b, e.time...)
	b = append(b, `","datacontenttype":"application/json","data":`...)
	// The outbox holds JSON (what functions emit and return, dead letters): appended
	// as it is, as the Moongate format does.
	if len(r.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, r.Data...)
	}
	return append(b, '}')
}

// ceSource is the event source: moongate://{gateway}/{function}.
func ceSource(gateway, function string) string {
	return "moongate://" + url.PathEscape(gateway) + "/" + url.PathEscape(function)
}

// ceHeaders sets the ce-* headers of a binary-mode request for r (CloudEvents
// HTTP binding §3.1.3).
func (e *ceEncoder) ceHeaders(h http.Header, r store.Record) {
	h["Ce-Specversion"] = []string{"1.0"}
	h["Ce-Id"] = []string{ceHeaderValue(r.ID)}
	h["Ce-Source"] = []string{ceHeaderValue(ceSource(e.gateway, r.Function))}
	h["Ce-Type"] = []string{ceHeaderValue(e.typ)}
	h["Ce-Subject"] = []string{ceHeaderValue(r.Stream)}
	h["Ce-Time"] = []string{time.UnixMilli(r.TS).UTC().Format(time.RFC3339Nano)}
}

// ceHeaderValue percent-encodes what the HTTP binding (§3.1.3.2) requires:
// space, '"', '%' and every byte outside printable ASCII.
func ceHeaderValue(s string) string {
	const hex = "0123456789ABCDEF"
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '%' {
			if sb.Len() == 0 {
				sb.WriteString(s[:i])
			}
			sb.WriteByte('%')
			sb.WriteByte(hex[c>>4])
			sb.WriteByte(hex[c&15])
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte(c)
		}
	}
	if sb.Len() == 0 {
		return s
	}
	return sb.String()
}
