package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	crashDirEnv  = "MOONGATE_STORE_CRASH_DIR"
	crashBigEnv  = "MOONGATE_STORE_CRASH_BIG"
	crashWorkers = 4
)

// TestCrashKill9 runs a child process that commits (kv.incr + one record) from
// several goroutines and prints each commit once Commit has returned, kills it
// with SIGKILL at a random moment, and checks after every kill that each
// reported commit is in the store exactly once, in order, with its counter.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	crashRounds(t, t.TempDir(), nil, nil)
}

// crashRounds runs the child on dir (with env added to its environment), kills it and
// checks the store, five times; afterKill, when set, runs after the kill and returns the
// directory to check instead of dir.
func crashRounds(t *testing.T, dir string, env []string, afterKill func(round int) string) {
	reported := make([]int, crashWorkers) // highest n the child reported, per worker
	total := 0
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(append(os.Environ(), crashDirEnv+"="+dir), env...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			if errors.Is(err, syscall.ENOEXEC) {
				t.Skipf("cannot run the test binary as a child (%v): under an emulator such as qemu-arm without binfmt", err)
			}
			t.Fatal(err)
		}
		// Kill at a random point: during open and replay, or in full flow.
		delay := time.Duration(100+rand.IntN(900)) * time.Millisecond
		timer := time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
		sc := bufio.NewScanner(out)
		lines := 0
		for sc.Scan() {
			var w, n int
			if _, err := fmt.Sscanf(sc.Text(), "%d %d", &w, &n); err != nil {
				continue // a line cut by the kill
			}
			reported[w] = max(reported[w], n)
			lines++
		}
		cmd.Wait()
		timer.Stop()
		total += lines
		t.Logf("round %d: killed after %v, %d commits reported", round, delay, lines)
		check := dir
		if afterKill != nil {
			check = afterKill(round)
		}
		checkCrashState(t, check, reported)
	}
	if total == 0 {
		t.Fatal("the child never reported a commit: nothing was tested")
	}
}

// checkCrashState opens the store left by a killed child and checks it.
func checkCrashState(t *testing.T, dir string, reported []int) {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("open after kill: %v", err)
	}
	defer s.Close()
	counters := make([]int, crashWorkers)
	for w := range crashWorkers {
		v, ok, err := s.KVGet("crash", fmt.Sprintf("w%d", w))
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			counters[w], _ = strconv.Atoi(string(v))
		}
		if counters[w] < reported[w] {
			t.Errorf("worker %d: counter %d, but commit %d was reported", w, counters[w], reported[w])
		}
	}
	recs, err := s.Read("crash", 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	next := make([]int, crashWorkers)
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d: a gap or a duplicate", i, r.Seq)
		}
		var d struct{ W, N int }
		if err := json.Unmarshal(r.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.N != next[d.W]+1 {
			t.Fatalf("worker %d: record %d follows %d (lost, duplicated or out of order)", d.W, d.N, next[d.W])
		}
		next[d.W] = d.N
	}
	for w := range crashWorkers {
		// The counter and the records commit together: they must agree.
		if next[w] != counters[w] {
			t.Errorf("worker %d: %d records but counter %d", w, next[w], counters[w])
		}
	}
}

// TestCrashChild is the child of TestCrashKill9; it does nothing otherwise.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("run by TestCrashKill9")
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(1)
	}
	done := make(chan struct{})
	for w := range crashWorkers {
		go func() {
			v, _, err := s.KVGet("crash", fmt.Sprintf("w%d", w))
			if err != nil {
				panic(err)
			}
			n, _ := strconv.Atoi(string(v))
			pad := "" // with crashBigEnv, records go to the value log
			if os.Getenv(crashBigEnv) != "" {
				pad = strings.Repeat("x", 2*valueThreshold)
			}
			for {
				n++
				err := s.Commit(context.Background(), Commit{Namespace: "crash",
					KV:      []KVOp{{Kind: OpIncr, Key: fmt.Sprintf("w%d", w), Delta: 1}},
					Records: []Append{{Stream: "crash", Data: fmt.Appendf(nil, `{"w":%d,"n":%d,"pad":%q}`, w, n, pad)}},
				})
				if err != nil {
					panic(err)
				}
				// One write per line, so that a kill cannot interleave lines.
				os.Stdout.Write(fmt.Appendf(nil, "%d %d\n", w, n))
			}
		}()
	}
	<-done // until killed
}
