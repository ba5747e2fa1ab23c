package luafn

import (
	"fmt"
	"time"
)

// Limits bounds one function. Every field's zero value means its default, so Limits{} is
// a valid configuration. Each bound is checked while the function runs, never only after:
// a bound that trips stops the invocation with an *InvokeError naming it, and the VM that
// ran it is discarded and replaced.
type Limits struct {
	// Timeout is the wall time of one invocation (default 100ms). A function that runs
	// past it is stopped within 1024 instructions, or within a few thousand steps of a
	// builtin such as pattern matching.
	Timeout time.Duration
	// Memory bounds what one VM holds: the live strings, tables and closures reachable
	// from it, including globals kept from earlier invocations (default 16 MiB).
	// Operations that would allocate past it are refused before they allocate.
	Memory int64
	// Concurrency is the number of warm VMs, that is how many invocations of the
	// function may run at once (default 1).
	Concurrency int
	// CallDepth bounds nested calls: recursion, metamethods, pcall (default 200).
	CallDepth int
	// Registry bounds the value stack in slots of 16 bytes: locals, temporaries,
	// arguments, unpack'ed values (default 65536).
	Registry int
	// PatternSteps bounds the work of string.find, match, gmatch and gsub in one
	// invocation, in matcher steps (default 1 million: about 10ms of matching on a PC,
	// enough for simple patterns over a few hundred KiB). It stops backtracking bombs
	// with a clear error, independent of the machine's speed.
	PatternSteps int64

	// LogLines bounds the log.* and print lines one invocation keeps (default 100);
	// the rest are dropped and counted.
	LogLines int
	// LogRate bounds the lines of the function, over all its invocations, reported
	// through Host.OnLog in one second (default 100). A function that logs in a loop
	// then costs the gateway and its consoles a bounded stream; what is over is
	// dropped, counted, and reported as one line saying how many. The budget belongs to
	// the deployed version: a redeploy starts with a fresh one.
	LogRate int
	// LogLineBytes cuts longer lines, marking the cut with "..." (default 4 KiB).
	LogLineBytes int
}

// Defaults.
const (
	DefaultTimeout      = 100 * time.Millisecond
	DefaultMemory       = 16 << 20
	DefaultConcurrency  = 1
	DefaultCallDepth    = 200
	DefaultRegistry     = 64 << 10
	DefaultPatternSteps = 1_000_000
	DefaultLogLines     = 100
	DefaultLogRate      = 100
	DefaultLogLineBytes = 4 << 10
)

// Smallest values accepted: below them a function cannot even build its event.
const (
	minMemory   = 256 << 10
	minRegistry = 1024
	minTimeout  = time.Millisecond
)

// withDefaults returns l with every zero field set to its default, or an error naming
// the first field that is out of range.
func (l Limits) withDefaults() (Limits, error) {
	if l.Timeout == 0 {
		l.Timeout = DefaultTimeout
	}
	if l.Memory == 0 {
		l.Memory = DefaultMemory
	}
	if l.Concurrency == 0 {
		l.Concurrency = DefaultConcurrency
	}
	if l.CallDepth == 0 {
		l.CallDepth = DefaultCallDepth
	}
	if l.Registry == 0 {
		l.Registry = DefaultRegistry
	}
	if l.PatternSteps == 0 {
		l.PatternSteps = DefaultPatternSteps
	}
	if l.LogLines == 0 {
		l.LogLines = DefaultLogLines
	}
	if l.LogRate == 0 {
		l.LogRate = DefaultLogRate
	}
	if l.LogLineBytes == 0 {
		l.LogLineBytes = DefaultLogLineBytes
	}
	switch {
	case l.Timeout < minTimeout:
		return l, fmt.Errorf("timeout %v: must be at least %v", l.Timeout, minTimeout)
	case l.Memory < minMemory:
		return l, fmt.Errorf("memory %d: must be at least %d bytes", l.Memory, minMemory)
	case l.Concurrency < 1 || l.Concurrency > 1024:
		return l, fmt.Errorf("concurrency %d: must be 1 to 1024", l.Concurrency)
	case l.CallDepth < 10 || l.CallDepth > 10000:
		return l, fmt.Errorf("call depth %d: must be 10 to 10000", l.CallDepth)
	case l.Registry < minRegistry || l.Registry > 1<<24:
		return l, fmt.Errorf("registry %d: must be %d to %d slots", l.Registry, minRegistry, 1<<24)
	case l.PatternSteps < 1000:
		return l, fmt.Errorf("pattern steps %d: must be at least 1000", l.PatternSteps)
	case l.LogLines < 1 || l.LogLines > 10000:
		return l, fmt.Errorf("log lines %d: must be 1 to 10000", l.LogLines)
	case l.LogRate < 1 || l.LogRate > 100000:
		return l, fmt.Errorf("log rate %d: must be 1 to 100000 lines a second", l.LogRate)
	case l.LogLineBytes < 64 || l.LogLineBytes > 1<<20:
		return l, fmt.Errorf("log line bytes %d: must be 64 to %d", l.LogLineBytes, 1<<20)
	}
	return l, nil
}
