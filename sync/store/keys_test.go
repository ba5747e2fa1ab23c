package store

import (
	"bytes"
	"testing"

	"github.com/oklog/ulid/v2"
)

// Records and heads come back from disk: a damaged value must give an error,
// never a panic, and a good one must round-trip.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{}, "fn", []byte(`{"t":1}`), int64(1700000000000))
	f.Add(make([]byte, 16), "", []byte(`1`), int64(-1))
	f.Add(bytes.Repeat([]byte{0xff}, 40), "x", []byte(`[]`), int64(0))
	f.Fuzz(func(t *testing.T, raw []byte, fn string, data []byte, ts int64) {
		var r Record
		_ = decodeRecord(raw, &r)
		_, _ = decodeHead(raw)

		id := ulid.Make()
		enc := encodeRecord(id, Append{Function: fn, Data: data, TS: ts})
		var got Record
		if err := decodeRecord(enc, &got); err != nil {
			t.Fatalf("decode of an encoded record: %v", err)
		}
		if got.ID != id.String() || got.Function != fn || !bytes.Equal(got.Data, data) || got.TS != ts {
			t.Fatalf("round trip: got %+v", got)
		}
	})
}

func TestRecKeyOrder(t *testing.T) {
	a := recKey("s", 9, 5, 100)
	b := recKey("s", 10, 1, 1)
	if bytes.Compare(a, b) >= 0 {
		t.Error("record keys do not sort by seq")
	}
	if !bytes.HasPrefix(a, recSeekKey("s", 9)) || bytes.HasPrefix(recKey("s2", 1, 1, 1), recPrefix("s")) {
		t.Error("record prefixes overlap")
	}
	seq, ms, size, ok := parseRecKey(a, len(recPrefix("s")))
	if !ok || seq != 9 || ms != 5 || size != 100 {
		t.Errorf("parse = %d %d %d %v", seq, ms, size, ok)
	}
}
