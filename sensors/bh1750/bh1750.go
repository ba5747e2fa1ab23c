// Package bh1750 drives the Rohm BH1750FVI ambient light sensor over I²C in
// one-time high-resolution mode, following the datasheet: instruction set on
// page 5, measurement sequence and the lux conversion on page 7.
package bh1750

import (
	"encoding/binary"
	"fmt"
	"time"

	"periph.io/x/conn/v3"

	"periph.io/x/conn/v3/i2c"
)

// Instructions.
const (
	cmdPowerOn  = 0x01
	cmdOneTimeH = 0x20 // one measurement at 1 lx resolution, then power down
)

// measureWait is the datasheet's maximum H-resolution measurement time.
const measureWait = 180 * time.Millisecond

// Dev is one BH1750 on an I²C bus. It does not own the bus.
type Dev struct {
	dev   i2c.Dev
	sleep func(time.Duration)
}

// New powers the sensor on at addr (0x23 with ADDR low, 0x5C with ADDR
// high), which also checks that it answers. sleep waits for measurements (nil:
// time.Sleep).
func New(bus i2c.Bus, addr uint16, sleep func(time.Duration)) (*Dev, error) {
	if sleep == nil {
		sleep = time.Sleep
	}
	if addr != 0x23 && addr != 0x5C {
		return nil, fmt.Errorf("bh1750: address %#x is not 0x23 or 0x5c", addr)
	}
	d := &Dev{dev: i2c.Dev{Bus: bus, Addr: addr}, sleep: sleep}
	if err := d.dev.Tx([]byte{cmdPowerOn}, nil); err != nil {
		return nil, fmt.Errorf("bh1750: power on: %w", err)
	}
	return d, nil
}

// Sense measures once and returns the illuminance in lux.
func (d *Dev) Sense() (float64, error) {
	if err := d.dev.Tx([]byte{cmdOneTimeH}, nil); err != nil {
		return 0, fmt.Errorf("bh1750: start measurement: %w", err)
	}
	d.sleep(measureWait)
	var b [2]byte
	if err := d.dev.Tx(nil, b[:]); err != nil {
		return 0, fmt.Errorf("bh1750: read measurement: %w", err)
	}
	return Lux(binary.BigEndian.Uint16(b[:])), nil
}

// Lux converts a raw count at the default measurement time (MTreg = 69):
// lux = count / 1.2.
func Lux(raw uint16) float64 { return float64(raw) / 1.2 }

// String names the chip and where it answers, as periph's drivers do.
func (d *Dev) String() string { return fmt.Sprintf("BH1750{%s %#x}", d.dev.Bus, d.dev.Addr) }

// Halt has nothing to stop: one-time mode powers the sensor down after each measurement.
func (d *Dev) Halt() error { return nil }

var _ conn.Resource = &Dev{}
