package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Every sink kind is named in /api/v1/sync and in moongate_sink_info, whatever its state.
func TestSinkKinds(t *testing.T) {
	dir := t.TempDir()
	tg := startTest(t, dir, effectsConfig(t, dir, `sync:
  sinks:
    - name: knative
      http:
        url: "http://127.0.0.1:1/ingest"
        format: cloudevents
        cloudevents: {mode: binary, types: {results: com.example.result}}
    - name: iot
      mqtt: {broker: "tcp://127.0.0.1:1", topic: "gw/{gateway}/{stream}"}
    - name: nats
      jetstream: {url: "nats://127.0.0.1:1,nats://127.0.0.1:2", subject: "moongate.{gateway}.{stream}"}
`))
	r := call(t, "GET", tg.api+"/api/v1/sync", "", nil)
	want := map[string]string{"knative": "http", "iot": "mqtt", "nats": "jetstream"}
	sinks, _ := r.body["sinks"].([]any)
	if len(sinks) != len(want) {
		t.Fatalf("sinks: %s", r.raw)
	}
	for _, s := range sinks {
		m := s.(map[string]any)
		if m["kind"] != want[m["name"].(string)] {
			t.Errorf("sink %v: kind %v, want %s", m["name"], m["kind"], want[m["name"].(string)])
		}
	}
	resp, err := http.Get(tg.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for name, kind := range want {
		if line := `moongate_sink_info{kind="` + kind + `",sink="` + name + `"} 1`; !strings.Contains(string(b), line) {
			t.Errorf("/metrics has no %s", line)
		}
	}
}
