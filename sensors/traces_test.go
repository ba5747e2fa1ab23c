package sensors

import (
	"errors"
	"sync/atomic"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"
)

// Register traces of each driver, repeated for n readings. The values are
// those the driver packages check against the datasheets.

// A real BME280's calibration and one measurement: 23.72 °C,
// 100942.6953125 Pa, 65.3056 %RH (see bmx280's tests).
var (
	bmeCalib  = []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}
	bmeCalibH = []byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}
	bmeData   = []byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0, 0x7a, 0x76}
)

func bmeOpenOps(addr uint16, id byte) []i2ctest.IO {
	ops := []i2ctest.IO{{Addr: addr, W: []byte{0xD0}, R: []byte{id}}}
	if id != 0x60 {
		return append(ops, i2ctest.IO{Addr: addr, W: []byte{0x88}, R: bmeCalib[:24]})
	}
	return append(ops,
		i2ctest.IO{Addr: addr, W: []byte{0x88}, R: bmeCalib},
		i2ctest.IO{Addr: addr, W: []byte{0xE1}, R: bmeCalibH})
}

func bmeReadOps(addr uint16) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: addr, W: []byte{0xF2, 0x01, 0xF4, 0x25}},
		{Addr: addr, W: []byte{0xF3}, R: []byte{0}},
		{Addr: addr, W: []byte{0xF7}, R: bmeData},
	}
}

func bmeOps(addr uint16, n int) []i2ctest.IO {
	ops := bmeOpenOps(addr, 0x60)
	for range n {
		ops = append(ops, bmeReadOps(addr)...)
	}
	return ops
}

// SHT3x: 25 °C, 50.0008 %RH.
func shtOps(addr uint16, n int) []i2ctest.IO {
	ops := []i2ctest.IO{{Addr: addr, W: []byte{0xF3, 0x2D}}, {Addr: addr, R: []byte{0x80, 0x10, 0xE1}}}
	for range n {
		ops = append(ops,
			i2ctest.IO{Addr: addr, W: []byte{0x24, 0x00}},
			i2ctest.IO{Addr: addr, R: []byte{0x66, 0x66, 0x93, 0x80, 0x00, 0xA2}})
	}
	return ops
}

// BH1750: the datasheet's example, 28066.67 lx.
func bhOps(addr uint16, n int) []i2ctest.IO {
	ops := []i2ctest.IO{{Addr: addr, W: []byte{0x01}}}
	for range n {
		ops = append(ops, i2ctest.IO{Addr: addr, W: []byte{0x20}}, i2ctest.IO{Addr: addr, R: []byte{0x83, 0x90}})
	}
	return ops
}

// ADS1115 at ±4.096 V, 128 SPS, channels 0 (code 0x4000 = 2.048 V) and 3
// (code 0xFFFF = -125 µV).
func adsOps(addr uint16, n int) []i2ctest.IO {
	ops := []i2ctest.IO{{Addr: addr, W: []byte{0x01}}}
	ops[0].R = []byte{0x85, 0x83}
	for range n {
		for _, c := range []struct {
			cfg  uint16
			code []byte
		}{{0xC383, []byte{0x40, 0x00}}, {0xF383, []byte{0xFF, 0xFF}}} {
			hi, lo := byte(c.cfg>>8), byte(c.cfg)
			ops = append(ops,
				i2ctest.IO{Addr: addr, W: []byte{0x01, hi, lo}},
				i2ctest.IO{Addr: addr, W: []byte{0x01}, R: []byte{hi, lo}},
				i2ctest.IO{Addr: addr, W: []byte{0x00}, R: c.code})
		}
	}
	return ops
}

// addrBus is one I²C bus with several devices: it routes each transfer to
// the playback of the addressed device, so each device's trace is checked
// in order whatever the order the sensors are polled in.
type addrBus struct {
	devs map[uint16]*i2ctest.Playback
}

func (b *addrBus) String() string { return "addrbus" }
func (b *addrBus) Tx(addr uint16, w, r []byte) error {
	p, ok := b.devs[addr]
	if !ok {
		return errors.New("no device answers (NACK)")
	}
	return p.Tx(addr, w, r)
}
func (b *addrBus) SetSpeed(physic.Frequency) error { return nil }
func (b *addrBus) Close() error                    { return nil }

// flakyBus fails transfers on demand, like a bus with a loose wire.
type flakyBus struct {
	inner    i2c.Bus
	failing  atomic.Bool  // fail every transfer
	failNext atomic.Int32 // fail this many transfers
}

func (b *flakyBus) String() string { return "flaky" }
func (b *flakyBus) Tx(addr uint16, w, r []byte) error {
	if b.failing.Load() {
		return errors.New("i2c: remote I/O error")
	}
	if b.failNext.Load() > 0 {
		b.failNext.Add(-1)
		return errors.New("i2c: remote I/O error")
	}
	return b.inner.Tx(addr, w, r)
}
func (b *flakyBus) SetSpeed(physic.Frequency) error { return nil }
func (b *flakyBus) Close() error                    { return nil }
