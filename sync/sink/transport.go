package sink

import (
	"context"
	"errors"
	"time"
)

// A transport delivers batches to one receiver. The HTTP sink and the MQTT
// bridge are the two; lanes do not know which one they drive.
type transport interface {
	// open returns an ordered pipe to the receiver for one stream's lane.
	open(ctx context.Context, stream string) (pipe, error)
	// keyed reports whether the receiver sees batch boundaries (HTTP's
	// Idempotency-Key), which must then be the same after a restart.
	keyed() bool
	// run does the transport's own work (the MQTT connection) until ctx
	// ends and every pipe is closed.
	run(ctx context.Context)
}

// A pipe is one ordered channel to the receiver: outcomes arrive on each
// batch's done channel, and a batch is never acknowledged before one that was
// sent before it.
type pipe interface {
	// send hands b over; it blocks only for flow control. A pipe that fails
	// completes b (and every batch still outstanding) with an error.
	send(ctx context.Context, b *batch)
	// window is how many batches may be outstanding on the pipe now.
	window() int
	// alive is false once the pipe cannot deliver anything more.
	alive() bool
	// close releases the pipe; outstanding batches complete with an error.
	close()
}

// An outcome is what a lane does next with a batch.
type outcome int

const (
	delivered   outcome = iota // acknowledged: move the cursor
	unreachable                // no answer: back off, state offline
	retry                      // answered, try later: back off, state backing_off
	rejected                   // the content was refused: isolate the bad record
	resend                     // not delivered through no fault of the receiver: resend now
)

type result struct {
	outcome    outcome
	err        error
	retryAfter time.Duration // from Retry-After; 0 means use backoff
	commands   []command
}

// Errors a pipe completes batches with.
var (
	errPipeClosed = errors.New("connection closed before the response")
	errPeerClosed = errors.New("receiver closed the connection after the previous response")
)

// awaitReady waits up to timeout for a shared connection to be up (ready
// closed), for a lane that wants a pipe on it.
func awaitReady(ctx context.Context, ready <-chan struct{}, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return errNotConnected
	}
}
