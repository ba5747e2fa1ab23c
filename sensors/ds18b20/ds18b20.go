// Package ds18b20 reads Maxim DS18B20 temperature sensors through the Linux
// kernel's 1-Wire (w1) sysfs interface, /sys/bus/w1/devices/28-*/w1_slave,
// which the w1-gpio overlay provides on a Raspberry Pi.
//
// The kernel runs the conversion when the file is read (about 750 ms at
// 12-bit resolution) and prints the scratchpad twice:
//
//	72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
//	72 01 4b 46 7f ff 0e 10 57 t=23125
//
// A reading is accepted only when the kernel says YES, the scratchpad's
// Dallas CRC checks here too, and it is not a value the device reports when
// it did not convert: all zeros (no device answered) or the power-on reset
// value 85 °C (datasheet table 1: 0x0550), which appears after a brown-out
// or with parasite power too weak to convert.
package ds18b20

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// Family is the 1-Wire family code of the DS18B20, the prefix of its id.
const Family = "28-"

// Errors a reading can fail with; the caller retries on the next poll.
var (
	ErrCRC      = errors.New("ds18b20: crc mismatch")
	ErrPowerOn  = errors.New("ds18b20: power-on reset value 85 °C (the conversion did not run; check power or the pull-up)")
	ErrNoDevice = errors.New("ds18b20: no data (device disconnected?)")
)

// powerOnRaw is the temperature register after power-on: +85 °C.
const powerOnRaw = 0x0550

// Devices lists the ids of the DS18B20s in a w1 devices directory.
func Devices(fsys fs.FS) ([]string, error) {
	matches, err := fs.Glob(fsys, Family+"*")
	if err != nil {
		return nil, fmt.Errorf("ds18b20: list devices: %w", err)
	}
	return matches, nil
}

// Read reads the device with the given id (e.g. "28-0316a2794cff") under
// fsys, which is rooted at /sys/bus/w1/devices. It returns °C.
func Read(fsys fs.FS, id string) (float64, error) {
	if !strings.HasPrefix(id, Family) || !fs.ValidPath(id) || strings.Contains(id, "/") {
		return 0, fmt.Errorf("ds18b20: %q is not a DS18B20 id (28-xxxxxxxxxxxx)", id)
	}
	b, err := fs.ReadFile(fsys, path.Join(id, "w1_slave"))
	if err != nil {
		return 0, fmt.Errorf("ds18b20: %w", err)
	}
	t, err := Parse(b)
	if err != nil {
		return 0, fmt.Errorf("%w (device %s)", err, id)
	}
	return t, nil
}

// Parse parses the contents of a w1_slave file and returns °C.
func Parse(b []byte) (float64, error) {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) != 2 {
		return 0, fmt.Errorf("ds18b20: w1_slave has %d lines, want 2", len(lines))
	}
	first := string(lines[0])
	status, ok := strings.CutSuffix(first, " YES")
	if !ok {
		return 0, ErrCRC
	}
	sp, _, ok := strings.Cut(status, " : crc=")
	if !ok {
		return 0, fmt.Errorf("ds18b20: malformed line %q", first)
	}
	scratch, err := hex.DecodeString(strings.ReplaceAll(sp, " ", ""))
	if err != nil || len(scratch) != 9 {
		return 0, fmt.Errorf("ds18b20: malformed scratchpad %q", sp)
	}
	if bytes.Equal(scratch, make([]byte, 9)) {
		return 0, ErrNoDevice
	}
	if CRC8(scratch[:8]) != scratch[8] {
		return 0, ErrCRC
	}
	raw := int16(uint16(scratch[1])<<8 | uint16(scratch[0]))
	if raw == powerOnRaw {
		return 0, ErrPowerOn
	}
	// The kernel's t= is the same register in milli-°C; check that they
	// agree so a change in the kernel's format cannot go unnoticed.
	_, milli, ok := bytes.Cut(lines[1], []byte("t="))
	if !ok {
		return 0, fmt.Errorf("ds18b20: no t= in %q", lines[1])
	}
	m, err := strconv.Atoi(string(milli))
	if err != nil {
		return 0, fmt.Errorf("ds18b20: bad t= value %q", milli)
	}
	c := Celsius(raw)
	if c < -55 || c > 125 {
		return 0, fmt.Errorf("ds18b20: %g °C is outside the sensor's -55..125 °C range", c)
	}
	if d := float64(m)/1000 - c; d > 0.001 || d < -0.001 {
		return 0, fmt.Errorf("ds18b20: kernel says %d m°C but the scratchpad says %g °C", m, c)
	}
	return c, nil
}

// Celsius converts the temperature register (two's complement, 1/16 °C per
// bit at 12-bit resolution; lower resolutions leave the low bits zero).
func Celsius(raw int16) float64 { return float64(raw) / 16 }

// CRC8 is the Dallas/Maxim 1-Wire CRC: polynomial x^8 + x^5 + x^4 + 1,
// processed least significant bit first (0x8C reflected), initial value 0.
func CRC8(data []byte) byte {
	var crc byte
	for _, b := range data {
		for range 8 {
			mix := (crc ^ b) & 1
			crc >>= 1
			if mix != 0 {
				crc ^= 0x8C
			}
			b >>= 1
		}
	}
	return crc
}
