package luafn

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// ---- log and print

func (v *vm) logFuncs() map[string]lua.LGFunction {
	at := func(level slog.Level) lua.LGFunction {
		return func(L *lua.LState) int {
			v.logAt(level)
			return 0
		}
	}
	return map[string]lua.LGFunction{
		"debug": at(slog.LevelDebug),
		"info":  at(slog.LevelInfo),
		"warn":  at(slog.LevelWarn),
		"error": at(slog.LevelError),
	}
}

// logAt logs the call's arguments as Lua's print writes them: each converted as
// tostring does, separated by tabs. The line is kept in the invocation's Result (up to
// Limits.LogLines) and reported live through Host.OnLog (within Limits.LogRate).
func (v *vm) logAt(level slog.Level) {
	L := v.L
	maxBytes := v.limits.LogLineBytes
	var b strings.Builder
	for i := 1; i <= L.GetTop(); i++ {
		if i > 1 {
			b.WriteByte('\t')
		}
		switch x := L.Get(i).(type) {
		case lua.LString:
			b.WriteString(string(x))
		case lua.LNumber:
			b.WriteString(x.String())
		default:
			b.WriteString(L.ToStringMeta(x).String()) // __tostring runs under the bounds
		}
		if b.Len() > maxBytes {
			break
		}
	}
	msg := b.String()
	if len(msg) > maxBytes {
		msg = strings.ToValidUTF8(msg[:maxBytes], "") + "..."
	}
	if lg := v.host.Logger; lg != nil && lg.Enabled(context.Background(), slog.LevelDebug) {
		lg.Debug(msg, "lua_level", level.String())
	}
	inv := v.inv
	if inv == nil {
		return
	}
	if len(inv.logs) >= v.limits.LogLines {
		inv.dropped++
		return
	}
	v.hold(int64(len(msg)) + effectOverhead)
	e := LogEntry{Level: level, Message: msg, Time: v.host.now()}
	e.File, e.Line = v.callerPosition()
	inv.logs = append(inv.logs, e)
	if v.host.OnLog == nil {
		return
	}
	if !v.logs.take(e.Time) {
		inv.unsent++
		return
	}
	spec := &v.prog.spec
	v.host.OnLog(LogRecord{Function: spec.Name, Version: spec.Version, EventID: inv.eventID, LogEntry: e})
}

// callerPosition returns the file and line of the Lua code that called the running
// builtin.
func (v *vm) callerPosition() (string, int) {
	dbg, ok := v.L.GetStack(1)
	if !ok {
		return "", 0
	}
	if _, err := v.L.GetInfo("Sl", dbg, lua.LNil); err != nil || dbg.CurrentLine <= 0 {
		return "", 0
	}
	return dbg.Source, dbg.CurrentLine
}

// endLogs closes the invocation's logs: a line saying how many were dropped goes into
// its Result, and the lines it did not report live go to the function's next drop
// report.
func (v *vm) endLogs(res *Result) {
	inv := v.inv
	if inv.dropped > 0 {
		res.Logs = append(res.Logs, LogEntry{Level: slog.LevelWarn, Time: v.host.now(),
			Message: fmt.Sprintf("%d more %s dropped: over %d in one invocation", inv.dropped, logLines(inv.dropped), v.limits.LogLines)})
	}
	if v.host.OnLog != nil {
		v.logs.drop(inv.dropped+inv.unsent, inv.eventID)
	}
}

// logLines agrees with the count n.
func logLines(n int) string {
	if n == 1 {
		return "log line"
	}
	return "log lines"
}

// logBudget enforces Limits.LogRate for one function, over all its VMs: the lines
// reported live in the current one-second window, and the lines dropped since the last
// drop report. A report goes out at most once a second, at the end of an invocation
// that dropped lines, or from a timer when one went out less than a second before; so
// a function that logs in a loop costs at most LogRate lines and one report a second.
type logBudget struct {
	onLog    func(LogRecord)
	function string
	version  int
	limits   Limits
	now      func() time.Time
	// after runs f once d has passed and returns what cancels it: time.AfterFunc's,
	// unless a test holds the timer in its hand.
	after func(d time.Duration, f func()) (stop func() bool)

	mu         sync.Mutex
	window     time.Time // start of the current one-second window
	used       int       // lines reported in it
	pending    int       // lines dropped since the last report
	from       string    // the event the pending lines came from; "" when several
	lastReport time.Time
	cancel     func() bool // stops the timer of a report waiting for its second; nil: none
	closed     bool
}

func afterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// take reports whether one more line may be reported at now.
func (b *logBudget) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.window) >= time.Second {
		b.window, b.used = now, 0
	}
	if b.used >= b.limits.LogRate {
		return false
	}
	b.used++
	return true
}

// drop adds n lines dropped by the invocation of eventID to the next report, and sends
// the report when one is due.
func (b *logBudget) drop(n int, eventID string) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == 0 {
		b.from = eventID
	} else if b.from != eventID {
		b.from = ""
	}
	b.pending += n
	if b.closed {
		return
	}
	now := b.now()
	if wait := time.Second - now.Sub(b.lastReport); wait > 0 {
		if b.cancel == nil {
			b.cancel = b.after(wait, b.late)
		}
		return
	}
	b.reportLocked(now)
}

// late sends the report that waited for its turn.
func (b *logBudget) late() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cancel = nil
	if !b.closed {
		b.reportLocked(b.now())
	}
}

// close sends what is still pending; nothing is reported after it.
func (b *logBudget) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	if b.cancel != nil {
		b.cancel()
		b.cancel = nil
	}
	b.reportLocked(b.now())
}

// reportLocked sends the drop report. The callback runs under b.mu, so no report
// overtakes another and none comes after close; Host.OnLog must not block anyway.
func (b *logBudget) reportLocked(now time.Time) {
	if b.pending == 0 || b.onLog == nil {
		return
	}
	n := b.pending
	msg := fmt.Sprintf("%d %s dropped (over %d per invocation or %d a second)", n, logLines(n),
		b.limits.LogLines, b.limits.LogRate)
	b.onLog(LogRecord{Function: b.function, Version: b.version, EventID: b.from, Dropped: n,
		LogEntry: LogEntry{Level: slog.LevelWarn, Message: msg, Time: now}})
	b.pending, b.from, b.lastReport = 0, "", now
}
