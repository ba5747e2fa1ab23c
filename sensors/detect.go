package sensors

import (
	"fmt"
	"slices"

	"periph.io/x/conn/v3/i2c"

	"github.com/moongate/moongate/sensors/ads1115"
	"github.com/moongate/moongate/sensors/bh1750"
	"github.com/moongate/moongate/sensors/bmx280"
	"github.com/moongate/moongate/sensors/sht3x"
)

// Found is a chip that answered on an I²C bus at an address one of the drivers reads.
type Found struct {
	Driver string
	Addr   uint16
	What   string // what the probe saw, for a person: "a BME280 (chip id 0x60)"
}

// Probe looks for the drivers' chips on bus, as i2cdetect would, but only at the
// drivers' addresses (i2cAddrs) and with each driver's own first transaction: the
// BMx280's chip id register, the SHT3x's status register with its CRC, the ADS1115's
// config register, the BH1750's power-on command (which is what the driver sends at
// start). A device that does not answer, or answers as another chip, is left out.
// Addresses are probed in ascending order.
func Probe(bus i2c.Bus) []Found {
	byAddr := map[uint16][]string{}
	for _, d := range drivers {
		for _, a := range i2cAddrs[d] {
			byAddr[a] = append(byAddr[a], d)
		}
	}
	addrs := make([]uint16, 0, len(byAddr))
	for a := range byAddr {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	var found []Found
	for _, a := range addrs {
		if f, ok := probeAt(bus, a, byAddr[a]); ok {
			found = append(found, f)
		}
	}
	return found
}

// probeAt tries the drivers that read addr (bme280 and bmp280 share theirs).
func probeAt(bus i2c.Bus, addr uint16, at []string) (Found, bool) {
	switch {
	case slices.Contains(at, DriverBME280):
		chip, err := bmx280.ReadChip(bus, addr)
		if err != nil {
			return Found{}, false
		}
		d := DriverBMP280
		if chip == bmx280.BME280 {
			d = DriverBME280
		}
		return Found{Driver: d, Addr: addr, What: fmt.Sprintf("a %s (chip id %#02x)", chip, uint8(chip))}, true
	case slices.Contains(at, DriverSHT3x):
		if _, err := sht3x.New(bus, addr, nil); err != nil {
			return Found{}, false
		}
		return Found{Driver: DriverSHT3x, Addr: addr, What: "an SHT3x (its status register read with a good CRC)"}, true
	case slices.Contains(at, DriverADS1115):
		if _, err := ads1115.New(bus, addr, ads1115.Opts{}, nil); err != nil {
			return Found{}, false
		}
		return Found{Driver: DriverADS1115, Addr: addr, What: "a device that reads as an ADS1115 (config register); other chips share these addresses"}, true
	case slices.Contains(at, DriverBH1750):
		if _, err := bh1750.New(bus, addr, nil); err != nil {
			return Found{}, false
		}
		return Found{Driver: DriverBH1750, Addr: addr, What: "a device that took the BH1750's power-on command"}, true
	}
	return Found{}, false
}
