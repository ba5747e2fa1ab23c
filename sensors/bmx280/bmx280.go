// Package bmx280 drives the Bosch BMP280 (temperature, pressure) and BME280
// (temperature, pressure, humidity) over I²C, with the compensation formulas
// of the Bosch datasheets (BST-BMP280-DS001, BST-BME280-DS002, section 4.2.3:
// the 32-bit integer temperature, 64-bit integer pressure and 32-bit integer
// humidity versions).
//
// The device runs in forced mode with 1x oversampling and no IIR filter:
// one conversion per Sense, then it sleeps, which is the datasheet's
// recommendation for weather monitoring (section 3.5.1) and draws about
// 0.16 µA between readings.
package bmx280

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"periph.io/x/conn/v3/i2c"
)

// Chip identifies the device by its id register (0xD0).
type Chip uint8

// Chip ids from the datasheets; 0x56 and 0x57 are BMP280 engineering samples.
const (
	BMP280 Chip = 0x58
	BME280 Chip = 0x60
)

func (c Chip) String() string {
	switch c {
	case BME280:
		return "BME280"
	case BMP280, 0x56, 0x57:
		return "BMP280"
	}
	return fmt.Sprintf("unknown chip id %#02x", uint8(c))
}

// Registers.
const (
	regCalib   = 0x88 // calib00..calib25: dig_T1..dig_P9, reserved, dig_H1 at 0xA1
	regID      = 0xD0
	regCalibH  = 0xE1 // calib26..calib32: dig_H2..dig_H6
	regCtrlHum = 0xF2
	regStatus  = 0xF3
	regCtrlMea = 0xF4
	regData    = 0xF7 // press_msb .. hum_lsb
)

// ctrl_meas for forced mode, osrs_t = osrs_p = 1x: 001 001 01.
const ctrlMeasForced = 1<<5 | 1<<2 | 1

// ctrl_hum: osrs_h = 1x. It only takes effect after a write to ctrl_meas,
// so it is written first in the same transaction.
const ctrlHum1x = 1

// statusMeasuring is set while a conversion runs.
const statusMeasuring = 1 << 3

// measureWait is the datasheet's maximum measurement time for 1x
// oversampling of all three channels: 1.25 + 2.3 + 2.875 + 2.875 = 9.3 ms.
const measureWait = 10 * time.Millisecond

// skipped is the value of a 20-bit channel that was not measured (0x80000);
// reading it means the device reset or never ran a conversion.
const skipped = 0x80000

// Env is one compensated measurement.
type Env struct {
	Temperature float64 // °C, 0.01 °C resolution
	Pressure    float64 // Pa, 1/256 Pa resolution
	Humidity    float64 // %RH, 1/1024 %RH resolution; 0 on a BMP280
}

// Dev is one BMP280 or BME280 on an I²C bus. It does not own the bus.
type Dev struct {
	dev   i2c.Dev
	chip  Chip
	cal   Calibration
	sleep func(time.Duration)
}

// ReadChip reads the chip id register of the device at addr, and refuses an id that is
// neither a BMP280's nor a BME280's (another chip answering at the address). It only
// reads: moongate init probes buses with it.
func ReadChip(bus i2c.Bus, addr uint16) (Chip, error) {
	var id [1]byte
	if err := bus.Tx(addr, []byte{regID}, id[:]); err != nil {
		return 0, fmt.Errorf("bmx280: read chip id: %w", err)
	}
	switch c := Chip(id[0]); c {
	case BME280, BMP280, 0x56, 0x57:
		return c, nil
	}
	return 0, fmt.Errorf("bmx280: chip id %#02x is neither a BMP280 (0x56-0x58) nor a BME280 (0x60)", id[0])
}

// New identifies the device at addr (0x76 or 0x77) and reads its
// calibration. sleep waits for conversions (nil: time.Sleep); tests pass a no-op.
func New(bus i2c.Bus, addr uint16, sleep func(time.Duration)) (*Dev, error) {
	if sleep == nil {
		sleep = time.Sleep
	}
	if addr != 0x76 && addr != 0x77 {
		return nil, fmt.Errorf("bmx280: address %#x is not 0x76 or 0x77", addr)
	}
	d := &Dev{dev: i2c.Dev{Bus: bus, Addr: addr}, sleep: sleep}
	chip, err := ReadChip(bus, addr)
	if err != nil {
		return nil, err
	}
	d.chip = chip
	var c [26]byte
	n := 24
	if d.chip == BME280 {
		n = 26 // up to dig_H1 at 0xA1
	}
	if err := d.dev.Tx([]byte{regCalib}, c[:n]); err != nil {
		return nil, fmt.Errorf("bmx280: read calibration: %w", err)
	}
	var h [7]byte
	if d.chip == BME280 {
		if err := d.dev.Tx([]byte{regCalibH}, h[:]); err != nil {
			return nil, fmt.Errorf("bmx280: read humidity calibration: %w", err)
		}
	}
	d.cal = parseCalibration(c, h)
	return d, nil
}

// Chip reports which device answered.
func (d *Dev) Chip() Chip { return d.chip }

