package sensors

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"
)

// Opener opens the hardware the Manager uses. The default, HostOpener,
// opens the host's buses and pins through periph.io; tests pass i2ctest
// and gpiotest fakes.
type Opener interface {
	// OpenI2C opens an I²C bus by name or number; the Manager closes it.
	OpenI2C(bus string) (i2c.BusCloser, error)
	// OpenPin returns a GPIO pin by name, such as GPIO17.
	OpenPin(name string) (gpio.PinIO, error)
}

// HostOpener opens real hardware through periph.io's host drivers. It
// initialises them (host.Init) on first use, so a configuration with only
// simulated sensors never touches the host's devices.
type HostOpener struct {
	once  sync.Once
	state *driverreg.State
	err   error
}

func (h *HostOpener) init() error {
	h.once.Do(func() { h.state, h.err = host.Init() })
	if h.err != nil {
		return fmt.Errorf("periph host drivers: %w", h.err)
	}
	return nil
}

// OpenI2C implements Opener.
func (h *HostOpener) OpenI2C(name string) (i2c.BusCloser, error) {
	if err := h.init(); err != nil {
		return nil, err
	}
	b, err := i2creg.Open(name)
	if err != nil {
		var found []string
		for _, r := range i2creg.All() {
			found = append(found, r.Name)
		}
		msg := fmt.Sprintf("i2c bus %s not found (is I2C enabled in raspi-config? buses found: %s; %s)",
			name, listOrNone(found), h.drivers("i2c"))
		if len(found) == 0 {
			// i2creg then suggests calling Init, which we did: leave it out.
			return nil, errors.New(msg)
		}
		return nil, fmt.Errorf("%s: %w", msg, err)
	}
	return b, nil
}

// OpenPin implements Opener.
func (h *HostOpener) OpenPin(name string) (gpio.PinIO, error) {
	if err := h.init(); err != nil {
		return nil, err
	}
	p := gpioreg.ByName(name)
	if p == nil {
		return nil, fmt.Errorf("gpio pin %s not found (names are BCM ones such as GPIO17; is /dev/gpiochip0 readable by this user? %s)",
			name, h.drivers("gpio"))
	}
	return p, nil
}

// drivers describes the host drivers whose name mentions kind, so an error
// says which driver failed or was skipped and why.
func (h *HostOpener) drivers(kind string) string {
	var loaded, failed []string
	for _, d := range h.state.Loaded {
		if strings.Contains(d.String(), kind) {
			loaded = append(loaded, d.String())
		}
	}
	for _, list := range [][]driverreg.DriverFailure{h.state.Failed, h.state.Skipped} {
		for _, f := range list {
			if strings.Contains(f.D.String(), kind) {
				failed = append(failed, f.String())
			}
		}
	}
	s := "host " + kind + " drivers loaded: " + listOrNone(loaded)
	if len(failed) > 0 {
		s += "; failed or skipped: " + strings.Join(failed, "; ")
	}
	return s
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// Clock is the Manager's time source. github.com/jonboulle/clockwork's
// clocks satisfy it, which tests use to run hours of polling in
// milliseconds.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

var _ Opener = (*HostOpener)(nil)
