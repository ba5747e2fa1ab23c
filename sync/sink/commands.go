package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/moongate/moongate/internal/logkey"
)

// A command is one downlink message from a 2xx response body, published on
// the local bus: the cloud's way back down to the devices.
type command struct {
	Topic   string `json:"topic"`
	Payload []byte `json:"payload"`
	QoS     byte   `json:"qos"`
	Retain  bool   `json:"retain"`
}

// parseCommands reads {"commands": [{"topic": "t", "payload": ..., "qos": 1,
// "retain": false}]} from a response body. A body that is not a JSON object
// carries no commands. A string payload is published as its text, any other
// JSON value as its JSON; qos defaults to 1. Invalid commands are left out
// and reported in the error; the valid ones are still returned.
func parseCommands(body []byte) ([]command, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, nil
	}
	var v struct {
		Commands []struct {
			Topic   string          `json:"topic"`
			Payload json.RawMessage `json:"payload"`
			QoS     *int            `json:"qos"`
			Retain  bool            `json:"retain"`
		} `json:"commands"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	var cmds []command
	var errs []error
	for i, c := range v.Commands {
		if err := checkTopic(c.Topic); err != nil {
			errs = append(errs, fmt.Errorf("command %d: %w", i, err))
			continue
		}
		qos := 1
		if c.QoS != nil {
			qos = *c.QoS
		}
		if qos != 0 && qos != 1 {
			errs = append(errs, fmt.Errorf("command %d: qos %d: want 0 or 1", i, qos))
			continue
		}
		var payload []byte
		switch {
		case len(c.Payload) == 0 || string(c.Payload) == "null":
		case c.Payload[0] == '"':
			var s string
			if err := json.Unmarshal(c.Payload, &s); err != nil {
				errs = append(errs, fmt.Errorf("command %d: payload: %w", i, err))
				continue
			}
			payload = []byte(s)
		default:
			payload = append([]byte(nil), c.Payload...)
		}
		cmds = append(cmds, command{Topic: c.Topic, Payload: payload, QoS: byte(qos), Retain: c.Retain})
	}
	return cmds, errors.Join(errs...)
}

// checkTopic accepts a topic an MQTT client may publish to.
func checkTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty topic")
	case len(t) > 65535:
		return errors.New("topic too long")
	case !utf8.ValidString(t), strings.ContainsRune(t, 0):
		return fmt.Errorf("topic %q: not valid UTF-8 text", t)
	case strings.ContainsAny(t, "+#"):
		return fmt.Errorf("topic %q: wildcards cannot be published to", t)
	}
	return nil
}

// cmdState is what a lane records in store meta about the last batch whose
// response carried commands.
type cmdState struct {
	Key      string    `json:"key"`
	Commands []command `json:"commands,omitempty"`
	Done     bool      `json:"done"`
}

func (l *lane) cmdKey() string { return "sink/" + l.s.cfg.Name + "/commands/" + l.stream }

// loadCommands publishes commands recorded but not marked applied when the
// gateway stopped.
func (l *lane) loadCommands(ctx context.Context) error {
	v, ok, err := l.s.out.GetMeta(l.cmdKey())
	if err != nil || !ok {
		return err
	}
	if err := json.Unmarshal(v, &l.cmd); err != nil {
		l.log.Warn("ignoring unreadable command record", logKeyErr, err)
		l.cmd = cmdState{}
		return nil
	}
	if !l.cmd.Done {
		l.log.Info("publishing commands recorded before a stop", "batch", l.cmd.Key, "commands", len(l.cmd.Commands))
		return l.finishCommands(ctx)
	}
	return nil
}

// applyCommands publishes the commands of b's response once per batch key:
// record them, publish, mark them applied. The caller then writes the
// cursor past b before any later batch can overwrite the record.
func (l *lane) applyCommands(ctx context.Context, b *batch, cmds []command) error {
	key := b.key()
	if l.cmd.Key == key && l.cmd.Done {
		l.log.Debug("commands of a resent batch already applied", "batch", key)
		return nil
	}
	l.cmd = cmdState{Key: key, Commands: cmds}
	if err := l.putCommands(); err != nil {
		return err
	}
	return l.finishCommands(ctx)
}

func (l *lane) finishCommands(ctx context.Context) error {
	for _, c := range l.cmd.Commands {
		if l.s.pub == nil {
			l.s.drop(dropCommand, 1)
			continue
		}
		if err := l.s.pub.Publish(ctx, c.Topic, c.Payload, c.QoS, c.Retain); err != nil {
			if ctx.Err() != nil {
				// Stopping: left unmarked, the commands go out at the next start.
				return ctx.Err()
			}
			l.s.drop(dropCommand, 1)
			l.log.Warn("command not published", logkey.Topic, c.Topic, logKeyErr, err)
			continue
		}
		l.s.commands.Add(1)
	}
	l.cmd.Done = true
	l.cmd.Commands = nil
	return l.putCommands()
}

func (l *lane) putCommands() error {
	v, err := json.Marshal(l.cmd)
	if err != nil {
		return fmt.Errorf("encode commands: %w", err)
	}
	if err := l.s.out.PutMeta(l.cmdKey(), v); err != nil {
		return fmt.Errorf("record commands: %w", err)
	}
	return nil
}
