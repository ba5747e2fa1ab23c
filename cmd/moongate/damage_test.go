package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/loopback"
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
	apiPort := loopback.FreePort(t)
	cfg := writeGatewayFiles(t, base, counterConfig("embedded", loopback.FreePort(t), apiPort), map[string]string{"counter.lua": counterLua})
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

// Garbage in the WAL of a gateway killed with acknowledged commits only in that WAL: the
// next start runs, but says at ERROR which file lost how much after which offset, counts it
// on /metrics, keeps a copy, and store check exits 1 until the copy is moved away.
func TestDamagedWALReported(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gateway binary")
	}
	dir := t.TempDir()
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	cfg := writeGatewayFiles(t, dir, counterConfig("embedded", mqttPort, apiPort), map[string]string{"counter.lua": counterLua})
	gw := newGatewayProc(t, dir, cfg, apiPort)
	gw.start()
	devs := newDevices("d", fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), 2, 300, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitDevices(t, runDevices(ctx, devs), len(devs))
	gw.kill9() // the acknowledged commits are in the WAL, not yet in a table

	mems, _ := filepath.Glob(filepath.Join(gw.storeDir(), "*.mem"))
	if len(mems) == 0 {
		t.Fatal("no WAL left by the killed gateway")
	}
	mem := mems[len(mems)-1]
	data, err := os.ReadFile(mem)
	if err != nil {
		t.Fatal(err)
	}
	end := len(bytes.TrimRight(data, "\x00"))
	if end < 20_000 {
		t.Fatalf("the WAL holds %d bytes: the commits are not in it", end)
	}
	copy(data[end/2:], bytes.Repeat([]byte("\xa5garbage"), 512))
	if err := os.WriteFile(mem, data, 0o600); err != nil {
		t.Fatal(err)
	}

	gw.start()
	out := gw.c.out.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, filepath.Base(mem)) || !strings.Contains(out, "bytes_dropped=") {
		t.Fatalf("no ERROR naming %s and what was dropped in the log:\n%s", filepath.Base(mem), out)
	}
	if n, lost := gw.metric("moongate_store_log_losses"), gw.metric("moongate_store_log_lost_bytes"); n != 1 || lost < float64(end/2-4096) {
		t.Fatalf("metrics: %v log losses, %v bytes lost; want 1 and at least %d", n, lost, end/2-4096)
	}
	gw.stop()
	code, check := runBinary(t, dir, "store", "check", "-c", cfg)
	if code != 1 || !strings.Contains(check, "damaged/"+filepath.Base(mem)) {
		t.Fatalf("store check after the loss: exit %d; want 1 naming the copy\n%s", code, check)
	}
}
