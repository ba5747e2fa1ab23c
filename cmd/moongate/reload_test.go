package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

// SIGHUP (systemctl reload) applies the config's functions while devices stream QoS 1
// messages: a changed function is redeployed as its next version, a new one deployed, a
// removed one deleted, and no message is lost or counted twice across the switch. A
// changed broker setting is reported as waiting for a restart. A config whose functions
// do not all compile changes nothing, and says why.
func TestReloadOnHangup(t *testing.T) {
	dir := t.TempDir()
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	config := func(counterFile string, withExtra bool, packet string) string {
		c := counterConfig("embedded", mqttPort, apiPort)
		c = strings.Replace(c, "source: counter.lua", "source: "+counterFile, 1)
		c = strings.Replace(c, "embedded: {listen: 127.0.0.1:", "embedded: {max_packet_size: "+packet+", listen: 127.0.0.1:", 1)
		if withExtra {
			c += "  - name: extra\n    source: extra.lua\n    triggers: [\"mqtt:extra/x\"]\n"
		} else {
			c += "  - name: gone\n    source: extra.lua\n    triggers: [\"mqtt:gone/x\"]\n"
		}
		return c
	}
	files := map[string]string{
		"counter.lua":    counterLua,
		"counter-v2.lua": counterLua + "-- version 2\n",
		"broken.lua":     "function handle(event)\n  return (\nend\n",
		"extra.lua":      "function handle(event) return nil end\n",
	}
	cfg := writeGatewayFiles(t, dir, config("counter.lua", false, "256KiB"), files)
	gw := startGateway(t, dir, cfg, apiPort)

	ds := newDevices("r", fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), 4, 1500, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errc := runDevices(ctx, ds)
	poll.Eventually(t, "a tenth of the messages", func() bool { return totalAcked(ds) >= 600 })

	hup := func() {
		t.Helper()
		if err := gw.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	// A config whose function does not compile: nothing changes.
	if err := os.WriteFile(cfg, []byte(config("broken.lua", true, "512KiB")), 0o644); err != nil {
		t.Fatal(err)
	}
	hup()
	poll.Eventually(t, "the refused reload in the log", func() bool {
		return strings.Contains(gw.out.String(), "the running config stays") && strings.Contains(gw.out.String(), "broken.lua:3")
	})
	if fns := functionVersions(t, gw.api); fns["counter"] != 1 || fns["gone"] != 1 || fns["extra"] != 0 {
		t.Fatalf("a refused reload changed the functions: %v", fns)
	}

	if err := os.WriteFile(cfg, []byte(config("counter-v2.lua", true, "512KiB")), 0o644); err != nil {
		t.Fatal(err)
	}
	acked := totalAcked(ds)
	hup()
	poll.Eventually(t, "the reloaded functions", func() bool {
		fns := functionVersions(t, gw.api)
		return fns["counter"] == 2 && fns["extra"] == 1 && fns["gone"] == 0
	})
	if acked >= 6000 {
		t.Fatalf("the devices had finished before the reload (%d acked): the switch was not under load", acked)
	}
	poll.Eventually(t, "the restart warning", func() bool {
		return strings.Contains(gw.out.String(), "applied at the next restart") && strings.Contains(gw.out.String(), "mqtt.embedded")
	})
	waitDevices(t, errc, len(ds))
	gw.stop(t)

	st := openStoreCopy(t, gw.cmd.Dir+"/data/store")
	defer st.Close()
	for _, d := range ds {
		if last, gaps, dups := kvInt(t, st, "counter", "last/"+d.id), kvInt(t, st, "counter", "gaps/"+d.id), kvInt(t, st, "counter", "dups/"+d.id); last != d.n || gaps != 0 {
			t.Errorf("%s: last %d of %d, %d gaps, %d duplicates skipped", d.id, last, d.n, gaps, dups)
		}
		if n := kvInt(t, st, "counter", "count/"+d.id); n != d.n {
			t.Errorf("%s: counted %d, want %d (a message lost or counted twice across the reload)", d.id, n, d.n)
		}
	}
}

// functionVersions reads the running functions and their versions from the API.
func functionVersions(t *testing.T, api string) map[string]int {
	t.Helper()
	resp, err := http.Get(api + "/api/v1/functions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Functions []struct {
			Name    string `json:"name"`
			Version int    `json:"version"`
		} `json:"functions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range list.Functions {
		out[f.Name] = f.Version
	}
	return out
}
