package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// metric reads one sample from /metrics, -1 when absent.
func metric(t *testing.T, tg *testGateway, name string) float64 {
	t.Helper()
	resp, err := http.Get(tg.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		var v float64
		if _, err := fmt.Sscanf(line, name+" %g", &v); err == nil {
			return v
		}
	}
	return -1
}

// mqtt.embedded.max_packet_size sets the embedded broker's limit: a packet over it
// disconnects the device and counts in /metrics; one under it, over the default 256KiB,
// goes through.
func TestMaxPacketSizeKey(t *testing.T) {
	dir := t.TempDir()
	tg := startTest(t, dir, fmt.Sprintf(`gateway:
  data_dir: %s
  console: {listen: 127.0.0.1:0}
mqtt:
  embedded: {listen: 127.0.0.1:0, max_packet_size: 512KiB}
`, filepath.Join(dir, "data")))
	sub := subscribe(t, tg.broker, "watcher", "big/#")
	dev := paho.NewClient(paho.NewClientOptions().AddBroker(tg.broker).SetClientID("big-dev").SetAutoReconnect(false))
	if tok := dev.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer dev.Disconnect(100)
	if got := metric(t, tg, "moongate_mqtt_oversize_packets_total"); got != 0 {
		t.Fatalf("oversize before: %v", got)
	}
	dev.Publish("big/ok", 0, false, bytes.Repeat([]byte("o"), 400<<10))
	eventually(t, "the 400 KiB message", func() bool { return len(sub.on("big/ok")) == 1 })
	dev.Publish("big/no", 0, false, bytes.Repeat([]byte("n"), 600<<10))
	eventually(t, "the oversize count", func() bool { return metric(t, tg, "moongate_mqtt_oversize_packets_total") == 1 })
	if len(sub.on("big/no")) != 0 {
		t.Error("the oversize message was forwarded")
	}
}
