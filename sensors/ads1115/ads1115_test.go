package ads1115

import (
	"math"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

func TestConfigRegister(t *testing.T) {
	// The datasheet's reset value 0x8583 is OS=1, MUX=000 (AIN0-AIN1),
	// PGA=010 (±2.048 V), MODE=1, DR=100 (128 SPS), comparator disabled.
	if got := Config(0, 2, 4); got != 0x8583 {
		t.Errorf("Config(0,2,4) = %#04x, datasheet reset value is 0x8583", got)
	}
	// AIN0 single-ended (MUX=100), ±4.096 V (PGA=001), 128 SPS:
	// 1 100 001 1 100 0 0 0 11.
	if got := Config(0b100, 1, 4); got != 0xC383 {
		t.Errorf("AIN0 ±4.096V = %#04x, want 0xc383", got)
	}
	// AIN3 single-ended (MUX=111), ±6.144 V (PGA=000), 860 SPS (DR=111).
	if got := Config(0b111, 0, 7); got != 0xF1E3 {
		t.Errorf("AIN3 ±6.144V 860SPS = %#04x, want 0xf1e3", got)
	}
}

func TestFullScaleLSB(t *testing.T) {
	// Table 3: LSB size for each full-scale range.
	lsb := map[float64]float64{6.144: 187.5e-6, 4.096: 125e-6, 2.048: 62.5e-6, 1.024: 31.25e-6, 0.512: 15.625e-6, 0.256: 7.8125e-6}
	for fs, want := range lsb {
		if got := Volts(1, fs); math.Abs(got-want) > 1e-15 {
			t.Errorf("1 LSB at ±%gV = %g, want %g", fs, got, want)
		}
	}
	// Table 4: output codes at the ends of the range.
	fs := 4.096
	for _, c := range []struct {
		code int16
		want float64
	}{
		{0x7FFF, fs * (32767.0 / 32768)},
		{0x0001, fs / 32768},
		{0, 0},
		{-1, -fs / 32768},    // 0xFFFF
		{math.MinInt16, -fs}, // 0x8000
	} {
		if got := Volts(c.code, fs); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("code %#04x = %g V, want %g", uint16(c.code), got, c.want)
		}
	}
}

func TestReadFourChannels(t *testing.T) {
	ops := []i2ctest.IO{{Addr: 0x48, W: []byte{0x01}, R: []byte{0x85, 0x83}}}
	codes := [][]byte{{0x40, 0x00}, {0x00, 0x01}, {0xFF, 0xFF}, {0x7F, 0xFF}}
	for ch, code := range codes {
		cfg := Config(0b100+uint16(ch), 1, 4)
		ops = append(ops,
			i2ctest.IO{Addr: 0x48, W: []byte{0x01, byte(cfg >> 8), byte(cfg)}},
			i2ctest.IO{Addr: 0x48, W: []byte{0x01}, R: []byte{byte(cfg>>8) &^ 0x80, byte(cfg)}}, // OS=0: busy
			i2ctest.IO{Addr: 0x48, W: []byte{0x01}, R: []byte{byte(cfg >> 8), byte(cfg)}},
			i2ctest.IO{Addr: 0x48, W: []byte{0x00}, R: code},
		)
	}
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	var slept time.Duration
	d, err := New(bus, 0x48, Opts{FullScale: 4.096}, func(d time.Duration) { slept += d })
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{2.048, 125e-6, -125e-6, 4.096 * 32767 / 32768}
	for ch, w := range want {
		v, err := d.Read(ch)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(v-w) > 1e-12 {
			t.Errorf("AIN%d = %g V, want %g", ch, v, w)
		}
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	// Each conversion at 128 SPS takes 7.8 ms (±10%).
	if slept < 4*7812*time.Microsecond {
		t.Errorf("waited %s for 4 conversions", slept)
	}
}

func TestOptionsAndErrors(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true}
	if _, err := New(bus, 0x48, Opts{FullScale: 5}, nil); err == nil || !strings.Contains(err.Error(), "full scale 5V") {
		t.Errorf("got %v", err)
	}
	if _, err := New(bus, 0x48, Opts{DataRate: 100}, nil); err == nil || !strings.Contains(err.Error(), "data rate 100") {
		t.Errorf("got %v", err)
	}
	if _, err := New(bus, 0x50, Opts{}, nil); err == nil {
		t.Error("address 0x50 accepted")
	}
	if _, err := New(bus, 0x49, Opts{}, nil); err == nil || !strings.Contains(err.Error(), "read config") {
		t.Errorf("empty bus: got %v", err)
	}
}
