package bh1750

import (
	"math"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

func TestDatasheetExample(t *testing.T) {
	// Page 7: high byte 1000_0011, low byte 1001_0000 gives
	// (2^15+2^9+2^8+2^7+2^4)/1.2 ≈ 28067 lx.
	if got := Lux(0b1000_0011_1001_0000); math.Round(got) != 28067 {
		t.Errorf("Lux(0x8390) = %g, datasheet says 28067", got)
	}
	if Lux(0xFFFF) != 54612.5 {
		t.Errorf("full scale %g, datasheet range is 1-65535 lx at 1.2 counts/lx", Lux(0xFFFF))
	}
}

func TestSensePlayback(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{
		{Addr: 0x23, W: []byte{0x01}},
		{Addr: 0x23, W: []byte{0x20}},
		{Addr: 0x23, R: []byte{0x83, 0x90}},
	}}
	var slept time.Duration
	d, err := New(bus, 0x23, func(d time.Duration) { slept += d })
	if err != nil {
		t.Fatal(err)
	}
	lux, err := d.Sense()
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(lux-28066.667) > 0.001 {
		t.Errorf("lux %g", lux)
	}
	if slept < 180*time.Millisecond {
		t.Errorf("waited %s; H-resolution mode takes up to 180 ms", slept)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	if _, err := New(&i2ctest.Playback{DontPanic: true}, 0x23, nil); err == nil {
		t.Error("New on an empty bus succeeded")
	}
	if _, err := New(&i2ctest.Playback{}, 0x24, nil); err == nil {
		t.Error("address 0x24 accepted")
	}
	bus := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{{Addr: 0x5C, W: []byte{0x01}}}}
	d, err := New(bus, 0x5C, func(time.Duration) {})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Sense(); err == nil {
		t.Error("Sense without a device answering succeeded")
	}
}

// A Dev is a periph conn.Resource that names the chip and where it answers.
func TestString(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{{Addr: 0x5C, W: []byte{0x01}}}}
	d, err := New(bus, 0x5C, func(time.Duration) {})
	if err != nil {
		t.Fatal(err)
	}
	if s := d.String(); !strings.Contains(s, "BH1750") || !strings.Contains(s, "0x5c") {
		t.Errorf("String() = %q, want the chip and its address", s)
	}
	if err := d.Halt(); err != nil {
		t.Fatal(err)
	}
}
