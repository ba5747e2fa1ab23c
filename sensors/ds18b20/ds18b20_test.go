package ds18b20

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func TestCelsiusDatasheetTable(t *testing.T) {
	// Datasheet table 1, temperature/data relationship.
	for raw, want := range map[uint16]float64{
		0x07D0: 125, 0x0550: 85, 0x0191: 25.0625, 0x00A2: 10.125, 0x0008: 0.5, 0x0000: 0,
		0xFFF8: -0.5, 0xFF5E: -10.125, 0xFE6F: -25.0625, 0xFC90: -55,
	} {
		if got := Celsius(int16(raw)); got != want {
			t.Errorf("Celsius(%#04x) = %g, datasheet says %g", raw, got, want)
		}
	}
}

func TestCRC8PublishedScratchpads(t *testing.T) {
	// Scratchpads as printed by the kernel on real devices: a 23.125 °C
	// reading and the power-on state, each ending in its CRC byte.
	for _, sp := range [][]byte{
		{0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57},
		{0x50, 0x05, 0x4b, 0x46, 0x7f, 0xff, 0x0c, 0x10, 0x1c},
	} {
		if got := CRC8(sp[:8]); got != sp[8] {
			t.Errorf("CRC8(% x) = %#02x, device sent %#02x", sp[:8], got, sp[8])
		}
	}
	// A CRC over the data and its own CRC is zero.
	if CRC8([]byte{0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57}) != 0 {
		t.Error("residue is not zero")
	}
}

func TestFixtureDirectory(t *testing.T) {
	fsys := os.DirFS("testdata/w1")
	ids, err := Devices(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"28-000005e2fdc3", "28-00000a0b0c0d", "28-0000000000aa", "28-0000000000bb", "28-0316a2794cff"}
	slices.Sort(ids)
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("Devices = %v, want %v (the bus master and other families excluded)", ids, want)
	}
	cases := []struct {
		id   string
		want float64
		err  error
	}{
		{"28-0316a2794cff", 23.125, nil},
		{"28-000005e2fdc3", -10.125, nil},
		{"28-00000a0b0c0d", 0, ErrPowerOn},
		{"28-0000000000aa", 0, ErrCRC},
		{"28-0000000000bb", 0, ErrNoDevice},
		{"28-ffffffffffff", 0, os.ErrNotExist},
	}
	for _, c := range cases {
		got, err := Read(fsys, c.id)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err %v, want %v", c.id, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s = %g, %v; want %g", c.id, got, err, c.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
	cases := map[string]string{
		"":          "want 2",
		"garbage\n": "1 lines",
		strings.Replace(good, "t=23125", "t=24000", 1): "kernel says 24000",
		strings.Replace(good, "t=23125", "t=x", 1):     "bad t=",
		strings.Replace(good, "t=23125", "", 1):        "no t=",
		// Kernel says YES but the bytes do not check: corrupted in transit.
		strings.Replace(good, "0e 10 57 :", "0e 11 57 :", 1): "crc mismatch",
		"zz : crc=00 YES\nzz t=0\n":                          "malformed scratchpad",
		// 0x07E0 = 126 °C, one degree above the device's range.
		"e0 07 4b 46 7f ff 0c 10 08 : crc=08 YES\ne0 07 4b 46 7f ff 0c 10 08 t=126000\n": "outside",
	}
	for in, want := range cases {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", in, err, want)
		}
	}
	if _, err := Read(fstest.MapFS{}, "../etc"); err == nil || !strings.Contains(err.Error(), "not a DS18B20 id") {
		t.Errorf("path outside the w1 directory: %v", err)
	}
}

// FuzzParse: w1_slave contents come from a kernel driver talking to a
// device over a long wire; a garbled file must give an error, not a panic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
		"50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
		"ff ff ff ff ff ff ff ff ff : crc=c9 NO\nff ff ff ff ff ff ff ff ff t=-62\n",
		"", "\n\n", " : crc= YES\n t=",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && (c < -55 || c > 125) {
			t.Fatalf("accepted %g °C, outside what the register can hold", c)
		}
	})
}
