package main

import (
	"encoding/json"
	"fmt"
	"io"
)

// effects are the invoke API's "effects" and "would" lists.
type effects struct {
	KV []struct {
		Key     string          `json:"key"`
		Value   json.RawMessage `json:"value"`
		Deleted bool            `json:"deleted"`
	} `json:"kv"`
	Emits []struct {
		Stream string          `json:"stream"`
		Data   json.RawMessage `json:"data"`
	} `json:"emits"`
	Publishes []struct {
		Topic   string `json:"topic"`
		Payload string `json:"payload"`
		QoS     byte   `json:"qos"`
		Retain  bool   `json:"retain"`
	} `json:"publishes"`
	GPIO []struct {
		Pin   string `json:"pin"`
		Level int    `json:"level"`
	} `json:"gpio"`
}

// print writes one line per effect, each starting with prefix.
func (e *effects) print(w io.Writer, prefix string) {
	if e == nil {
		return
	}
	for _, k := range e.KV {
		if k.Deleted {
			fmt.Fprintf(w, "%skv delete %s\n", prefix, k.Key)
		} else {
			fmt.Fprintf(w, "%skv set %s = %s\n", prefix, k.Key, k.Value)
		}
	}
	for _, m := range e.Emits {
		fmt.Fprintf(w, "%semit %s %s\n", prefix, m.Stream, m.Data)
	}
	for _, p := range e.Publishes {
		fmt.Fprintf(w, "%spublish %s qos %d retain %t %s\n", prefix, p.Topic, p.QoS, p.Retain, p.Payload)
	}
	for _, g := range e.GPIO {
		fmt.Fprintf(w, "%sgpio write %s = %d\n", prefix, g.Pin, g.Level)
	}
}
