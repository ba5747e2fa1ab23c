package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/mosquittotest"
	"github.com/moongate/moongate/internal/poll"
	"github.com/moongate/moongate/sync/store/storetest"
)

// TestDiskFull: the gateway's data dir is on a small tmpfs, and another program fills it to
// the last byte while devices publish QoS 1 messages. The gateway does not crash, counts and
// logs the failed commits, keeps answering its API, and acknowledges nothing while commits
// fail, so nothing is lost: once the filler is deleted, every message is committed, once
// and in order. Once with devices on the embedded broker, once on Mosquitto.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs: run as root to test the full disk")
	}
	t.Run("embedded", func(t *testing.T) {
		dir := mountTmpfs(t)
		mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
		cfg := writeGatewayFiles(t, dir, counterConfig("embedded", mqttPort, apiPort), map[string]string{"counter.lua": counterLua})
		gw := newGatewayProc(t, dir, cfg, apiPort)
		gw.start()
		devs := newDevices("d", fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), 4, 1000, 4)
		for _, d := range devs {
			// Unacknowledged for 2 s: reconnect and resend (the embedded broker itself
			// disconnects a device whose message waits 30 s for its commit).
			d.ackTimeout = 2 * time.Second
		}
		diskFull(t, gw, devs, true)
	})
	// On Mosquitto the gateway acknowledges to the broker, which redelivers a message it
	// was not acknowledged only on the gateway's next connection: a message whose commit
	// failed must be retried by the gateway until space returns, not handed back.
	t.Run("mosquitto", func(t *testing.T) {
		dir := mountTmpfs(t)
		broker := mosquittotest.StartMosquitto(t, mosquittotest.MosquittoOptions{Config: mosquittoQueueConfig})
		apiPort := loopback.FreePort(t)
		cfg := writeGatewayFiles(t, dir, counterConfig(broker.URL, loopback.FreePort(t), apiPort), map[string]string{"counter.lua": counterLua})
		gw := newGatewayProc(t, dir, cfg, apiPort)
		gw.start()
		devs := newDevices("d", broker.URL, 4, 1000, 4)
		for _, d := range devs {
			d.interval = 4 * time.Second / time.Duration(d.n)
		}
		diskFull(t, gw, devs, false)
	})
}

// mountTmpfs mounts a tmpfs for the gateway's data dir and unmounts it when the test ends.
func mountTmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// The store keeps 64 MiB free (store.DefaultMinFreeBytes) for Badger's flushes and
	// compactions; the rest is for the data.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s): the full disk is not tested", err, out)
	}
	t.Cleanup(func() { // registered before the gateway's, so it runs after the gateway is gone
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// diskFull runs the devices, fills the disk for 2.5 s, frees it, and checks the outcome.
// devicesAckedByGateway: the devices' acknowledgements come from the gateway (embedded
// broker), so none may come while the disk is full.
func diskFull(t *testing.T, gw *gatewayProc, devs []*device, devicesAckedByGateway bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errc := runDevices(ctx, devs)
	total := len(devs) * devs[0].n
	poll.Within(t, 20*time.Second, "the first messages", func() bool { return gw.metric("moongate_outbox_pending_records") >= 400 })

	filler := filepath.Join(gw.dir, "filler")
	fill(t, filler)
	time.Sleep(500 * time.Millisecond) // commits already past the space check end
	acked := totalAcked(devs)
	committed := gw.metric("moongate_outbox_pending_records")
	time.Sleep(2 * time.Second)
	if n := gw.metric("moongate_outbox_pending_records"); n != committed {
		t.Errorf("%v invocations committed while the disk was full", n-committed)
	}
	if int(committed) == total {
		t.Fatal("every message was committed before the disk was full: nothing tested")
	}
	if n := totalAcked(devs) - acked; devicesAckedByGateway && n != 0 {
		t.Errorf("%d messages acknowledged while the disk was full", n)
	}
	if n := gw.metric("moongate_commit_errors_total"); n == 0 {
		t.Error("moongate_commit_errors_total is 0 with the disk full")
	}
	if log := gw.c.out.String(); !strings.Contains(log, "disk space low") {
		t.Errorf("the failed commits are not logged:\n%s", log)
	}
	// What does not write goes on: the API, and reads of the function's KV.
	resp, err := http.Get(gw.api() + "/api/v1/functions/counter/kv?prefix=count/")
	if err != nil {
		t.Fatalf("API with the disk full: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "count/d-1") {
		t.Errorf("KV read with the disk full: %d %s", resp.StatusCode, body)
	}
	t.Logf("disk full with %v messages committed; %v commit errors so far", committed, gw.metric("moongate_commit_errors_total"))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	freed := start
	waitDevices(t, errc, len(devs))
	for int(gw.metric("moongate_outbox_pending_records")) < total && time.Since(start) < 15*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	if n := int(gw.metric("moongate_outbox_pending_records")); n < total {
		// The check below names them.
		t.Errorf("%d messages still not committed %v after space returned", total-n, time.Since(start).Round(time.Second))
	} else {
		t.Logf("every message committed %v after space returned", time.Since(start).Round(time.Millisecond))
	}
	gw.stop()
	finalCheck(t, gw, devs, len(devs)*devs[0].window)

	// Nothing committed while the disk was full: the records after the first `committed`
	// were committed once space returned, and those among them whose commit was tried
	// while the disk was full keep the time of that first attempt, not of the last.
	st := storetest.Open(t, gw.storeDir())
	defer st.Close()
	recs, err := st.Read("seen", 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	retried := 0
	for _, r := range recs {
		if r.Seq > uint64(committed) && r.TS < freed.UnixMilli() {
			retried++
		}
	}
	if retried == 0 {
		t.Errorf("no record keeps a time from while the disk was full: retried commits were stamped again")
	}
}

// fill writes a file until the file system has no byte left.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			break // ENOSPC
		}
	}
	for _, n := range []int{64 << 10, 4 << 10, 512} { // the last pages
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
}
