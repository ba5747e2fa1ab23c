// Package poll waits, in tests, for a condition that other goroutines or processes make
// true, instead of sleeping for a guessed time: a test is as fast as the machine allows
// and fails with what it waited for.
package poll

import (
	"testing"
	"time"
)

// DefaultTimeout is Eventually's: long enough for a loaded 2-core CI machine, short
// enough that a condition that never holds fails the test soon.
const DefaultTimeout = 10 * time.Second

// interval is how often cond is checked.
const interval = 5 * time.Millisecond

// Eventually polls cond until it holds, and fails t when it does not within
// DefaultTimeout.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, DefaultTimeout, what, cond)
}

// Within polls cond until it holds, and fails t when it does not within timeout.
func Within(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}
