package sink

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store"
	"github.com/moongate/moongate/sync/store/storetest"
)

// A 10-minute outage compressed 200 times: the receiver's listener is gone
// for 3s while 100k records pile up (backoff capped at 300ms instead of 1m),
// then it comes back and the backlog drains while live records keep coming.
// Everything arrives, in order, nothing is lost, resends are bounded, the
// transitions are logged once, and the rare stream is not starved by the
// bulk one.
func TestLongOutageThenRecovery(t *testing.T) {
	total := 100_000
	if testing.Short() {
		total = 20_000
	}
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	rc := newReceiver(t, func(r *request) reply {
		if r.batch.Stream == "telemetry" {
			return reply{status: http.StatusOK, delay: 2 * time.Millisecond}
		}
		return reply{status: http.StatusOK}
	})
	var logs logBuffer
	cfg := httpConfig(rc.url())
	cfg.Backoff = Backoff{Base: 5 * time.Millisecond, Cap: 300 * time.Millisecond}
	s := newSink(t, cfg, st, nil, logs.logger())
	run(t, s)
	appendN(t, st, "telemetry", 0, 10)
	appendN(t, st, "alerts", 0, 1)
	poll.Within(t, 5*time.Second, "delivery before the outage", func() bool { return s.Status().PendingRecords == 0 })

	rc.stop()
	outage := time.Now()
	// Live traffic through the outage and the recovery: 10 commits of 20
	// records every 10ms.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	live := 0
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				recs := make([]store.Append, 20)
				for i := range recs {
					recs[i] = appendRec("telemetry", fmt.Sprintf(`{"n":%d}`, 10+total+live+i))
				}
				if _, err := st.Append(ctx, recs...); err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				live += 20
			}
		}
	})
	appendN(t, st, "telemetry", 10, total)
	if d := 3*time.Second - time.Since(outage); d > 0 {
		time.Sleep(d)
	}
	during := s.Status()
	if during.State != Offline || during.PendingRecords < int64(total) || during.Lag < 2*time.Second {
		t.Errorf("during the outage: %+v", during)
	}

	rc.restart()
	recovered := time.Now()
	appendN(t, st, "alerts", 1, 1)
	poll.Within(t, 30*time.Second, "the alert delivered", func() bool { return pending(st, "cloud", "alerts") == 0 })
	if p := pending(st, "cloud", "telemetry"); p < int64(total)/10 {
		t.Errorf("the alert waited for the backlog: only %d telemetry records left when it went", p)
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	poll.Within(t, 60*time.Second, "the backlog delivered", func() bool { return s.Status().PendingRecords == 0 })
	t.Logf("%d records (+%d live) drained in %v after the outage", total, live, time.Since(recovered))

	reqs := rc.requests()
	want := uint64(10 + total + live)
	received := checkOrder(t, reqs, "telemetry", want)
	checkOrder(t, reqs, "alerts", 2)
	if dup := received - int(want); dup > 4*DefaultMaxRecords {
		t.Errorf("%d records received more than once", dup)
	}
	if n := logs.count("to=offline"); n != 1 {
		t.Errorf("offline logged %d times", n)
	}
	if n := logs.count("to=online"); n != 1 {
		t.Errorf("online logged %d times", n)
	}
}
