package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// A data dir whose MANIFEST is gone is refused, and its tables stay: Badger alone would
// start an empty store and delete them.
func TestMissingManifestRefused(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	for i := range 2000 {
		mustCommit(t, s, Commit{Namespace: "fn", KV: []KVOp{{Kind: OpSet, Key: "k" + strings.Repeat("x", i%50) + string(rune('a'+i%26)), Value: []byte(`1`)}}})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := filepath.Glob(filepath.Join(dir, "*"))
	if err := os.Remove(filepath.Join(dir, "MANIFEST")); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: dir})
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "MANIFEST is missing") || !strings.Contains(err.Error(), ".damaged") {
		t.Fatalf("open without a MANIFEST: %v", err)
	}
	after, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(after) != len(before)-1 {
		t.Fatalf("files before %v, after %v: the refusal changed the dir", before, after)
	}
}

// fillDamageStore writes known content to a store in dir: n small KV keys (kept in the
// tables), n/10 large ones (kept in the value log) and n outbox records, in commits of
// ten keys. It returns the open store.
func fillDamageStore(t *testing.T, dir string, n int, big string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	large := `"` + strings.Repeat("v", 2000) + `"`
	for i := 0; i < n; i += 10 {
		var c Commit
		c.Namespace = "fn"
		for j := i; j < i+10; j++ {
			c.KV = append(c.KV, KVOp{Kind: OpSet, Key: fmt.Sprintf("k%06d", j), Value: []byte(strconv.Itoa(j))})
			c.Records = append(c.Records, Append{Stream: "s", Data: []byte(strconv.Itoa(j))})
			if j%10 == 0 {
				c.KV = append(c.KV, KVOp{Kind: OpSet, Key: fmt.Sprintf("%s%06d", big, j), Value: []byte(large)})
			}
		}
		mustCommit(t, s, c)
	}
	return s
}

// copyDir copies the files of a live store's dir, as a kill -9 would leave them: the
// store has synced every commit, so its logs hold them all.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() || e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// garbledLog fills a store with n readings and copies its dir as a kill -9 leaves it
// (killedCopy), garbles the middle of its last log file matching pattern (which must hold
// at least min bytes), and opens it: the open must report the cut there as the one loss.
func garbledLog(t *testing.T, n int, pattern string, min int64) (*Store, string) {
	t.Helper()
	live := t.TempDir()
	s := fillDamageStore(t, live, n, "big")
	dir := copyDir(t, live)
	s.Close()
	file := onlyFile(t, dir, pattern)
	end := logDataEnd(t, file)
	if end < min {
		t.Fatalf("%s holds %d bytes: the commits are not in it", file, end)
	}
	garble(t, file, end/2)
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	losses := s.Stats().LogLosses
	if len(losses) != 1 || losses[0].File != filepath.Base(file) || losses[0].Offset > end/2 || losses[0].Bytes < end/2-4096 {
		t.Fatalf("log losses %+v; want the cut of %s at %d", losses, filepath.Base(file), end/2)
	}
	if _, err := os.Stat(losses[0].Copy); err != nil {
		t.Fatalf("no copy of the damaged log: %v", err)
	}
	return s, dir
}

// onlyFile returns the one file of dir matching pattern.
func onlyFile(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(m) == 0 {
		t.Fatalf("no %s in %s", pattern, dir)
	}
	sort.Strings(m)
	return m[len(m)-1]
}

