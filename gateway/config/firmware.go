package config

// Firmware is the over-the-air update of the devices (firmware/PROTOCOL.md): which keys
// the gateway trusts, how much of the data dir images may take, and how fast they go out.
// Without keys the gateway stores and offers no image.
type Firmware struct {
	Keys       []string `yaml:"keys"`        // public key files (moongate firmware keygen), relative to the config
	StoreQuota Size     `yaml:"store_quota"` // default 64MiB
	ChunkSize  Size     `yaml:"chunk_size"`  // the most a get may ask for; default 16KiB
	DeviceRate Size     `yaml:"device_rate"` // bytes a second to one device; default 64KiB
	TotalRate  Size     `yaml:"total_rate"`  // bytes a second to all devices; default 512KiB
	// Offer says when a published image reaches the devices of a type that has had no
	// rollout: OfferOnPublish (at once, to all), or OfferByRollout (only through one).
	Offer string `yaml:"offer"`
}

// The values of firmware.offer.
const (
	OfferOnPublish = "publish"
	OfferByRollout = "rollout"
)

// Bounds of firmware.chunk_size: a chunk is one MQTT message.
const (
	MinChunkSize = Size(256)
	MaxChunkSize = Size(256 << 10)
)

func (f *Firmware) withDefaults() {
	if f.StoreQuota == 0 {
		f.StoreQuota = 64 << 20
	}
	if f.ChunkSize == 0 {
		f.ChunkSize = 16 << 10
	}
	if f.DeviceRate == 0 {
		f.DeviceRate = 64 << 10
	}
	if f.TotalRate == 0 {
		f.TotalRate = 512 << 10
	}
	if f.Offer == "" {
		f.Offer = OfferOnPublish
	}
}

func (c *Config) validateFirmware(add func(key, format string, args ...any)) {
	f := c.Firmware
	if f.ChunkSize < MinChunkSize || f.ChunkSize > MaxChunkSize {
		add("firmware.chunk_size", "%s is not between %s and %s", f.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if f.StoreQuota < 1<<10 {
		add("firmware.store_quota", "%s is less than 1KiB", f.StoreQuota)
	}
	if f.DeviceRate < f.ChunkSize {
		add("firmware.device_rate", "%s a second is less than one chunk (firmware.chunk_size %s)", f.DeviceRate, f.ChunkSize)
	}
	if f.TotalRate < f.DeviceRate {
		add("firmware.total_rate", "%s a second is less than firmware.device_rate %s", f.TotalRate, f.DeviceRate)
	}
	if f.Offer != OfferOnPublish && f.Offer != OfferByRollout {
		add("firmware.offer", "%q: want %s or %s", f.Offer, OfferOnPublish, OfferByRollout)
	}
	for i, k := range f.Keys {
		if k == "" {
			add("firmware.keys", "entry %d is empty", i)
		}
	}
}
