// Package homeassistant announces entities to Home Assistant through its MQTT discovery
// protocol: one retained JSON config message per entity on
// PREFIX/COMPONENT/NODE/OBJECT/config, which Home Assistant reads when it connects and
// whenever the message changes; an empty retained message removes the entity. Every
// entity belongs to one device (the gateway) and is available while the gateway's
// presence topic says online.
//
// The package knows nothing of the gateway: it is handed entities and a publisher, and
// says which messages to send.
package homeassistant

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"sync"
)

// The components (entity kinds) used.
const (
	Sensor       = "sensor"
	BinarySensor = "binary_sensor"
	Switch       = "switch"
)

// BirthTopic is where Home Assistant says it (re)started, under its discovery prefix:
// Online there asks every integration to announce itself again.
func BirthTopic(prefix string) string { return prefix + "/status" }

// Presence payloads: Home Assistant's defaults for payload_available and
// payload_not_available, so any other integration reading them agrees.
const (
	Online  = "online"
	Offline = "offline"
)

// Device is the Home Assistant device every entity belongs to: the gateway.
type Device struct {
	ID      string // the gateway id
	Version string // the moongate version
}

// Entity is one value Home Assistant shows (or, for a Switch, drives).
type Entity struct {
	Component string // Sensor, BinarySensor or Switch
	// ObjectID names the entity within the device; it is made a slug (Slug).
	ObjectID      string
	Name          string
	StateTopic    string
	ValueTemplate string
	// CommandTopic is where a Switch's commands go (PayloadOn, PayloadOff).
	CommandTopic string
	// PayloadOn and PayloadOff are the state payloads of a BinarySensor or Switch, and a
	// Switch's commands; empty means Home Assistant's ON and OFF.
	PayloadOn, PayloadOff string
	DeviceClass           string
	Unit                  string
	StateClass            string
}

// Publisher sends one message; the gateway's bus is one.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error
}

var notSlug = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// Slug makes s fit where Home Assistant allows [a-zA-Z0-9_-] only (node and object ids),
// and where an MQTT topic level must hold no wildcard or separator.
func Slug(s string) string { return notSlug.ReplaceAllString(s, "_") }

// Announcer publishes the discovery messages of a set of entities and keeps track of
// what it announced, so that an entity that goes away is removed. Its methods are safe
// for concurrent use.
type Announcer struct {
	Prefix string // the discovery prefix, "homeassistant"
	Device Device
	// PresenceTopic is the gateway's availability topic (Online, Offline).
	PresenceTopic string
	Pub           Publisher

	mu        sync.Mutex
	announced map[string]string // config topic -> payload last published
}

// ConfigTopic is where e's discovery message goes.
func (a *Announcer) ConfigTopic(e Entity) string {
	return fmt.Sprintf("%s/%s/%s/%s/config", a.Prefix, e.Component, Slug(a.Device.ID), Slug(e.ObjectID))
}

// UniqueID is e's unique_id: stable across restarts, unique among every gateway's (and
// among the components, whose object ids are apart in the topics but not in Home
// Assistant's registry).
func (a *Announcer) UniqueID(e Entity) string {
	return "moongate_" + Slug(a.Device.ID) + "_" + e.Component + "_" + Slug(e.ObjectID)
}

// Config is e's discovery payload.
func (a *Announcer) Config(e Entity) ([]byte, error) {
	m := map[string]any{
		"name":                  e.Name,
		"unique_id":             a.UniqueID(e),
		"availability_topic":    a.PresenceTopic,
		"payload_available":     Online,
		"payload_not_available": Offline,
		"device": map[string]any{
			"identifiers":  []string{"moongate_" + Slug(a.Device.ID)},
			"name":         a.Device.ID,
			"manufacturer": "Moongate",
			"model":        "Moongate gateway",
			"sw_version":   a.Device.Version,
		},
	}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("state_topic", e.StateTopic)
	set("value_template", e.ValueTemplate)
	set("device_class", e.DeviceClass)
	switch e.Component {
	case Sensor:
		set("unit_of_measurement", e.Unit)
		set("state_class", e.StateClass)
	case BinarySensor:
		set("payload_on", e.PayloadOn)
		set("payload_off", e.PayloadOff)
	case Switch:
		set("command_topic", e.CommandTopic)
		set("payload_on", e.PayloadOn)
		set("payload_off", e.PayloadOff)
		set("state_on", e.PayloadOn)
		set("state_off", e.PayloadOff)
	default:
		return nil, fmt.Errorf("entity %s: unknown component %q", e.ObjectID, e.Component)
	}
	return json.Marshal(m)
}

// Forget makes the next Announce publish every entity's message again: Home Assistant
// (or its broker) has come back and may have lost them.
func (a *Announcer) Forget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.announced = nil
}

// Announce publishes the discovery message of every entity whose message is new or
// changed since the last Announce, and an empty retained message for every entity
// announced before and absent now, which removes it from Home Assistant. Entities removed
// while the gateway was stopped stay in Home Assistant until deleted there.
func (a *Announcer) Announce(ctx context.Context, entities []Entity) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	want := map[string]string{}
	for _, e := range entities {
		b, err := a.Config(e)
		if err != nil {
			return err
		}
		want[a.ConfigTopic(e)] = string(b)
	}
	topics := make([]string, 0, len(want)+len(a.announced))
	for t := range want {
		topics = append(topics, t)
	}
	for t := range a.announced {
		if _, ok := want[t]; !ok {
			topics = append(topics, t)
		}
	}
	sort.Strings(topics)
	if a.announced == nil {
		a.announced = map[string]string{}
	}
	for _, t := range topics {
		payload, keep := want[t]
		if old, ok := a.announced[t]; ok && old == payload && keep {
			continue
		}
		if err := a.Pub.Publish(ctx, t, []byte(payload), 1, true); err != nil {
			return fmt.Errorf("announce %s: %w", t, err)
		}
		if keep {
			a.announced[t] = payload
		} else {
			delete(a.announced, t)
		}
	}
	return nil
}
