package throttle

import (
	"testing"
	"time"
)

func TestFailures(t *testing.T) {
	f := New(3, time.Minute)
	now := time.Unix(1000, 0)
	f.now = func() time.Time { return now }
	if first := f.Fail("a"); !first {
		t.Fatal("the first failure of a window is to be logged")
	}
	if f.Fail("a") || f.Blocked("a") {
		t.Fatal("two failures of three")
	}
	f.Fail("a")
	if !f.Blocked("a") || f.Blocked("b") {
		t.Fatal("a is blocked after three, b is not")
	}
	now = now.Add(time.Minute)
	if f.Blocked("a") || !f.Fail("a") {
		t.Fatal("a new window starts afresh")
	}
}
