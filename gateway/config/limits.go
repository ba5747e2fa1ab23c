package config

import (
	"fmt"
	"time"

	"github.com/moongate/moongate/luafn"
)

// Function defaults: what a function gets when its entry (or a deploy through the API)
// leaves a setting out. The config and the API both take them from here; timeout and
// memory are the sandbox's own (luafn owns them). Concurrency is the gateway's: two warm
// VMs, so that one slow event does not hold every other key (luafn alone gives one).
const (
	DefaultFunctionTimeout     = luafn.DefaultTimeout
	DefaultFunctionMemory      = Size(luafn.DefaultMemory)
	DefaultFunctionConcurrency = 2
	DefaultFunctionRetries     = 3
)

// Ceilings are the most any deploy may ask for, through the config, the API or the CLI:
// gateway.ceilings, with defaults for a Raspberry Pi, so that no function can be given a
// bound the board cannot honour (memory: 1000GiB) or one that never ends (timeout:
// 100000h).
type Ceilings struct {
	Timeout     time.Duration `yaml:"timeout"`     // default 30s
	Memory      Size          `yaml:"memory"`      // default 128MiB
	Concurrency int           `yaml:"concurrency"` // default 32
	Retries     int           `yaml:"retries"`     // default 100
}

func (c *Ceilings) withDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Memory == 0 {
		c.Memory = 128 << 20
	}
	if c.Concurrency == 0 {
		c.Concurrency = 32
	}
	if c.Retries == 0 {
		c.Retries = 100
	}
}

// Loops bound what functions that trigger each other can do: gateway.loops. A message a
// function publishes on the embedded broker carries the functions whose invocations led
// to it; past MaxHops functions a publish is refused, so a function that triggers itself,
// or two that trigger each other, stop there. An external broker cannot carry that chain:
// there PublishRate, the local publishes per second of one function, is what slows a
// loop down (a publish over it waits: the function is slowed, nothing is dropped).
type Loops struct {
	MaxHops     int     `yaml:"max_hops"`     // default 8
	PublishRate float64 `yaml:"publish_rate"` // per function, with a burst of as many; default 2000; -1: no limit
}

func (l *Loops) withDefaults() {
	if l.MaxHops == 0 {
		l.MaxHops = 8
	}
	if l.PublishRate == 0 {
		l.PublishRate = 2000
	}
}

// KVQuota is what one function's KV may hold: gateway.kv_quota. A commit past it fails,
// for that function alone (retried, then dead-lettered with the reason), so that one
// careless function cannot fill the disk under the others.
type KVQuota struct {
	Keys  int64 `yaml:"keys"`  // default 100000
	Bytes Size  `yaml:"bytes"` // keys and values; default 64MiB
}

func (q *KVQuota) withDefaults() {
	if q.Keys == 0 {
		q.Keys = 100000
	}
	if q.Bytes == 0 {
		q.Bytes = 64 << 20
	}
}

// DefaultVersionHistory is how many versions of a function are kept by default: enough
// to roll back through a day of edits, few enough that 500 KB sources stay small on disk.
const DefaultVersionHistory = 50

// maxVersionHistory bounds gateway.version_history.
const maxVersionHistory = 10000

// maxHops bounds gateway.loops.max_hops: the chain travels with every message.
const maxHops = 64

// minFunctionMemory is the least memory a function may have: its VM and the sandbox alone
// take some hundreds of KiB.
const minFunctionMemory = Size(1 << 20)

// FieldError is a refused setting of a function: Field is its key (timeout, memory...).
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// CheckFunctionLimits checks a function's settings against the rules and the gateway's
// ceilings: the config's functions: entries and the API's deploys go through it alike.
// What a function does with a QoS 0 event (or a sensor reading, edge or tick) that arrives
// while it holds as many events as it may (1024): OverflowBlock holds the source (a
// device waits; nothing is lost), OverflowDropOldest drops the oldest such event queued,
// of the same key if there is one, for telemetry where the latest value wins. QoS 1
// events are never dropped.
const (
	OverflowBlock      = "block"
	OverflowDropOldest = "drop_oldest"
)

// CheckOverflow checks a function's overflow; "" is OverflowBlock.
func CheckOverflow(s string) error {
	switch s {
	case "", OverflowBlock, OverflowDropOldest:
		return nil
	}
	return fmt.Errorf("%q is not %s or %s", s, OverflowBlock, OverflowDropOldest)
}

func (c Ceilings) CheckFunctionLimits(timeout time.Duration, memory Size, concurrency, retries int) []*FieldError {
	var errs []*FieldError
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if timeout <= 0 || timeout > c.Timeout {
		add("timeout", "%v is not between 1ms and %v (gateway.ceilings.timeout)", timeout, c.Timeout)
	}
	if memory < minFunctionMemory || memory > c.Memory {
		add("memory", "%s is not between %s and %s (gateway.ceilings.memory)", memory, minFunctionMemory, c.Memory)
	}
	if concurrency < 1 || concurrency > c.Concurrency {
		add("concurrency", "%d is not between 1 and %d (gateway.ceilings.concurrency)", concurrency, c.Concurrency)
	}
	if retries < 0 || retries > c.Retries {
		add("retries", "%d is not between 0 and %d (gateway.ceilings.retries)", retries, c.Retries)
	}
	return errs
}
