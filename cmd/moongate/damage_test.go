package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runBinary runs the gateway binary with args in dir until it exits, and returns its
// exit code and output.
func runBinary(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewayBinary(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("moongate %s: %v\n%s", strings.Join(args, " "), err, out)
	return 0, ""
}

// A damaged data dir of a stopped gateway makes `moongate run` exit 1 with a message that
// names the file and the way out, never a panic (exit 2), never a start on an empty store;
// `moongate store check` says the same.
func TestDamagedStoreRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gateway binary")
	}
	base := t.TempDir()
	apiPort := freePort(t)
	cfg := writeGatewayFiles(t, base, counterConfig("embedded", freePort(t), apiPort), map[string]string{"counter.lua": counterLua})
	gw := newGatewayProc(t, base, cfg, apiPort)
	gw.start()
	gw.stop()
	if code, out := runBinary(t, base, "store", "check", "-c", cfg); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("store check of the undamaged store: exit %d\n%s", code, out)
	}

	damage := map[string]func(t *testing.T, store string) string{
		"MANIFEST deleted": func(t *testing.T, store string) string {
			if err := os.Remove(filepath.Join(store, "MANIFEST")); err != nil {
				t.Fatal(err)
			}
			return "MANIFEST"
		},
		"garbage in an sst": func(t *testing.T, store string) string {
			sst := onlySST(t, store)
			f, err := os.OpenFile(sst, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := f.Stat()
			_, err = f.WriteAt([]byte(strings.Repeat("\xa5garbage", 512)), fi.Size()/3)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			return filepath.Base(sst)
		},
		"truncated sst": func(t *testing.T, store string) string {
			sst := onlySST(t, store)
			fi, _ := os.Stat(sst)
			if err := os.Truncate(sst, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
			return filepath.Base(sst)
		},
	}
	for name, fn := range damage {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "gw")
			if out, err := exec.Command("cp", "-a", base, dir).CombinedOutput(); err != nil {
				t.Fatalf("copy: %v: %s", err, out)
			}
			file := fn(t, filepath.Join(dir, "data", "store"))
			for _, args := range [][]string{{"run", "-c", "moongate.yaml"}, {"store", "check", "-c", "moongate.yaml"}, {"store", "check", "-data", "data"}} {
				code, out := runBinary(t, dir, args...)
				if code != 1 || !strings.Contains(out, file) || !strings.Contains(out, "Restore the data dir from a copy") || strings.Contains(out, "goroutine ") {
					t.Errorf("moongate %s: exit %d; want 1 and a message naming %s and the recovery\n%s", strings.Join(args, " "), code, file, out)
				}
			}
		})
	}
}

func onlySST(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(m) == 0 {
		t.Fatalf("no table in %s", dir)
	}
	return m[0]
}
