package mqtt

import (
	"context"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A chain names the functions whose invocations led to a message the gateway publishes,
// oldest first, so that the gateway can see a loop (a function triggering itself, or two
// triggering each other) and stop it. The embedded broker carries it from Publish to the
// handler (Message.Chain) in a user property that no subscriber sees; an external broker
// cannot carry it (MQTT 3.1.1 has no properties), so there a rate limit on the gateway's
// publishes is what bounds a loop.

type chainKey struct{}

// WithChain returns ctx carrying chain for Publish.
func WithChain(ctx context.Context, chain []string) context.Context {
	return context.WithValue(ctx, chainKey{}, chain)
}

func chainFrom(ctx context.Context) []string {
	c, _ := ctx.Value(chainKey{}).([]string)
	return c
}

// chainProperty is the user property that carries a chain inside the embedded broker.
const chainProperty = "moongate-chain"

// takeChain removes the chain property from pk and returns the chain it held.
func takeChain(pk *packets.Packet) []string {
	for i, p := range pk.Properties.User {
		if p.Key == chainProperty {
			pk.Properties.User = append(pk.Properties.User[:i:i], pk.Properties.User[i+1:]...)
			return strings.Split(p.Val, ",")
		}
	}
	return nil
}
