package store

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCommit measures durable invocations: one kv.incr and one record per
// Commit, fsync on, from many goroutines (as the gateway's per-key queues
// would). It reports commits/s, latency percentiles and commits per fsync.
//
//	go test -run '^$' -bench BenchmarkCommit -benchtime 100000x ./sync/store
func BenchmarkCommit(b *testing.B) {
	for _, conc := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			s := openTest(b, Options{MaxOutboxBytes: 1 << 40})
			var next atomic.Int64
			lat := make([][]time.Duration, conc)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					key := fmt.Sprintf("sensor-%d", w)
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						err := s.Commit(context.Background(), Commit{Namespace: "bench",
							KV:      []KVOp{{Kind: OpIncr, Key: key, Delta: 1}},
							Records: []Append{{Stream: "telemetry", Function: "bench", Data: []byte(`{"sensor":"kitchen","t":21.5,"h":40}`), TS: t0.UnixMilli()}},
						})
						if err != nil {
							b.Error(err)
							return
						}
						lat[w] = append(lat[w], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			st := s.Stats()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(st.Commits)/float64(max(st.Fsyncs, 1)), "commits/fsync")
		})
	}
}

// BenchmarkAppend measures outbox appends in batches of 100 records, one
// Append call at a time.
func BenchmarkAppend(b *testing.B) {
	s := openTest(b, Options{MaxOutboxBytes: 1 << 40})
	recs := make([]Append, 100)
	for i := range recs {
		recs[i] = Append{Stream: "telemetry", Function: "bench", Data: []byte(`{"sensor":"kitchen","t":21.5,"h":40}`)}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i += len(recs) {
		if _, err := s.Append(context.Background(), recs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkRead measures ordered reads of batches of 500 records, as a sink does.
func BenchmarkRead(b *testing.B) {
	s := openTest(b, Options{MaxOutboxBytes: 1 << 40})
	const n = 100_000
	recs := make([]Append, 1000)
	for i := range recs {
		recs[i] = Append{Stream: "telemetry", Function: "bench", Data: []byte(`{"sensor":"kitchen","t":21.5,"h":40}`)}
	}
	for range n / len(recs) {
		if _, err := s.Append(context.Background(), recs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var after uint64
	for i := 0; i < b.N; i += 500 {
		out, err := s.Read("telemetry", after, 500, 0)
		if err != nil {
			b.Fatal(err)
		}
		after = out[len(out)-1].Seq % n
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// TestFootprint reports the store's memory and disk use with a large outbox
// and many KV keys. It runs only when asked:
//
//	MOONGATE_FOOTPRINT=1 go test -run TestFootprint -v ./sync/store
//
// MOONGATE_FOOTPRINT_RECORDS and MOONGATE_FOOTPRINT_KEYS set the sizes
// (default 100000 each); 1000000 records is the other case of the issue. The
// database is built in this process, then a child process opens it, as a
// restarted gateway would, and runs a steady load for a few seconds: 2000
// commits/s (kv.incr + one record) and a sink reading and acknowledging
// batches of 500. The child's figures are the store's share of a gateway.
func TestFootprint(t *testing.T) {
	if os.Getenv("MOONGATE_FOOTPRINT") == "" {
		t.Skip("set MOONGATE_FOOTPRINT=1 to run")
	}
	num := func(env string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(env)); err == nil {
			return v
		}
		return def
	}
	nrec, nkeys := num("MOONGATE_FOOTPRINT_RECORDS", 100_000), num("MOONGATE_FOOTPRINT_KEYS", 100_000)
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxOutboxBytes: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for lo := 0; lo < nkeys; lo += 1000 {
		c := Commit{Namespace: "fn"}
		for i := lo; i < min(lo+1000, nkeys); i++ {
			c.KV = append(c.KV, KVOp{Kind: OpSet, Key: fmt.Sprintf("device-%07d", i), Value: fmt.Appendf(nil, `{"seen":%d,"t":21.5}`, i)})
		}
		if err := s.Commit(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	recs := make([]Append, 1000)
	for lo := 0; lo < nrec; lo += len(recs) {
		for i := range recs {
			recs[i] = Append{Stream: fmt.Sprintf("s%d", i%4), Function: "fn", Data: fmt.Appendf(nil, `{"sensor":"kitchen-%d","t":21.5,"h":40}`, lo+i)}
		}
		if _, err := s.Append(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("bulk load of %d KV keys and %d records: RSS peak %s", nkeys, nrec, procStatus("VmHWM"))
	s.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestFootprintChild$", "-test.v")
	cmd.Env = append(os.Environ(), "MOONGATE_FOOTPRINT_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "footprint: "); ok {
			t.Log(v)
		}
	}
}

// TestFootprintChild is the child of TestFootprint.
func TestFootprintChild(t *testing.T) {
	dir := os.Getenv("MOONGATE_FOOTPRINT_DIR")
	if dir == "" {
		t.Skip("run by TestFootprint")
	}
	s, err := Open(Options{Dir: dir, MaxOutboxBytes: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	report := func(when string) {
		st := s.Stats()
		fmt.Printf("footprint: %s: %d pending records (%d MiB): RSS %s (anon %s, file %s, peak %s), Go heap %d MiB, Go total %d MiB, disk %d MiB\n",
			when, st.PendingRecords, st.PendingBytes>>20, procStatus("VmRSS"), procStatus("RssAnon"), procStatus("RssFile"),
			procStatus("VmHWM"), heapBytes()>>20, goTotalBytes()>>20, st.DiskBytes>>20)
	}
	report("opened")
	s.RegisterConsumer("sink", []string{"*"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(10 * time.Millisecond) // 20 x 100/s
			defer tick.Stop()
			for ctx.Err() == nil {
				<-tick.C
				err := s.Commit(ctx, Commit{Namespace: "fn",
					KV:      []KVOp{{Kind: OpIncr, Key: fmt.Sprintf("count-%d", w), Delta: 1}},
					Records: []Append{{Stream: fmt.Sprintf("s%d", w%4), Function: "fn", Data: []byte(`{"sensor":"kitchen","t":21.5,"h":40}`)}}})
				if err != nil && ctx.Err() == nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			for i := range 4 {
				stream := fmt.Sprintf("s%d", i)
				cur, _ := s.Cursor("sink", stream)
				recs, err := s.Read(stream, cur, 500, 256<<10)
				if err != nil {
					t.Error(err)
					return
				}
				if len(recs) > 0 {
					if err := s.Ack("sink", stream, recs[len(recs)-1].Seq); err != nil {
						t.Error(err)
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	wg.Wait()
	report("after 5 s of load")
}

// procStatus returns a field of /proc/self/status, such as VmRSS.
func procStatus(field string) string {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func readMetric(name string) uint64 {
	m := []metrics.Sample{{Name: name}}
	metrics.Read(m)
	return m[0].Value.Uint64()
}

func heapBytes() uint64    { return readMetric("/memory/classes/heap/objects:bytes") }
func goTotalBytes() uint64 { return readMetric("/memory/classes/total:bytes") }
