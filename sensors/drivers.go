package sensors

import (
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/moongate/moongate/sensors/ads1115"
	"github.com/moongate/moongate/sensors/bh1750"
	"github.com/moongate/moongate/sensors/bmx280"
	"github.com/moongate/moongate/sensors/ds18b20"
	"github.com/moongate/moongate/sensors/expr"
	"github.com/moongate/moongate/sensors/sht3x"
)

// open connects s to its hardware (or simulation) and sets s.read. The
// error names what is missing; the caller adds the sensor's name.
func (m *Manager) open(s *sensor) error {
	switch s.cfg.Driver {
	case DriverSim:
		return m.openSim(s)
	case DriverDS18B20:
		return m.openDS18B20(s)
	case DriverGPIO:
		return m.openPin(s)
	}
	return m.openI2C(s)
}

// sleep waits on the Manager's clock; drivers use it between starting a
// conversion and reading the result. It returns early once Run is
// stopping, so shutdown never waits for a conversion; the reading that
// follows is discarded anyway.
func (m *Manager) sleep(d time.Duration) {
	select {
	case <-m.clock.After(d):
	case <-m.stopping:
	}
}

// bus returns the shared, open bus name, opening it on first use.
func (m *Manager) bus(name string) (*i2cBus, error) {
	m.busMu.Lock()
	defer m.busMu.Unlock()
	if b, ok := m.buses[name]; ok {
		return b, nil
	}
	bc, err := m.opener.OpenI2C(name)
	if err != nil {
		return nil, err
	}
	b := &i2cBus{bus: bc}
	m.buses[name] = b
	return b, nil
}

func (m *Manager) openI2C(s *sensor) error {
	c := s.cfg
	b, err := m.bus(c.bus())
	if err != nil {
		return err
	}
	addr := c.addr()
	where := fmt.Sprintf("%s at i2c bus %s address %#x", c.Driver, c.bus(), addr)
	hint := "check the wiring and the address; i2cdetect -y " + c.bus() + " lists the devices that answer"
	b.mu.Lock()
	defer b.mu.Unlock()
	var read func() (map[string]float64, error)
	switch c.Driver {
	case DriverBME280, DriverBMP280:
		d, err := bmx280.New(b.bus, addr, m.sleep)
		if err != nil {
			return fmt.Errorf("%s: %w (%s)", where, err, hint)
		}
		humidity := c.Driver == DriverBME280
		if humidity && d.Chip() != bmx280.BME280 {
			return fmt.Errorf("%s is a %s, which has no humidity sensor; use driver: bmp280", where, d.Chip())
		}
		read = func() (map[string]float64, error) {
			e, err := d.Sense()
			if err != nil {
				return nil, err
			}
			v := map[string]float64{"temp": e.Temperature, "pressure": e.Pressure / 100}
			if humidity {
				v["humidity"] = e.Humidity
			}
			return v, nil
		}
	case DriverSHT3x:
		d, err := sht3x.New(b.bus, addr, m.sleep)
		if err != nil {
			return fmt.Errorf("%s: %w (%s)", where, err, hint)
		}
		read = func() (map[string]float64, error) {
			t, rh, err := d.Sense()
			if err != nil {
				return nil, err
			}
			return map[string]float64{"temp": t, "humidity": rh}, nil
		}
	case DriverBH1750:
		d, err := bh1750.New(b.bus, addr, m.sleep)
		if err != nil {
			return fmt.Errorf("%s: %w (%s)", where, err, hint)
		}
		read = func() (map[string]float64, error) {
			lux, err := d.Sense()
			if err != nil {
				return nil, err
			}
			return map[string]float64{"lux": lux}, nil
		}
	case DriverADS1115:
		d, err := ads1115.New(b.bus, addr, ads1115.Opts{FullScale: c.Range}, m.sleep)
		if err != nil {
			return fmt.Errorf("%s: %w (%s)", where, err, hint)
		}
		channels := c.adsChannels()
		read = func() (map[string]float64, error) {
			v := make(map[string]float64, len(channels))
			for _, ch := range channels {
				volts, err := d.Read(ch)
				if err != nil {
					return nil, err
				}
				v["a"+strconv.Itoa(ch)] = volts
			}
			return v, nil
		}
	default:
		return fmt.Errorf("driver %q has no opener", c.Driver) // Validate lets no other through
	}
	s.bus = b
	s.read = read
	return nil
}

func (m *Manager) openDS18B20(s *sensor) error {
	id := s.cfg.Device
	hint := "is dtoverlay=w1-gpio in /boot/firmware/config.txt, and the 4.7 kΩ pull-up fitted?"
	if id == "" {
		ids, err := ds18b20.Devices(m.w1)
		if err != nil {
			return err
		}
		switch len(ids) {
		case 0:
			return fmt.Errorf("no DS18B20 (28-*) under %s (%s)", W1Devices, hint)
		case 1:
			id = ids[0]
		default:
			return fmt.Errorf("%d DS18B20s under %s (%s): set device: to one of them", len(ids), W1Devices, strings.Join(ids, ", "))
		}
	} else if _, err := fs.Stat(m.w1, id); err != nil {
		return fmt.Errorf("1-wire device %s not found under %s (%s)", id, W1Devices, hint)
	}
	s.read = func() (map[string]float64, error) {
		t, err := ds18b20.Read(m.w1, id)
		if err != nil {
			return nil, err
		}
		return map[string]float64{"temp": t}, nil
	}
	return nil
}

func (m *Manager) openSim(s *sensor) error {
	exprs := make(map[string]*expr.Expr, len(s.cfg.Values))
	for name, src := range s.cfg.Values {
		e, err := expr.Parse(src)
		if err != nil {
			return fmt.Errorf("values.%s: %w", name, err) // Validate caught it already
		}
		exprs[name] = e
	}
	s.read = func() (map[string]float64, error) {
		vars := expr.Vars{T: m.clock.Now().Sub(m.start).Seconds(), Rand: s.rand}
		v := make(map[string]float64, len(exprs))
		for name, e := range exprs {
			x, err := e.EvalFinite(vars)
			if err != nil {
				return nil, fmt.Errorf("values.%s: %w", name, err)
			}
			v[name] = x
		}
		return v, nil
	}
	return nil
}

func (m *Manager) openPin(s *sensor) error {
	c := s.cfg
	ps := m.pins[c.Pin]
	var p gpio.PinIO
	if c.Sim {
		ps.sim = newSimPin(c.Pin)
		p = ps.sim
	} else {
		var err error
		if p, err = m.opener.OpenPin(c.Pin); err != nil {
			return err
		}
	}
	if ps.out {
		if err := p.Out(c.Initial == 1); err != nil {
			return fmt.Errorf("gpio pin %s: set as output: %w", c.Pin, err)
		}
		ps.outLevel = c.Initial
	} else if err := p.In(ps.pull, gpio.NoEdge); err != nil {
		return fmt.Errorf("gpio pin %s: set as input: %w", c.Pin, err)
	}
	ps.pin = p
	if !ps.out {
		s.read = func() (map[string]float64, error) {
			return map[string]float64{"level": float64(levelInt(p.Read()))}, nil
		}
	}
	return nil
}
