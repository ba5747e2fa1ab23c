// Package sht3x drives the Sensirion SHT30/SHT31/SHT35 humidity and
// temperature sensors over I²C, in single-shot mode without clock
// stretching, following the SHT3x-DIS datasheet: conversion formulas in
// section 4.13 and the CRC-8 of section 4.12.
package sht3x

import (
	"encoding/binary"
	"fmt"
	"time"

	"periph.io/x/conn/v3"

	"periph.io/x/conn/v3/i2c"
)

// Commands (datasheet table 9 and section 4.11).
var (
	cmdMeasureHigh = []byte{0x24, 0x00} // single shot, high repeatability, no clock stretching
	cmdReadStatus  = []byte{0xF3, 0x2D}
)

// measureWait covers the high-repeatability maximum of 15.5 ms (table 4).
const measureWait = 16 * time.Millisecond

// Dev is one SHT3x on an I²C bus. It does not own the bus.
type Dev struct {
	dev   i2c.Dev
	sleep func(time.Duration)
}

// New checks that a sensor answers at addr (0x44 or 0x45) by reading its
// status register and checking the CRC. sleep waits for conversions (nil:
// time.Sleep).
func New(bus i2c.Bus, addr uint16, sleep func(time.Duration)) (*Dev, error) {
	if sleep == nil {
		sleep = time.Sleep
	}
	if addr != 0x44 && addr != 0x45 {
		return nil, fmt.Errorf("sht3x: address %#x is not 0x44 or 0x45", addr)
	}
	d := &Dev{dev: i2c.Dev{Bus: bus, Addr: addr}, sleep: sleep}
	if err := d.dev.Tx(cmdReadStatus, nil); err != nil {
		return nil, fmt.Errorf("sht3x: read status: %w", err)
	}
	var st [3]byte
	if err := d.dev.Tx(nil, st[:]); err != nil {
		return nil, fmt.Errorf("sht3x: read status: %w", err)
	}
	if _, err := word(st[:]); err != nil {
		return nil, fmt.Errorf("sht3x: status register: %w", err)
	}
	return d, nil
}

// Sense runs one measurement and returns the temperature in °C and the
// relative humidity in %RH.
func (d *Dev) Sense() (temp, rh float64, err error) {
	if err := d.dev.Tx(cmdMeasureHigh, nil); err != nil {
		return 0, 0, fmt.Errorf("sht3x: start measurement: %w", err)
	}
	d.sleep(measureWait)
	var b [6]byte
	if err := d.dev.Tx(nil, b[:]); err != nil {
		return 0, 0, fmt.Errorf("sht3x: read measurement: %w", err)
	}
	st, err := word(b[0:3])
	if err != nil {
		return 0, 0, fmt.Errorf("sht3x: temperature: %w", err)
	}
	srh, err := word(b[3:6])
	if err != nil {
		return 0, 0, fmt.Errorf("sht3x: humidity: %w", err)
	}
	return Temperature(st), Humidity(srh), nil
}

// Temperature converts a raw reading: T = -45 + 175 * S_T / (2^16 - 1).
func Temperature(raw uint16) float64 { return -45 + 175*float64(raw)/65535 }

// Humidity converts a raw reading: RH = 100 * S_RH / (2^16 - 1).
func Humidity(raw uint16) float64 { return 100 * float64(raw) / 65535 }

// word checks the CRC that follows every 16-bit word the sensor sends.
func word(b []byte) (uint16, error) {
	if got := CRC8(b[:2]); got != b[2] {
		return 0, fmt.Errorf("crc %#02x, want %#02x", b[2], got)
	}
	return binary.BigEndian.Uint16(b), nil
}

// CRC8 is the checksum of the datasheet's table 19: polynomial 0x31
// (x^8 + x^5 + x^4 + 1), initial value 0xFF, no reflection, no final XOR.
func CRC8(data []byte) byte {
	crc := byte(0xFF)
	for _, b := range data {
		crc ^= b
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// String names the chip and where it answers, as periph's drivers do.
func (d *Dev) String() string { return fmt.Sprintf("SHT3x{%s %#x}", d.dev.Bus, d.dev.Addr) }

// Halt has nothing to stop: each single-shot measurement leaves the sensor idle.
func (d *Dev) Halt() error { return nil }

var _ conn.Resource = &Dev{}
