package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/moongate/moongate/firmware"
	"github.com/moongate/moongate/gateway"
	"github.com/moongate/moongate/internal/atomicfile"
	"github.com/moongate/moongate/internal/logkey"
)

// A self-update (SPEC §10) is tried before it is installed. The running gateway, once it
// has staged <exe>.new and stopped (its store closed, its ports free), starts the new
// binary as a child with the same arguments: the trial. The child says "healthy" on a
// pipe once its broker serves, its functions are deployed, its store answers and its
// console answers. Then the parent stops the child cleanly, keeps the old binary as
// <exe>.prev, renames the new one over <exe> and execs it: the same process, so systemd
// (Type=notify, NotifyAccess=main) and a shell see one gateway throughout. If the child
// exits, is not healthy within the manifest's health window, or does not stop cleanly,
// the parent removes <exe>.new and serves again on the binary it is: nothing on disk
// changed but DATA/selfupdate.json, which says why. The parent keeps pinging systemd's
// watchdog during the trial; the child does not talk to systemd.

// trialFDEnv names the file descriptor a trial child writes "healthy" to.
const trialFDEnv = "MOONGATE_SELFUPDATE_TRIAL_FD"

// trialStopWait bounds the trial child's clean stop (SPEC §2: 5 s), with room for a slow board.
const trialStopWait = 30 * time.Second

// executable is the running binary with symlinks resolved, where a self-update writes
// the new one beside it; "" when it cannot be found, or in a trial child, which is not
// installed yet (self-update is then refused).
func executable(logger *slog.Logger) string {
	if os.Getenv(trialFDEnv) != "" {
		return ""
	}
	exe, err := os.Executable()
	if err != nil {
		// Without /proc (a chroot, a minimal container), the path it was started by.
		exe, err = exec.LookPath(os.Args[0])
		if err == nil {
			exe, err = filepath.Abs(exe)
		}
	}
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		logger.Warn("the running binary is not found: self-update is off", logkey.Err, err)
		return ""
	}
	return exe
}

// trySelfUpdate tries the staged binary and installs it when it comes up healthy: it
// returns nil, and the caller execs the new binary. Otherwise it has put everything back
// and returns why.
func trySelfUpdate(ctx context.Context, s *gateway.StagedUpdate, dataDir string, notify notifier, logger *slog.Logger) error {
	logger = logger.With(logkey.Component, "self-update", logkey.Version, s.Manifest.Version, "counter", s.Manifest.Counter)
	logger.Info("trying the new binary", "binary", s.Binary, "window", s.Window())
	reason := runTrial(ctx, s, notify, logger)
	if reason == nil {
		reason = install(s)
	}
	state, err := gateway.ReadSelfUpdateState(dataDir)
	if err != nil {
		logger.Warn("read the self-update state", logkey.Err, err)
	}
	last := gateway.SelfUpdateAttempt{Version: s.Manifest.Version, Counter: s.Manifest.Counter, State: gateway.SelfUpdateOK,
		Ended: time.Now().UTC()}
	if state.Last != nil {
		last.Started = state.Last.Started
	}
	if reason == nil {
		state.Counter, state.Version = s.Manifest.Counter, s.Manifest.Version
	} else {
		os.Remove(s.Binary)
		last.State, last.Reason = gateway.SelfUpdateRolledBack, reason.Error()
	}
	state.Last = &last
	if err := gateway.WriteSelfUpdateState(dataDir, state); err != nil {
		logger.Error("write the self-update state", logkey.Err, err)
	}
	return reason
}

// finishInterrupted marks a trial that a previous process did not finish (it was killed,
// or the power went) as rolled back, and removes its binary: this process runs the
// binary at <exe>, the previous one, since a trial installs only once it is over.
func finishInterrupted(dataDir, exe string, logger *slog.Logger) {
	if os.Getenv(trialFDEnv) != "" {
		return // the trial child itself: its parent finishes the trial
	}
	state, err := gateway.ReadSelfUpdateState(dataDir)
	if err != nil || state.Last == nil || state.Last.State != gateway.SelfUpdateTrial {
		return
	}
	state.Last.State, state.Last.Reason = gateway.SelfUpdateRolledBack, "the gateway stopped during the trial"
	state.Last.Ended = time.Now().UTC()
	if exe != "" {
		os.Remove(exe + ".new")
	}
	if err := gateway.WriteSelfUpdateState(dataDir, state); err != nil {
		logger.Warn("write the self-update state", logkey.Err, err)
	}
	logger.Warn("a self-update was interrupted during its trial: the previous binary runs", logkey.Version, state.Last.Version,
		"counter", state.Last.Counter)
}

