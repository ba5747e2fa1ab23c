package gateway

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moongate/moongate/luafn"
)

// TestExecutorModel hands random bursts of events, over a few keys, from sources that
// wait or not and run inline or not, to an executor whose invocations take random short
// times, with pauses longer and shorter than workerLinger between bursts, and checks the
// executor's promises against what a model expects: every event runs exactly once
// (none is dropped: the queue never fills), events of a key run in order and never two
// at once, and at the end no worker is left and stop returns at once.
func TestExecutorModel(t *testing.T) {
	before := runtime.NumGoroutine()
	for seed := range uint64(2) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 3))
			var mu sync.Mutex
			ran := map[string][]int{} // key -> the events that ran, in order
			running := map[string]bool{}
			var fail string
			process := func(_ context.Context, _ func() *version, tk *task) error {
				var n int
				fmt.Sscan(tk.ev.ID, &n)
				mu.Lock()
				if running[tk.key] && fail == "" {
					fail = fmt.Sprintf("two events of %s ran at once", tk.key)
				}
				running[tk.key] = true
				mu.Unlock()
				time.Sleep(time.Duration(n%3) * 100 * time.Microsecond)
				mu.Lock()
				running[tk.key] = false
				ran[tk.key] = append(ran[tk.key], n)
				mu.Unlock()
				return nil
			}
			stopping := make(chan struct{})
			env := &executorEnv{ctx: t.Context(), stopping: stopping, pressed: func() bool { return false }, process: process,
				dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped"}, []string{"function", "reason"})}
			e := newExecutor(env, "f", func() *version { return nil }, &fnStats{})
			var done sync.WaitGroup
			srcOf := map[int]int{} // event -> the first event of its source
			var srcMu sync.Mutex
			n := 0
			for burst := range 8 {
				var sources sync.WaitGroup
				for range 1 + rng.IntN(6) { // each source sends its events in order
					key := fmt.Sprintf("k%d", rng.IntN(5))
					count := 1 + rng.IntN(40)
					s := source{wait: rng.IntN(2) == 0, inline: rng.IntN(2) == 0}
					first := n
					n += count
					srcMu.Lock()
					for id := first; id < first+count; id++ {
						srcOf[id] = first
					}
					srcMu.Unlock()
					done.Add(count)
					sources.Go(func() {
						for id := first; id < first+count; id++ {
							e.enqueue(&task{ev: &luafn.Event{ID: fmt.Sprint(id)}, key: key, done: func(error) { done.Done() }}, s)
						}
					})
				}
				sources.Wait()
				if burst%4 == 3 {
					time.Sleep(workerLinger + 200*time.Millisecond) // the idle workers end meanwhile
				} else {
					time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
				}
			}
			finished := make(chan struct{})
			go func() { done.Wait(); close(finished) }()
			select {
			case <-finished:
			case <-time.After(20 * time.Second):
				t.Fatal("events were left waiting: a ready key without a worker")
			}
			start := time.Now()
			e.stop()
			if d := time.Since(start); d > workerLinger/2 {
				t.Fatalf("stop took %v: it waited for idle workers", d)
			}
			mu.Lock()
			defer mu.Unlock()
			if fail != "" {
				t.Fatal(fail)
			}
			total := 0
			for key, ids := range ran {
				next := map[int]int{} // source -> the event it must run next
				for _, id := range ids {
					src := srcOf[id]
					want, seen := next[src]
					if !seen {
						want = src
					}
					if id != want {
						t.Fatalf("key %s ran event %d where its source's next was %d: %v", key, id, want, ids)
					}
					next[src] = id + 1
				}
				total += len(ids)
			}
			if total != n {
				t.Fatalf("%d events ran, %d handed over", total, n)
			}
		})
	}
	noGoroutinesLeft(t, before)
}

func noGoroutinesLeft(t *testing.T, before int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left, %d before", runtime.NumGoroutine(), before)
		}
	}
}

// TestExecutorWakesIdleWorker: an event queued while a worker lingers idle is run by
// it at once, not when its linger ends; and the worker ends after workerLinger.
func TestExecutorWakesIdleWorker(t *testing.T) {
	before := runtime.NumGoroutine()
	env := &executorEnv{ctx: t.Context(), stopping: make(chan struct{}), pressed: func() bool { return false },
		process: func(context.Context, func() *version, *task) error { return nil },
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped"}, []string{"function", "reason"})}
	e := newExecutor(env, "f", func() *version { return nil }, &fnStats{})
	defer e.stop()
	run := func() {
		t.Helper()
		ran := make(chan struct{})
		e.enqueue(&task{ev: &luafn.Event{}, key: "k", done: func(error) { close(ran) }}, source{})
		select {
		case <-ran:
		case <-time.After(workerLinger / 2):
			t.Fatal("the event waited for the idle worker's linger to end")
		}
	}
	run()
	time.Sleep(20 * time.Millisecond) // the worker is idle now
	run()
	e.mu.Lock()
	workers := e.workers
	e.mu.Unlock()
	if workers != 1 {
		t.Fatalf("%d workers, want the one that lingered", workers)
	}
	noGoroutinesLeft(t, before) // within workerLinger and a few seconds
}
