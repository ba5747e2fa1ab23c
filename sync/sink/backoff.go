package sink

import (
	"math/rand/v2"
	"time"
)

// delay is the wait before retry number n (0-based) in a row: full jitter,
// a uniform random time in [0, min(Cap, Base*2^n)). Full jitter spreads the
// retries of many gateways coming back after the same outage instead of
// having them hit the receiver in waves (AWS Architecture Blog, "Exponential
// Backoff And Jitter").
func (b Backoff) delay(n int) time.Duration {
	ceil := b.Cap
	if n < 32 && b.Base<<n > 0 && b.Base<<n < b.Cap {
		ceil = b.Base << n
	}
	return time.Duration(rand.Int64N(int64(ceil)))
}
