package gateway

import (
	"errors"
	"fmt"
	"reflect"
	"sort"

	"go.yaml.in/yaml/v3"

	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/logkey"
)

// Reload reads again what can change while the gateway runs (SIGHUP, `systemctl
// reload`): the embedded broker's password and ACL files, and the config file's
// functions: entries, which are deployed, redeployed or deleted as at a start (README,
// "Functions across restarts"), all or none, without losing an event in flight. What
// else changed in the file (the broker, the sensors, the sinks, the gateway's own
// settings) is logged as waiting for a restart, and returned as restart (keys such as
// mqtt.embedded). A file that does not load changes nothing.
func (g *Gateway) Reload() (restart []string, err error) {
	select {
	case <-g.ready:
	default:
		return nil, errors.New("reload: the gateway is not running yet")
	}
	var errs []error
	if r, ok := g.bus.(interface{ Reload() error }); ok {
		if err := r.Reload(); err != nil {
			errs = append(errs, err)
		}
	}
	if g.cfg.File == "" {
		return nil, errors.Join(errs...)
	}
	next, err := Load(g.cfg.File)
	if err != nil {
		return nil, errors.Join(append(errs, fmt.Errorf("reload %s: the running config stays: %w", g.cfg.File, err))...)
	}
	deployed, deleted, err := g.registry.reload(next)
	for _, name := range deployed {
		v := g.registry.current(name)
		g.logger.Info("function deployed from the reloaded config", logkey.Function, name, logkey.Version, v.number)
	}
	for _, name := range deleted {
		g.logger.Info("function deleted: it was removed from the reloaded config", logkey.Function, name)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("reload %s: its functions are not applied: %w", g.cfg.File, err))
	}
	restart = restartNeeded(g.cfg, next)
	if len(restart) > 0 {
		g.logger.Warn("changed in the config, applied at the next restart", "keys", restart)
	}
	return restart, errors.Join(errs...)
}

// restartNeeded lists what differs between two configs that a reload does not apply, by
// section and key (gateway.console, mqtt.embedded, sensors.kitchen, sync.sinks,
// functions.NAME.outputs).
func restartNeeded(old, next *config.Config) []string {
	var keys []string
	for _, s := range []struct {
		name      string
		old, next any
	}{
		{"gateway", old.Gateway, next.Gateway},
		{"mqtt", old.MQTT, next.MQTT},
		{"fleet", old.Fleet, next.Fleet},
		{"sensors", old.Sensors, next.Sensors},
		{"sync", old.Sync, next.Sync},
		{"homeassistant", old.HomeAssistant, next.HomeAssistant},
	} {
		a, b := asMap(s.old), asMap(s.next)
		for k := range union(a, b) {
			if !reflect.DeepEqual(a[k], b[k]) {
				keys = append(keys, s.name+"."+k)
			}
		}
	}
	// A function's outputs are announced to Home Assistant at start.
	outputs := map[string][]config.Output{}
	for _, f := range old.Functions {
		outputs[f.Name] = f.Outputs
	}
	for _, f := range next.Functions {
		if o, ok := outputs[f.Name]; ok && !reflect.DeepEqual(o, f.Outputs) {
			keys = append(keys, "functions."+f.Name+".outputs")
		}
	}
	sort.Strings(keys)
	return keys
}

// asMap is a config section as YAML sees it: its keys, each with its value's plain form,
// without the line numbers a decoded node keeps.
func asMap(section any) map[string]any {
	b, err := yaml.Marshal(section)
	if err != nil {
		return map[string]any{"": err.Error()} // a section that does not encode counts as changed
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return map[string]any{"": err.Error()}
	}
	return m
}

func union(a, b map[string]any) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}
