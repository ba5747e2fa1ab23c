package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/moongate/moongate/internal/specdoc"
	"github.com/moongate/moongate/sensors"
)

// TestSpecListsEveryKey keeps docs/SPEC.md §3 current: every key of moongate.yaml (the
// yaml tags of Config, and of sensors.Config for the entries of sensors:) has a row in
// its tables, and the tables list no key the config does not have.
func TestSpecListsEveryKey(t *testing.T) {
	keys := map[string]bool{}
	yamlKeys(reflect.TypeFor[Config](), "", keys)
	if len(keys) < 50 {
		t.Fatalf("found only %d config keys: has the walk lost its way?", len(keys))
	}
	section, err := specdoc.Section(3)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := specdoc.Rows(section)
	if err != nil {
		t.Fatalf("SPEC §3: %v", err)
	}
	for key := range keys {
		if _, ok := rows[key]; !ok {
			t.Errorf("SPEC §3 has no row for the key `%s`", key)
		}
	}
	for key := range rows {
		if !keys[key] {
			t.Errorf("SPEC §3 lists `%s`, which is not a config key", key)
		}
	}
}

var (
	leafTypes = map[reflect.Type]bool{reflect.TypeFor[time.Duration](): true, reflect.TypeFor[Size](): true}
	nodeMap   = reflect.TypeFor[map[string]yaml.Node]()
)

// yamlKeys adds the key paths under t to keys, as SPEC §3 writes them: gateway.id,
// functions[].name, sensors.NAME.driver.
func yamlKeys(t reflect.Type, prefix string, keys map[string]bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		path := prefix + name
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft == nodeMap: // sensors: decoded by the sensors package's own type
			yamlKeys(reflect.TypeFor[sensors.Config](), path+".NAME.", keys)
		case leafTypes[ft]:
			keys[path] = true
		case ft.Kind() == reflect.Struct:
			yamlKeys(ft, path+".", keys)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			yamlKeys(ft.Elem(), path+"[].", keys)
		default:
			keys[path] = true
		}
	}
}