// Sense runs one forced-mode conversion and returns the compensated values.
func (d *Dev) Sense() (Env, error) {
	cmd := []byte{regCtrlMea, ctrlMeasForced}
	if d.chip == BME280 {
		cmd = []byte{regCtrlHum, ctrlHum1x, regCtrlMea, ctrlMeasForced}
	}
	if err := d.dev.Tx(cmd, nil); err != nil {
		return Env{}, fmt.Errorf("bmx280: start conversion: %w", err)
	}
	d.sleep(measureWait)
	var st [1]byte
	for i := 0; ; i++ {
		if err := d.dev.Tx([]byte{regStatus}, st[:]); err != nil {
			return Env{}, fmt.Errorf("bmx280: read status: %w", err)
		}
		if st[0]&statusMeasuring == 0 {
			break
		}
		if i == 5 {
			return Env{}, errors.New("bmx280: conversion did not finish")
		}
		d.sleep(2 * time.Millisecond)
	}
	var raw [8]byte
	n := 6
	if d.chip == BME280 {
		n = 8
	}
	if err := d.dev.Tx([]byte{regData}, raw[:n]); err != nil {
		return Env{}, fmt.Errorf("bmx280: read data: %w", err)
	}
	adcP := int32(raw[0])<<12 | int32(raw[1])<<4 | int32(raw[2])>>4
	adcT := int32(raw[3])<<12 | int32(raw[4])<<4 | int32(raw[5])>>4
	if adcT == skipped || adcP == skipped {
		return Env{}, errors.New("bmx280: no conversion data (device reset?)")
	}
	tFine, t := d.cal.compensateT(adcT)
	p := d.cal.compensateP(adcP, tFine)
	if p == 0 {
		return Env{}, errors.New("bmx280: pressure compensation divided by zero (bad calibration?)")
	}
	e := Env{Temperature: float64(t) / 100, Pressure: float64(p) / 256}
	if d.chip == BME280 {
		adcH := int32(binary.BigEndian.Uint16(raw[6:8]))
		e.Humidity = float64(d.cal.compensateH(adcH, tFine)) / 1024
	}
	return e, nil
}

// Calibration holds the trimming parameters, named as in the datasheets.
type Calibration struct {
	T1                             uint16
	T2, T3                         int16
	P1                             uint16
	P2, P3, P4, P5, P6, P7, P8, P9 int16
	H1                             uint8
	H2                             int16
	H3                             uint8
	H4, H5                         int16 // 12-bit signed
	H6                             int8
}

func parseCalibration(c [26]byte, h [7]byte) Calibration {
	u := func(i int) uint16 { return binary.LittleEndian.Uint16(c[i:]) }
	s := func(i int) int16 { return int16(u(i)) }
	return Calibration{
		T1: u(0), T2: s(2), T3: s(4),
		P1: u(6), P2: s(8), P3: s(10), P4: s(12), P5: s(14), P6: s(16), P7: s(18), P8: s(20), P9: s(22),
		H1: c[25],
		H2: int16(binary.LittleEndian.Uint16(h[0:])),
		H3: h[2],
		// dig_H4 is 0xE4[7:0] / 0xE5[3:0], dig_H5 is 0xE5[7:4] / 0xE6[7:0]; the
		// high byte carries the sign.
		H4: int16(int8(h[3]))<<4 | int16(h[4]&0x0F),
		H5: int16(int8(h[5]))<<4 | int16(h[4]>>4),
		H6: int8(h[6]),
	}
}

// compensateT returns t_fine and the temperature in 0.01 °C
// (BME280_compensate_T_int32). Go's int32 arithmetic wraps and shifts
// like the reference C code on two's complement machines.
func (c *Calibration) compensateT(adcT int32) (tFine, t int32) {
	var1 := ((adcT >> 3) - int32(c.T1)<<1) * int32(c.T2) >> 11
	d := (adcT >> 4) - int32(c.T1)
	var2 := ((d * d) >> 12) * int32(c.T3) >> 14
	tFine = var1 + var2
	return tFine, (tFine*5 + 128) >> 8
}

// compensateP returns the pressure in Pa as Q24.8, or 0 when the
// calibration would divide by zero (BME280_compensate_P_int64).
func (c *Calibration) compensateP(adcP, tFine int32) uint32 {
	var1 := int64(tFine) - 128000
	var2 := var1 * var1 * int64(c.P6)
	var2 += (var1 * int64(c.P5)) << 17
	var2 += int64(c.P4) << 35
	var1 = (var1*var1*int64(c.P3))>>8 + (var1*int64(c.P2))<<12
	var1 = ((int64(1)<<47 + var1) * int64(c.P1)) >> 33
	if var1 == 0 {
		return 0
	}
	p := int64(1048576 - adcP)
	p = ((p<<31 - var2) * 3125) / var1
	var1 = (int64(c.P9) * (p >> 13) * (p >> 13)) >> 25
	var2 = (int64(c.P8) * p) >> 19
	return uint32((p+var1+var2)>>8 + int64(c.P7)<<4)
}

// compensateH returns the relative humidity in %RH as Q22.10
// (bme280_compensate_H_int32).
func (c *Calibration) compensateH(adcH, tFine int32) uint32 {
	x := tFine - 76800
	// Go's shifts bind tighter than + and -, unlike C's, so every C
	// sub-expression is kept in its own parentheses.
	left := ((adcH << 14) - (int32(c.H4) << 20) - (int32(c.H5) * x) + 16384) >> 15
	inner := ((x * int32(c.H6)) >> 10) * (((x * int32(c.H3)) >> 11) + 32768)
	right := ((((inner >> 10) + 2097152) * int32(c.H2)) + 8192) >> 14
	x = left * right
	x -= ((((x >> 15) * (x >> 15)) >> 7) * int32(c.H1)) >> 4
	x = max(x, 0)
	x = min(x, 419430400)
	return uint32(x >> 12)
}
