package mqtt

import (
	"context"
	"log/slog"
)

// Log keys used by this package.
const (
	logKeyBroker = "broker"
	logKeyClient = "client"
	logKeyTopic  = "topic"
	logKeyErr    = "err"
)

func loggerOrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// demoteHandler passes records on at Debug level, errors excepted. mochi logs at Info and
// Warn what is routine for a gateway (every device that goes away without a DISCONNECT is
// a warning), so its chatter shows only when the gateway itself logs at Debug.
type demoteHandler struct{ h slog.Handler }

func demote(l slog.Level) slog.Level {
	if l < slog.LevelError {
		return slog.LevelDebug
	}
	return l
}

func (d demoteHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return d.h.Enabled(ctx, demote(l))
}

func (d demoteHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	return d.h.Handle(ctx, r)
}

func (d demoteHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return demoteHandler{d.h.WithAttrs(as)}
}

func (d demoteHandler) WithGroup(name string) slog.Handler {
	return demoteHandler{d.h.WithGroup(name)}
}
