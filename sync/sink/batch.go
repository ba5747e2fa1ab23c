package sink

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/moongate/moongate/sync/store"
)

// A batch is a run of consecutive records of one stream, delivered as one
// HTTP request or as one PUBLISH per record.
type batch struct {
	recs []store.Record
	body []byte // the HTTP body, uncompressed; nil for MQTT
	done chan result
}

func newBatch(recs []store.Record, body []byte) *batch {
	return &batch{recs: recs, body: body, done: make(chan result, 1)}
}

func (b *batch) first() uint64 { return b.recs[0].Seq }
func (b *batch) last() uint64  { return b.recs[len(b.recs)-1].Seq }

// key is the Idempotency-Key: the ids of the first and last record.
func (b *batch) key() string { return b.recs[0].ID + "-" + b.recs[len(b.recs)-1].ID }

// A bodyEncoder writes the HTTP bodies of one stream's batches.
type bodyEncoder interface {
	// body is the body of exactly recs.
	body(recs []store.Record) []byte
	// pack is the body of as many of recs as fit in maxBytes (at least
	// one), and how many that is.
	pack(recs []store.Record, maxBytes int) ([]byte, int)
}

// split halves a rejected batch to isolate the bad record.
func (b *batch) split(enc bodyEncoder) (*batch, *batch) {
	m := len(b.recs) / 2
	l, r := b.recs[:m:m], b.recs[m:]
	if enc == nil {
		return newBatch(l, nil), newBatch(r, nil)
	}
	return newBatch(l, enc.body(l)), newBatch(r, enc.body(r))
}

// encoder writes the SPEC §7 body:
//
//	{"gateway":"g","stream":"s","records":[{"id":"..","seq":1,"ts":2,"function":"f","data":{}}]}
//
// by hand, because the body is built record by record to stop at MaxBytes.
type encoder struct {
	head []byte // {"gateway":..,"stream":..,"records":[
}

func newEncoder(gateway, stream string) *encoder {
	h := []byte(`{"gateway":`)
	h = appendString(h, gateway)
	h = append(h, `,"stream":`...)
	h = appendString(h, stream)
	h = append(h, `,"records":[`...)
	return &encoder{head: h}
}

// tail closes the body.
const tail = "]}"

func (e *encoder) body(recs []store.Record) []byte {
	b := append([]byte(nil), e.head...)
	for i, r := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendRecord(b, r)
	}
	return append(b, tail...)
}

// pack appends records to a body while it stays within maxBytes (at least
// one record) and returns the body and how many records it holds.
func (e *encoder) pack(recs []store.Record, maxBytes int) ([]byte, int) {
	b := append(make([]byte, 0, 4096), e.head...)
	n := 0
	for _, r := range recs {
		mark := len(b)
		if n > 0 {
			b = append(b, ',')
		}
		b = appendRecord(b, r)
		if n > 0 && len(b)+len(tail) > maxBytes {
			b = b[:mark]
			break
		}
		n++
	}
	return append(b, tail...), n
}

func appendRecord(b []byte, r store.Record) []byte {
	b = append(b, '{')
	return append(appendRecordFields(b, r), '}')
}

// appendRecordFields appends "id":..,"seq":..,"ts":..,"function":..,"data":..
func appendRecordFields(b []byte, r store.Record) []byte {
	b = append(b, `"id":`...)
	b = appendString(b, r.ID)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, r.TS, 10)
	b = append(b, `,"function":`...)
	b = appendString(b, r.Function)
	b = append(b, `,"data":`...)
	if len(r.Data) == 0 {
		return append(b, "null"...)
	}
	return append(b, r.Data...)
}

// appendString appends s as a JSON string. Ids and names are plain ASCII, so
// the common case copies; anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
