package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"

	"github.com/moongate/moongate/gateway"
	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/gateway/fntest"
	"github.com/moongate/moongate/internal/logkey"
)

const defaultConfig = "moongate.yaml"

// loadConfig reads -c, or ./moongate.yaml when present, else the built-in defaults. Any
// config error is a usage error (exit 2) naming file, line and key.
func loadConfig(path string, explicit bool) (*config.Config, error) {
	if !explicit {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return config.Default(), nil
		}
	}
	c, err := gateway.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

func configFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "c", defaultConfig, "config file")
}

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	var path string
	configFlag(fs, &path)
	allowMissing := fs.Bool("allow-missing-hardware", false, "start even when a sensor's bus or pin is missing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(path, flagSet(fs, "c"))
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Gateway.LogLevel)); err != nil {
		return usagef("gateway.log_level: %v", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	if f, ok := stderr.(*os.File); ok && underJournal(f) {
		hopts.ReplaceAttr = dropTime // the journal stamps each line itself
	}
	logger := slog.New(slog.NewTextHandler(stderr, hopts))
	if cfg.File == "" {
		// The data dir is then created where moongate runs: say where that is.
		dataDir, err := filepath.Abs(cfg.Gateway.DataDir)
		if err != nil {
			dataDir = cfg.Gateway.DataDir
		}
		logger.Info("no config file: embedded broker and console only", "looked_for", path, "data_dir", dataDir)
	}
	if lim := *cfg.Gateway.MemoryLimit; lim > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(lim))
	}
	exe := executable(logger)
	finishInterrupted(cfg.Gateway.DataDir, exe, logger)
	for {
		g := gateway.New(cfg, gateway.Options{Version: version, Logger: logger, AllowMissingHardware: *allowMissing,
			Tests: fntest.OnGateway, Executable: exe})
		err := serve(ctx, g, logger)
		var staged *gateway.StagedUpdate
		if !errors.As(err, &staged) {
			var list config.ErrorList
			if errors.As(err, &list) {
				return usageError{err}
			}
			return err
		}
		if err := trySelfUpdate(ctx, staged, cfg.Gateway.DataDir, systemdNotifier(), logger); err != nil {
			logger.Error("self-update rolled back: serving on the previous binary", logkey.Err, err)
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		logger.Info("self-update installed: starting the new binary", "binary", staged.Executable)
		return execInstalled(staged.Executable)
	}
}

// serve runs g until ctx ends or a self-update is staged, with what goes beside it: the
// reload on SIGHUP, systemd's notifications, a trial child's health report.
func serve(ctx context.Context, g *gateway.Gateway, logger *slog.Logger) error {
	stopReloads := reloadOnHangup(g, logger)
	defer stopReloads()
	serviceCtx, stopService := context.WithCancelCause(ctx)
	stopSupervising := superviseService(serviceCtx, g, systemdNotifier(), logger)
	stopReport := reportTrial(ctx, g, logger)
	err := g.Run(ctx)
	stopReport()
	var staged *gateway.StagedUpdate
	if errors.As(err, &staged) {
		stopService(errSelfUpdating) // the process goes on: systemd is not told it stops
	} else {
		stopService(nil)
	}
	stopSupervising()
	return err
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// reloadOnHangup reloads what the gateway can reload (the device password and ACL files,
// the config's functions) on SIGHUP, until the returned stop is called; stop waits for the goroutine.
func reloadOnHangup(g *gateway.Gateway, logger *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
				if _, err := g.Reload(); err != nil { // what waits for a restart, the gateway logs
					logger.Error("reload on SIGHUP failed; the previous settings stay", logkey.Err, err)
				}
			}
		}
	})
	return func() {
		signal.Stop(hup)
		close(done)
		wg.Wait()
	}
}

func checkCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	var path string
	configFlag(fs, &path)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(path, true)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%s, %s, %s)\n", cfg.File, count(len(cfg.Functions), "function"), count(len(cfg.Sensors), "sensor"),
		count(len(cfg.Sync.Sinks), "sink"))
	return nil
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