// garble overwrites 4 KiB at off in path with pseudo-random bytes.
func garble(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range junk {
		junk[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(junk, off); err != nil {
		t.Fatal(err)
	}
}

// logDataEnd returns where the valid entries of a log file end.
func logDataEnd(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return int64(logEnd(b))
}

// wantRefused requires Open to refuse dir with ErrDamaged, naming file, without a panic.
func wantRefused(t *testing.T, dir, file string) {
	t.Helper()
	_, err := Open(Options{Dir: dir})
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "Restore the data dir from a copy") {
		t.Fatalf("open: %v; want ErrDamaged naming %s and the recovery", err, file)
	}
	if _, err := Check(Options{Dir: dir}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("check: %v; want ErrDamaged", err)
	}
}

// A damaged data dir is refused, or opened with the loss reported and counted: every
// kind of file of a stopped store, damaged, and never a key silently gone.
func TestDamageNeverSilent(t *testing.T) {
	const n = 3000
	// A store closed cleanly: its data is in tables and the value log.
	closed := t.TempDir()
	s := fillDamageStore(t, closed, n, "big")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Check(Options{Dir: closed}); err != nil || rep.Tables == 0 || rep.Keys < n || rep.Records != n {
		t.Fatalf("check of the undamaged store: %+v, %v", rep, err)
	}

	t.Run("sst garbage", func(t *testing.T) {
		dir := copyDir(t, closed)
		sst := onlyFile(t, dir, "*.sst")
		fi, _ := os.Stat(sst)
		garble(t, sst, fi.Size()/3)
		wantRefused(t, dir, filepath.Base(sst))
	})
	t.Run("sst truncated", func(t *testing.T) {
		dir := copyDir(t, closed)
		sst := onlyFile(t, dir, "*.sst")
		fi, _ := os.Stat(sst)
		if err := os.Truncate(sst, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, dir, filepath.Base(sst))
	})
	t.Run("sst index garbage", func(t *testing.T) {
		dir := copyDir(t, closed)
		sst := onlyFile(t, dir, "*.sst")
		fi, _ := os.Stat(sst)
		garble(t, sst, fi.Size()-4096-100)
		wantRefused(t, dir, filepath.Base(sst))
	})
	t.Run("sst missing", func(t *testing.T) {
		dir := copyDir(t, closed)
		sst := onlyFile(t, dir, "*.sst")
		os.Remove(sst)
		wantRefused(t, dir, filepath.Base(sst))
	})

	t.Run("MANIFEST garbage", func(t *testing.T) {
		dir := copyDir(t, closed)
		garble(t, filepath.Join(dir, "MANIFEST"), 8) // past its magic
		wantRefused(t, dir, "MANIFEST")
	})
	t.Run("MANIFEST truncated", func(t *testing.T) {
		// Badger cuts a MANIFEST at its last whole entry and deletes the tables the rest
		// listed: they are moved aside instead, and the cut is a loss reported.
		dir := copyDir(t, closed)
		sst := onlyFile(t, dir, "*.sst")
		mf := filepath.Join(dir, "MANIFEST")
		fi, _ := os.Stat(mf)
		if err := os.Truncate(mf, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		losses := s.Stats().LogLosses
		if len(losses) != 1 || losses[0].File != "MANIFEST" || len(losses[0].Tables) == 0 || losses[0].Tables[0] != filepath.Base(sst) {
			t.Fatalf("log losses %+v; want the MANIFEST's cut, with %s moved aside", losses, filepath.Base(sst))
		}
		if aside, _ := filepath.Glob(filepath.Join(dir, "damaged", filepath.Base(sst)+".*")); len(aside) != 1 {
			t.Fatalf("%s is not in damaged/: %v", filepath.Base(sst), aside)
		}
		s.Close()
		if _, err := Check(Options{Dir: dir}); !errors.Is(err, ErrDamaged) {
			t.Fatalf("check: %v; want ErrDamaged", err)
		}
	})

	t.Run("vlog garbage", func(t *testing.T) {
		// A store that did not close: the value log it wrote is the last one, which
		// Badger replays on open and cuts at the damage: a loss reported and counted.
		s, dir := garbledLog(t, n, "*.vlog", 100_000)
		// A large value past the cut is an error, not a missing key.
		if v, ok, err := s.KVGet("fn", fmt.Sprintf("big%06d", n-10)); err == nil {
			t.Fatalf("a value past the damage read without an error: %v %.20s", ok, v)
		}
		s.Close()
		if _, err := Check(Options{Dir: dir}); !errors.Is(err, ErrDamaged) {
			t.Fatalf("check: %v; want ErrDamaged", err)
		}
	})

	t.Run("vlog garbage in an older file", func(t *testing.T) {
		// The closed store has been opened again (by Check), so the value log holding
		// the large values is no longer the last: Badger does not replay it.
		dir := copyDir(t, closed)
		older := filepath.Join(dir, "000001.vlog")
		end := logDataEnd(t, older)
		if end < 100_000 || onlyFile(t, dir, "*.vlog") == older {
			t.Fatalf("the value log %s holds %d bytes and is the last", older, end)
		}
		garble(t, older, end/2)
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if l := s.Stats().LogLosses; len(l) != 0 {
			t.Fatalf("losses %+v in an older value-log file, which Badger does not replay", l)
		}
		// Some large value sits in the garbled 4 KiB: its read is an error.
		bad := 0
		for j := 0; j < n; j += 10 {
			if _, _, err := s.KVGet("fn", fmt.Sprintf("big%06d", j)); err != nil {
				bad++
			}
		}
		s.Close()
		if bad == 0 {
			t.Fatal("no read of a value in the damaged value-log file failed")
		}
		rep, err := Check(Options{Dir: dir})
		if !errors.Is(err, ErrDamaged) || len(rep.Problems) < bad {
			t.Fatalf("check: %v, %d problems; want ErrDamaged and at least %d", err, len(rep.Problems), bad)
		}
	})

	t.Run("mem garbage", func(t *testing.T) {
		// A store that did not close: its last commits are only in the WAL.
		s, dir := garbledLog(t, 500, "*.mem", 10_000)
		s.Close()
		rep, err := Check(Options{Dir: dir})
		if !errors.Is(err, ErrDamaged) || !strings.Contains(strings.Join(rep.Problems, "\n"), "earlier open found damaged") {
			t.Fatalf("check after the loss: %v, %q", err, rep.Problems)
		}
	})

	t.Run("mem torn tail is no loss", func(t *testing.T) {
		// A clean WAL: nothing after its last transaction, nothing reported.
		live := t.TempDir()
		s := fillDamageStore(t, live, 100, "big")
		dir := copyDir(t, live)
		s.Close()
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if l := s.Stats().LogLosses; len(l) != 0 {
			t.Fatalf("losses %+v in an undamaged WAL", l)
		}
		if got := getKV(t, s, "fn", "k000099"); got != "99" {
			t.Fatalf("last key %s", got)
		}
	})
}

// A process killed between Badger creating a write-ahead log and sizing it leaves an
// empty .mem file; the store opens on it, with everything committed before.
func TestOpenWithEmptyWALFromACrash(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(context.Background(), Commit{Namespace: "f", KV: []KVOp{{Kind: OpSet, Key: "k", Value: []byte(`1`)}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00009.mem"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("open with an empty WAL: %v", err)
	}
	defer s.Close()
	if v, ok, err := s.KVGet("f", "k"); err != nil || !ok || string(v) != "1" {
		t.Fatalf("k = %s %v %v", v, ok, err)
	}
}
