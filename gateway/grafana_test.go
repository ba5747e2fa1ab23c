package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/moongate/moongate/internal/poll"
)

// dashboard is what a Grafana dashboard JSON must hold for Grafana to import it and for
// its panels to query something.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos *struct {
			H, W, X, Y int
		} `json:"gridPos"`
		Datasource *struct {
			Type, UID string
		} `json:"datasource"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
}

// metricName finds the series names in a PromQL expression: moongate's own and the Go
// runtime's and process's.
var metricName = regexp.MustCompile(`\b(?:moongate|go|process)_[a-zA-Z0-9_]+\b`)

// examples/grafana/moongate.json loads as a dashboard, and every series its queries name
// is served by a running gateway's /metrics: a renamed metric breaks this test, not a
// user's dashboard.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "examples", "grafana", "moongate.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("moongate.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion == 0 || len(d.Panels) == 0 {
		t.Fatalf("not a dashboard: title %q uid %q schemaVersion %d, %d panels", d.Title, d.UID, d.SchemaVersion, len(d.Panels))
	}
	referenced := map[string][]string{} // series -> panels
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if p.Title == "" || p.Type == "" || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q: type %q, gridPos %+v", p.ID, p.Title, p.Type, p.GridPos)
		}
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || len(p.Targets) == 0 {
			t.Errorf("panel %q: no Prometheus query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %+v", p.Title, tg)
			}
			refs[tg.RefID] = true
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				referenced[m] = append(referenced[m], p.Title)
			}
		}
	}
	for _, v := range d.Templating.List {
		for _, m := range metricName.FindAllString(string(v.Query), -1) {
			referenced[m] = append(referenced[m], "variable "+v.Name)
		}
	}
	// What issue 18 asks the dashboard to show.
	for _, m := range []string{"moongate_events_total", "moongate_invocations_total", "moongate_invocation_duration_seconds_bucket",
		"moongate_dead_letters_total", "moongate_outbox_pending_records", "moongate_outbox_pending_bytes", "moongate_sink_lag_seconds",
		"moongate_sink_online", "moongate_broker_clients", "moongate_broker_refused_total", "moongate_memory_pressure",
		"moongate_store_syncs_total"} {
		if referenced[m] == nil {
			t.Errorf("no panel shows %s", m)
		}
	}

	served := scrapeBusyGateway(t)
	for m, panels := range referenced {
		if !served[m] {
			t.Errorf("%s (panels %s) is not served by /metrics", m, strings.Join(panels, ", "))
		}
	}
}

// scrapeBusyGateway runs a gateway with a function that fails now and then (a dead
// letter) and a sink, feeds it MQTT messages, and returns every series name its /metrics
// serves, a histogram's _bucket, _sum and _count included.
func scrapeBusyGateway(t *testing.T) map[string]bool {
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer receiver.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.lua"), []byte(`function handle(e) if e.raw == "boom" then error("boom") end return {ok = true} end`), 0o644); err != nil {
		t.Fatal(err)
	}
	tg := startTest(t, dir, baseConfig(dir, fmt.Sprintf(`functions:
  - {name: f, source: f.lua, triggers: ["mqtt:in/#"], emit: out}
sync:
  sinks:
    - {name: cloud, http: {url: %s}, batch: {linger: 10ms}}
`, receiver.URL)))
	defer tg.stop(t)
	dev := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID("dev"))
	if tok := dev.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer dev.Disconnect(100)
	for _, p := range []string{"1", "boom", "2"} {
		if tok := dev.Publish("in/x", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	var families map[string]*dto.MetricFamily
	poll.Eventually(t, "a dead letter and a delivery on /metrics", func() bool {
		r := call(t, http.MethodGet, tg.api+"/metrics", "", nil)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		var err error
		if families, err = parser.TextToMetricFamilies(strings.NewReader(r.raw)); err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		return families["moongate_dead_letters_total"] != nil && sampleValue(families["moongate_sink_delivered_total"]) > 0
	})
	served := map[string]bool{}
	for name, f := range families {
		served[name] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			served[name+"_bucket"], served[name+"_sum"], served[name+"_count"] = true, true, true
		}
	}
	return served
}

func sampleValue(f *dto.MetricFamily) float64 {
	if f == nil || len(f.Metric) == 0 {
		return 0
	}
	return f.Metric[0].GetCounter().GetValue()
}
