package mqtt

import (
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The Client's subscriptions: made on every connection (onConnect), retried on the same
// connection when the broker refuses them, and changed while connected or not.

// resubscribe retries the subscriptions a connection could not make, with growing waits,
// while that connection lasts: a broker may refuse a subscription for a while (a
// cluster node not yet ready, an ACL being reloaded), and the gateway would otherwise
// miss its messages until the next reconnection. A new connection subscribes by itself.
func (c *Client) resubscribe() {
	defer c.wg.Done()
	for {
		select {
		case <-c.resub:
		case <-c.stop:
			return
		}
		wait := max(min(time.Second, c.opts.MaxReconnectInterval), minRetryWait)
		for c.pc.IsConnectionOpen() {
			if !c.sleep(wait) {
				return
			}
			subs := c.subs.load()
			if len(subs) == 0 {
				break
			}
			err := c.subscribe(c.pc, subs)
			if err == nil {
				c.log.Info("subscribed after a retry")
				break
			}
			c.setLastError(err)
			wait = min(2*wait, c.opts.MaxReconnectInterval)
			c.log.Warn("subscribe failed again, will retry", logKeyErr, err, "in", wait)
		}
	}
}

// subscribe subscribes filters in one SUBSCRIBE and waits for the SUBACK.
func (c *Client) subscribe(pc paho.Client, filters map[string]byte) error {
	tok := pc.SubscribeMultiple(filters, nil)
	if err := c.wait(tok); err != nil {
		return err
	}
	for f, code := range tok.(*paho.SubscribeToken).Result() {
		if code > 2 {
			return fmt.Errorf("subscribe %q: refused by the broker (code %#x)", f, code)
		}
	}
	return nil
}

// Subscribe implements Bus. While disconnected, the subscription is kept and made on
// the next connection.
func (c *Client) Subscribe(s Subscription) error {
	if err := s.validate(); err != nil {
		return err
	}
	if c.stopping.Load() {
		return ErrClosed
	}
	c.subs.add(s)
	c.unsubs.Delete(s.Filter)
	if !c.pc.IsConnectionOpen() {
		return nil
	}
	if err := c.subscribe(c.pc, map[string]byte{s.Filter: s.QoS}); err != nil {
		if !c.pc.IsConnectionOpen() {
			return nil // lost meanwhile: onConnect subscribes it
		}
		c.subs.remove(s.Filter)
		return err
	}
	return nil
}

// Unsubscribe implements Bus. While disconnected, the broker's session keeps the
// subscription until the next connection unsubscribes it; its messages may still come.
func (c *Client) Unsubscribe(filter string) error {
	if c.stopping.Load() {
		return ErrClosed
	}
	if !c.subs.remove(filter) {
		return nil
	}
	c.unsubs.Store(filter, struct{}{})
	if !c.pc.IsConnectionOpen() {
		return nil
	}
	if err := c.wait(c.pc.Unsubscribe(filter)); err != nil {
		return fmt.Errorf("unsubscribe %q: %w", filter, err)
	}
	c.unsubs.Delete(filter)
	return nil
}

// unsubscribePending sends the unsubscriptions that could not be sent while disconnected.
func (c *Client) unsubscribePending(pc paho.Client) error {
	var filters []string
	subs := c.subs.load()
	c.unsubs.Range(func(k, _ any) bool {
		if _, again := subs[k.(string)]; again {
			c.unsubs.Delete(k) // subscribed again meanwhile
		} else {
			filters = append(filters, k.(string))
		}
		return true
	})
	if len(filters) == 0 {
		return nil
	}
	if err := c.wait(pc.Unsubscribe(filters...)); err != nil {
		return err
	}
	for _, f := range filters {
		c.unsubs.Delete(f)
	}
	return nil
}
