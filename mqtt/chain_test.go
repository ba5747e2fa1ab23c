package mqtt

import (
	"context"
	"slices"
	"testing"
)

// A chain given to Publish reaches the handler with the message; a device's message and a
// publish without one carry none.
func TestEmbeddedCarriesChain(t *testing.T) {
	rec := newRecorder()
	e := startEmbedded(t, EmbeddedOptions{}, []Subscription{{Filter: "loop/#"}}, rec)
	ctx := WithChain(context.Background(), []string{"a", "b"})
	if err := e.Publish(ctx, "loop/1", []byte("x"), 1, false); err != nil {
		t.Fatal(err)
	}
	if m := rec.next(t); m.Topic != "loop/1" || !slices.Equal(m.Chain, []string{"a", "b"}) {
		t.Fatalf("got %s with chain %q", m.Topic, m.Chain)
	}
	if err := e.Publish(context.Background(), "loop/2", []byte("x"), 0, false); err != nil {
		t.Fatal(err)
	}
	if m := rec.next(t); m.Chain != nil {
		t.Fatalf("a publish without a chain arrived with %q", m.Chain)
	}
	dev := device(t, "tcp://"+e.Addr(), nil)
	wait(t, dev.Publish("loop/3", 1, false, "x"))
	if m := rec.next(t); m.Topic != "loop/3" || m.Chain != nil {
		t.Fatalf("a device's message arrived with chain %q", m.Chain)
	}
}
