package luafn

import (
	"encoding/json"
	"log/slog"
	"time"
)

// Event is what a function is invoked with; it becomes the Lua table `event` (SPEC §4).
type Event struct {
	ID      string // unique, sortable
	Source  string // mqtt, gpio, sensor, timer, http, console
	TS      int64  // unix ms
	Topic   string
	Payload []byte // event.payload is a table when this is a JSON object or array, else the string; event.raw is always the string
	QoS     byte

	// GPIO edges.
	Pin       string
	Level     int
	Edge      string
	Coalesced int // edges folded into this one by debouncing

	// Sensor readings.
	Sensor string
	Values map[string]float64
}

// Result is a successful invocation, or the logs and duration of a failed one.
type Result struct {
	Value    json.RawMessage // what handle returned, as JSON (SPEC §4 conversions); nil when it returned nil
	Effects  Effects         // empty when the invocation failed
	Logs     []LogEntry
	Duration time.Duration
}

// Effects are what an invocation asks of the outside world. Nothing has happened yet:
// the caller commits KV and Emits atomically, then does Publishes and PinWrites.
type Effects struct {
	KV        []KVOp // in program order
	Emits     []Emit
	Publishes []Publish
	PinWrites []PinWrite
}

// Empty reports whether the invocation asked for nothing.
func (e *Effects) Empty() bool {
	return len(e.KV) == 0 && len(e.Emits) == 0 && len(e.Publishes) == 0 && len(e.PinWrites) == 0
}

// KVOpKind is what a KVOp does.
type KVOpKind uint8

const (
	KVSet  KVOpKind = iota // Value is JSON; TTL > 0 expires it
	KVDel                  // delete Key
	KVIncr                 // add Delta to the number at Key (missing: 0), atomically at commit
)

func (k KVOpKind) String() string {
	switch k {
	case KVSet:
		return "set"
	case KVDel:
		return "del"
	case KVIncr:
		return "incr"
	}
	return "unknown"
}

// KVOp is one write to the function's KV namespace.
type KVOp struct {
	Op    KVOpKind
	Key   string
	Value []byte // JSON, for KVSet
	TTL   time.Duration
	Delta float64 // for KVIncr
}

// Emit is a record for the outbox stream Stream.
type Emit struct {
	Stream string
	Data   []byte // JSON
}

// Publish is an MQTT message to send after the commit.
type Publish struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// PinWrite sets an output pin after the commit.
type PinWrite struct {
	Pin   string
	Level int
}

// LogEntry is one log.* or print call.
type LogEntry struct {
	Level   slog.Level
	Message string
	Time    time.Time
	// File and Line are where in the function's source the call was made; empty and 0
	// when the caller is not Lua code of the function (a tail call, a drop report).
	File string
	Line int
}

// LogRecord is what Host.OnLog receives: a log line of a running invocation, as it is
// made, or a report of lines dropped.
type LogRecord struct {
	Function string
	Version  int
	// EventID is the event of the invocation that logged the line; for a drop report,
	// the invocation the dropped lines came from, or empty when they came from several.
	EventID string
	LogEntry
	// Dropped, when above zero, makes the record a drop report: that many lines were
	// dropped (over Limits.LogLines or Limits.LogRate) since the last report, and Message
	// says so.
	Dropped int
}

// KVReader reads the committed state of a function's KV namespace ns. Values are JSON.
type KVReader interface {
	KVGet(ns, key string) (value []byte, ok bool, err error)
	// KVKeys returns up to limit keys starting with prefix, in order.
	KVKeys(ns, prefix string, limit int) ([]string, error)
}

// PinReader reads GPIO input levels (0 or 1).
type PinReader interface {
	ReadPin(pin string) (int, error)
}

// Host is what functions may reach outside their VM. Its zero value works: each
// missing part makes the matching Lua calls fail with a clear error.
type Host struct {
	KV           KVReader     // nil: kv.get and kv.keys fail (writes are only recorded)
	Store        StoreLimits  // what the store behind the effects refuses; checked at the call
	Pins         PinReader    // nil: gpio.read fails
	WritablePins []string     // the pins gpio.write may drive; nil: none
	GatewayID    string       // gateway.id
	Logger       *slog.Logger // function logs are also written here at debug level; nil: discarded
	// OnLog receives every log line of an invocation as it is made, within
	// Limits.LogRate, and the reports of the lines dropped (see LogRecord). It runs on
	// the invoking goroutine, or on a timer's for a late drop report, and must not
	// block. Nil: lines are only kept in Result.Logs.
	OnLog func(LogRecord)
	Now   func() time.Time
}

// StoreLimits are the sizes past which the store refuses a commit. The host calls check
// them at once, so that the invocation fails where the function went wrong, with its
// retries and its dead letter, instead of at commit, where no retry can fix it. A zero
// field is not checked.
type StoreLimits struct {
	KeyBytes    int // a kv key
	StreamBytes int // a cloud.emit stream name
	ValueBytes  int // a kv value or an emitted record, as JSON
}

func (h *Host) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}
