package sensors

import (
	"fmt"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

// A bus where only the listed devices answer: Playback with DontPanic fails every other
// transaction, as a NACK would, and Close fails if a listed one was not made.
func TestProbe(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{
		{Addr: 0x23, W: []byte{0x01}},                                                  // BH1750 power on
		{Addr: 0x45, W: []byte{0xF3, 0x2D}}, {Addr: 0x45, R: []byte{0x00, 0x00, 0x81}}, // SHT3x status, CRC of 0x0000
		{Addr: 0x48, W: []byte{0x01}, R: []byte{0x85, 0x83}}, // ADS1115 config at reset
		{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x60}},       // BME280
		{Addr: 0x77, W: []byte{0xD0}, R: []byte{0x61}},       // a BME680: not ours
	}}
	got := Probe(bus)
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{"bh1750 0x23", "sht3x 0x45", "ads1115 0x48", "bme280 0x76"}
	if len(got) != len(want) {
		t.Fatalf("found %+v", got)
	}
	for i, f := range got {
		if s := fmt.Sprintf("%s %#x", f.Driver, f.Addr); s != want[i] || f.What == "" {
			t.Errorf("found[%d] = %s (%s), want %s", i, s, f.What, want[i])
		}
	}
	if got[3].What != "a BME280 (chip id 0x60)" {
		t.Errorf("what: %q", got[3].What)
	}

	empty := &i2ctest.Playback{DontPanic: true}
	if f := Probe(empty); len(f) != 0 {
		t.Errorf("an empty bus: %+v", f)
	}
}