// runTrial runs the new binary as a child until it says healthy, and stops it cleanly.
func runTrial(ctx context.Context, s *gateway.StagedUpdate, notify notifier, logger *slog.Logger) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(s.Binary, os.Args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(trialEnv(os.Environ()), trialFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Start()
	w.Close() // the child holds the only write end: its exit ends the read below
	if err != nil {
		return fmt.Errorf("start the new binary: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	healthy := make(chan struct{})
	wg.Go(func() {
		if line, _ := bufio.NewReader(r).ReadString('\n'); line == "healthy\n" {
			close(healthy)
		}
	})
	exited := make(chan error, 1)
	wg.Go(func() { exited <- cmd.Wait() })

	var ping <-chan time.Time // systemd's watchdog counts the trial as the gateway's time
	if interval, err := daemon.SdWatchdogEnabled(false); err == nil && interval > 0 && os.Getenv("NOTIFY_SOCKET") != "" {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		ping = t.C
	}
	// SIGHUP reloads a running gateway; there is none to reload during the trial, and
	// its default action would end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	deadline := time.NewTimer(s.Window())
	defer deadline.Stop()
	for {
		select {
		case <-healthy:
			logger.Info("the new binary is healthy: stopping it to install it")
			if err := stopChild(cmd, exited); err != nil {
				return fmt.Errorf("the new binary did not stop cleanly after its trial: %w", err)
			}
			return nil
		case err := <-exited:
			return fmt.Errorf("the new binary exited before it was healthy: %v", exitReason(err))
		case <-deadline.C:
			stopChild(cmd, exited)
			return fmt.Errorf("the new binary was not healthy within %s", s.Window())
		case <-ctx.Done():
			stopChild(cmd, exited)
			return errors.New("the gateway was stopped during the trial")
		case <-hup:
			logger.Warn("SIGHUP during a self-update trial: nothing to reload")
		case <-ping:
			if err := notify(daemon.SdNotifyWatchdog); err != nil {
				logger.Warn("systemd notify", logkey.Err, err)
			}
		}
	}
}

// stopChild sends SIGTERM and waits for the exit, killing the child past trialStopWait.
// It returns why unless the child exited 0.
func stopChild(cmd *exec.Cmd, exited <-chan error) error {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-exited:
	case <-time.After(trialStopWait):
		_ = cmd.Process.Kill()
		err = fmt.Errorf("still running %s after SIGTERM: killed", trialStopWait)
		<-exited
	}
	return err
}

func exitReason(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// trialEnv is the environment of a trial child: without systemd's variables, since the
// parent stays systemd's main process and answers to it.
func trialEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", trialFDEnv:
			continue
		}
		out = append(out, kv)
	}
	return out
}

// install keeps the running binary as <exe>.prev and renames the new one over it. Each
// step is one rename or link, synced: a power cut leaves the old binary or the new one
// at <exe>, never neither.
func install(s *gateway.StagedUpdate) error {
	prev := s.Executable + ".prev"
	if err := os.Remove(prev); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("install: %w", err)
	}
	if err := os.Link(s.Executable, prev); err != nil {
		return fmt.Errorf("install: keep the previous binary: %w", err)
	}
	if err := atomicfile.Rename(s.Binary, s.Executable); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}

// execInstalled replaces this process with the installed binary, same arguments and
// environment; it returns only on failure.
func execInstalled(exe string) error {
	return fmt.Errorf("exec the new binary: %w", syscall.Exec(exe, os.Args, os.Environ()))
}

// reportTrial, in a trial child, writes "healthy" to the parent's pipe once g is ready,
// its store answers and its console answers; stop waits for its goroutine.
func reportTrial(ctx context.Context, g *gateway.Gateway, logger *slog.Logger) (stop func()) {
	if os.Getenv(trialFDEnv) != "3" {
		return func() {}
	}
	pipe := os.NewFile(3, "self-update trial")
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer pipe.Close()
		select {
		case <-g.Ready():
		case <-ctx.Done():
			return
		}
		for {
			err := trialHealthy(ctx, g)
			if err == nil {
				if _, err := io.WriteString(pipe, "healthy\n"); err != nil {
					logger.Warn("self-update trial: tell the parent", logkey.Err, err)
				}
				return
			}
			logger.Debug("self-update trial: not healthy yet", logkey.Err, err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}

func trialHealthy(ctx context.Context, g *gateway.Gateway) error {
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := g.Healthy(hctx); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(hctx, http.MethodGet, "http://"+loopbackAddr(g.HTTPAddr())+"/", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("console: %s", resp.Status)
	}
	return nil
}

// loopbackAddr is addr with an unspecified host (":8080", "0.0.0.0:8080") made 127.0.0.1.
func loopbackAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// selfUpdateCmd uploads a signed gateway binary to the gateway (POST /api/v1/self-update)
// and waits for the outcome of its trial (GET /api/v1/self-update).
func selfUpdateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("self-update", stderr)
	a := clientFlags(fs)
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("usage: moongate self-update IMAGE MANIFEST [--api URL] [--token T]")
	}
	var m firmware.Manifest
	if err := uploadImage(ctx, a, "/api/v1/self-update", pos[0], pos[1], &m); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "staged %s %s (counter %d): the gateway restarts on it and has %s to come up healthy\n",
		m.Type, m.Version, m.Counter, m.Window())
	// The bound is a hang guard: the window, plus two stops and two starts.
	ctx, cancel := context.WithTimeout(ctx, m.Window()+2*time.Minute)
	defer cancel()
	a.http.Timeout = 5 * time.Second
	for {
		var doc struct {
			Executable string `json:"executable"`
			gateway.SelfUpdateState
		}
		// The gateway is down between its stop and the next start: errors then are expected.
		if err := a.do(ctx, http.MethodGet, "/api/v1/self-update", nil, &doc); err == nil {
			if l := doc.Last; l != nil && l.Counter == m.Counter && l.State != gateway.SelfUpdateTrial {
				if l.State != gateway.SelfUpdateOK {
					return fmt.Errorf("rolled back: the previous binary runs again: %s", l.Reason)
				}
				fmt.Fprintf(stdout, "updated to %s (counter %d); the previous binary is kept as %s.prev\n",
					l.Version, l.Counter, doc.Executable)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no outcome from the gateway: %w", context.Cause(ctx))
		case <-time.After(250 * time.Millisecond):
		}
	}
}
