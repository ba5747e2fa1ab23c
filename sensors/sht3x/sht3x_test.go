package sht3x

import (
	"math"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

func TestCRC8DatasheetExample(t *testing.T) {
	// Table 19: CRC(0xBEEF) = 0x92.
	if got := CRC8([]byte{0xBE, 0xEF}); got != 0x92 {
		t.Fatalf("CRC8(0xBEEF) = %#02x, datasheet says 0x92", got)
	}
}

func TestConversionFormulas(t *testing.T) {
	// Section 4.13: the raw range 0..2^16-1 maps to -45..130 °C and 0..100 %RH.
	cases := []struct {
		raw      uint16
		temp, rh float64
	}{
		{0, -45, 0},
		{0xFFFF, 130, 100},
		{0x6666, 25, 40}, // 0x6666/0xFFFF is exactly 0.4
		{0x8000, -45 + 175*32768.0/65535, 100 * 32768.0 / 65535},
	}
	for _, c := range cases {
		if got := Temperature(c.raw); math.Abs(got-c.temp) > 1e-9 {
			t.Errorf("Temperature(%#04x) = %g, want %g", c.raw, got, c.temp)
		}
		if got := Humidity(c.raw); math.Abs(got-c.rh) > 1e-9 {
			t.Errorf("Humidity(%#04x) = %g, want %g", c.raw, got, c.rh)
		}
	}
}

// status is a valid status register read: 0x8010 (alert pending, reset
// detected, as after power-up) and its CRC.
var status = []byte{0x80, 0x10, 0xE1}

func TestSensePlayback(t *testing.T) {
	if CRC8(status[:2]) != status[2] {
		t.Fatal("bad status fixture")
	}
	// 0x6666 = 25 °C, 0x8000 = 50.0008 %RH, each followed by its CRC.
	data := []byte{0x66, 0x66, 0x93, 0x80, 0x00, 0xA2}
	bus := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{
		{Addr: 0x44, W: []byte{0xF3, 0x2D}},
		{Addr: 0x44, R: status},
		{Addr: 0x44, W: []byte{0x24, 0x00}},
		{Addr: 0x44, R: data},
	}}
	var slept time.Duration
	d, err := New(bus, 0x44, func(d time.Duration) { slept += d })
	if err != nil {
		t.Fatal(err)
	}
	temp, rh, err := d.Sense()
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(temp-25) > 1e-9 || math.Abs(rh-50.00076295) > 1e-6 {
		t.Errorf("got %g °C %g %%RH", temp, rh)
	}
	if slept < 15500*time.Microsecond {
		t.Errorf("waited %s; high repeatability takes up to 15.5 ms", slept)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBadCRC(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{
		{Addr: 0x45, W: []byte{0xF3, 0x2D}},
		{Addr: 0x45, R: status},
		{Addr: 0x45, W: []byte{0x24, 0x00}},
		{Addr: 0x45, R: []byte{0x66, 0x66, 0x00, 0x80, 0x00, 0xA2}},
	}}
	d, err := New(bus, 0x45, func(time.Duration) {})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Sense(); err == nil || !strings.Contains(err.Error(), "temperature: crc") {
		t.Errorf("got %v", err)
	}
}

func TestNoDevice(t *testing.T) {
	if _, err := New(&i2ctest.Playback{DontPanic: true}, 0x44, nil); err == nil {
		t.Error("New on an empty bus succeeded")
	}
	if _, err := New(&i2ctest.Playback{}, 0x40, nil); err == nil || !strings.Contains(err.Error(), "0x40") {
		t.Errorf("got %v", err)
	}
}

// A nil sleep is time.Sleep, not a panic at the first conversion.
func TestNilSleep(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{
		{Addr: 0x44, W: []byte{0xF3, 0x2D}},
		{Addr: 0x44, R: status},
		{Addr: 0x44, W: []byte{0x24, 0x00}},
		{Addr: 0x44, R: []byte{0x66, 0x66, 0x93, 0x80, 0x00, 0xA2}},
	}}
	d, err := New(bus, 0x44, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Sense(); err != nil {
		t.Fatal(err)
	}
}
