package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/moongate/moongate/gateway"
	"github.com/moongate/moongate/internal/logkey"
)

// What moongate tells systemd when it runs as a service (moongate.service, Type=notify):
// READY=1 once the broker serves, the functions are deployed and the console answers;
// WATCHDOG=1 every half WatchdogSec while the event path is healthy; STOPPING=1 when it
// stops. Outside systemd NOTIFY_SOCKET is unset and nothing is sent.

// errSelfUpdating ends a supervision whose gateway stopped for a self-update: the
// process stays, and systemd is not told it stops.
var errSelfUpdating = errors.New("stopped for a self-update")

// notifier sends to systemd's notify socket; the tests' listener stands in for systemd.
type notifier func(state string) error

func systemdNotifier() notifier {
	return func(state string) error {
		_, err := daemon.SdNotify(false, state)
		return err
	}
}

// superviseService tells systemd of g's readiness and health until ctx ends; stop waits
// for its goroutine.
func superviseService(ctx context.Context, g *gateway.Gateway, notify notifier, logger *slog.Logger) (stop func()) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return func() {}
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		logger.Warn("systemd watchdog: WATCHDOG_USEC is not usable; the watchdog is not pinged", logkey.Err, err)
		interval = 0
	}
	send := func(state string) {
		if err := notify(state); err != nil {
			logger.Warn("systemd notify", "state", state, logkey.Err, err)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-g.Ready():
		case <-ctx.Done():
			return
		}
		send(daemon.SdNotifyReady + "\nSTATUS=serving on " + g.HTTPAddr())
		if interval > 0 {
			pingWatchdog(ctx, g, interval/2, send, logger)
		} else {
			<-ctx.Done()
		}
		if !errors.Is(context.Cause(ctx), errSelfUpdating) {
			send(daemon.SdNotifyStopping)
		}
	})
	return wg.Wait
}

// pingWatchdog sends WATCHDOG=1 every period while g is healthy (answers within the
// period), until ctx ends. An unhealthy gateway is not pinged: systemd then kills and
// restarts it, which is what a wedged event path needs.
func pingWatchdog(ctx context.Context, g *gateway.Gateway, period time.Duration, send func(string), logger *slog.Logger) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		hctx, cancel := context.WithTimeout(ctx, period)
		err := g.Healthy(hctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				logger.Error("health check failed: the systemd watchdog is not pinged, and restarts the gateway unless it recovers", logkey.Err, err)
			}
			failing = true
		default:
			if failing {
				logger.Info("healthy again: pinging the systemd watchdog")
			}
			failing = false
			send(daemon.SdNotifyWatchdog)
		}
	}
}

// underJournal reports whether stderr goes to the systemd journal, which stamps every
// line itself (JOURNAL_STREAM names stderr's device and inode).
func underJournal(stderr *os.File) bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" || stderr == nil {
		return false
	}
	fi, err := stderr.Stat()
	if err != nil {
		return false
	}
	return js == journalStream(fi)
}
