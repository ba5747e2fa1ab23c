// Package ads1115 drives the TI ADS1115 16-bit, 4-channel ADC over I²C in
// single-shot mode, single-ended inputs (AINx against GND), following the
// datasheet (SBAS444): config register in section 9.6.3, full-scale ranges
// in table 3, output codes in table 4.
package ads1115

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"periph.io/x/conn/v3"

	"periph.io/x/conn/v3/i2c"
)

// Register pointers.
const (
	regConversion = 0x00
	regConfig     = 0x01
)

// Config register fields.
const (
	cfgOS          = 1 << 15 // write: start a conversion; read: 1 when idle
	cfgMuxShift    = 12
	cfgMuxSingle   = 0b100 // MUX 100..111: AIN0..AIN3 against GND
	cfgPGAShift    = 9
	cfgModeSingle  = 1 << 8
	cfgDRShift     = 5
	cfgCompDisable = 0b11 // COMP_QUE: comparator off, ALERT/RDY high impedance
)

// fullScales are the programmable gain amplifier's ranges in volts, indexed
// by the PGA field (table 3); PGA 101..111 all mean ±0.256 V.
var fullScales = [...]float64{6.144, 4.096, 2.048, 1.024, 0.512, 0.256}

// FullScales returns the ranges, a copy: a caller cannot change what New accepts.
func FullScales() []float64 { return slices.Clone(fullScales[:]) }

// DataRates are the samples per second, indexed by the DR field.
var DataRates = []int{8, 16, 32, 64, 128, 250, 475, 860}

// Opts chooses the range and speed; the zero value is the device's reset
// state: ±2.048 V at 128 samples per second.
type Opts struct {
	FullScale float64 // volts, one of FullScales
	DataRate  int     // samples per second, one of DataRates
}

// Dev is one ADS1115 on an I²C bus. It does not own the bus.
type Dev struct {
	dev       i2c.Dev
	pga, dr   uint16
	fullScale float64
	wait      time.Duration
	sleep     func(time.Duration)
}

// New checks the options and that a device answers at addr (0x48..0x4B,
// set by the ADDR pin). sleep waits for conversions (nil: time.Sleep).
func New(bus i2c.Bus, addr uint16, o Opts, sleep func(time.Duration)) (*Dev, error) {
	if sleep == nil {
		sleep = time.Sleep
	}
	if addr < 0x48 || addr > 0x4B {
		return nil, fmt.Errorf("ads1115: address %#x is not in 0x48..0x4b", addr)
	}
	if o.FullScale == 0 {
		o.FullScale = 2.048
	}
	if o.DataRate == 0 {
		o.DataRate = 128
	}
	pga := slices.Index(fullScales[:], o.FullScale)
	if pga < 0 {
		return nil, fmt.Errorf("ads1115: full scale %gV is not one of %v", o.FullScale, fullScales)
	}
	dr := slices.Index(DataRates, o.DataRate)
	if dr < 0 {
		return nil, fmt.Errorf("ads1115: data rate %d SPS is not one of %v", o.DataRate, DataRates)
	}
	d := &Dev{
		dev: i2c.Dev{Bus: bus, Addr: addr}, pga: uint16(pga), dr: uint16(dr), fullScale: o.FullScale, sleep: sleep,
		// One conversion takes 1/DR; the internal oscillator is only
		// accurate to 10%.
		wait: time.Second * 11 / time.Duration(10*o.DataRate),
	}
	var b [2]byte
	if err := d.dev.Tx([]byte{regConfig}, b[:]); err != nil {
		return nil, fmt.Errorf("ads1115: read config: %w", err)
	}
	return d, nil
}

// Config returns the config register word that starts a single-shot
// conversion of mux (0..7, table 8: 4..7 are AIN0..AIN3 single-ended) with
// the given PGA and DR fields and the comparator disabled.
func Config(mux, pga, dr uint16) uint16 {
	return cfgOS | mux<<cfgMuxShift | pga<<cfgPGAShift | cfgModeSingle | dr<<cfgDRShift | cfgCompDisable
}

// Volts converts an output code: one LSB is FS/2^15 (table 3), codes are
// two's complement (table 4).
func Volts(code int16, fullScale float64) float64 {
	return float64(code) * fullScale / 32768
}

// Read converts channel ch (0..3) against GND and returns volts.
func (d *Dev) Read(ch int) (float64, error) {
	if ch < 0 || ch > 3 {
		return 0, fmt.Errorf("ads1115: channel %d is not 0..3", ch)
	}
	cfg := Config(cfgMuxSingle+uint16(ch), d.pga, d.dr)
	if err := d.dev.Tx([]byte{regConfig, byte(cfg >> 8), byte(cfg)}, nil); err != nil {
		return 0, fmt.Errorf("ads1115: start conversion of AIN%d: %w", ch, err)
	}
	d.sleep(d.wait)
	var b [2]byte
	for i := 0; ; i++ {
		if err := d.dev.Tx([]byte{regConfig}, b[:]); err != nil {
			return 0, fmt.Errorf("ads1115: read config: %w", err)
		}
		if binary.BigEndian.Uint16(b[:])&cfgOS != 0 {
			break
		}
		if i == 3 {
			return 0, errors.New("ads1115: conversion did not finish")
		}
		d.sleep(d.wait / 4)
	}
	if err := d.dev.Tx([]byte{regConversion}, b[:]); err != nil {
		return 0, fmt.Errorf("ads1115: read conversion of AIN%d: %w", ch, err)
	}
	return Volts(int16(binary.BigEndian.Uint16(b[:])), d.fullScale), nil
}

// String names the chip and where it answers, as periph's drivers do.
func (d *Dev) String() string { return fmt.Sprintf("ADS1115{%s %#x}", d.dev.Bus, d.dev.Addr) }

// Halt has nothing to stop: each single-shot conversion powers the converter down.
func (d *Dev) Halt() error { return nil }

var _ conn.Resource = &Dev{}
