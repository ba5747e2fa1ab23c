package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moongate/moongate/firmware"
	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/logkey"
	"github.com/moongate/moongate/mqtt"
)

// fwService is the firmware part of a gateway: the published images in DATA/firmware and
// the protocol server that offers them to the devices. Nil when firmware.keys is empty.
type fwService struct {
	images *firmware.Images
	server *firmware.Server
	clock  Clock
	logger *slog.Logger
}

// openFirmware reads the trusted keys and opens the image store; the server publishes
// on bus once it runs.
func openFirmware(cfg *config.Config, bus mqtt.Bus, clock Clock, lv *live, logger *slog.Logger) (*fwService, error) {
	f := cfg.Firmware
	if len(f.Keys) == 0 {
		return nil, nil
	}
	keys, err := firmwareKeys(cfg)
	if err != nil {
		return nil, cfg.Errorf("firmware.keys", "%v", err)
	}
	logger = logger.With(logkey.Component, "firmware")
	images, err := firmware.OpenImages(filepath.Join(cfg.Gateway.DataDir, "firmware"), int64(f.StoreQuota), keys, logger)
	if err != nil {
		return nil, err
	}
	// Beside the type directories of the image store, which skips files.
	failed, err := firmware.OpenFailedDevices(filepath.Join(cfg.Gateway.DataDir, "firmware", "failed-devices.json"))
	if err != nil {
		images.Close()
		return nil, err
	}
	rollouts, err := firmware.OpenRolloutBook(filepath.Join(cfg.Gateway.DataDir, "firmware", "rollouts.json"))
	if err != nil {
		images.Close()
		return nil, err
	}
	server := firmware.NewServer(bus, images, firmware.ServerOptions{ChunkSize: int(f.ChunkSize),
		DeviceRate: int(f.DeviceRate), TotalRate: int(f.TotalRate), Now: clock.Now, Logger: logger, Failed: failed,
		Rollouts: rollouts, RolloutsOnly: f.Offer == config.OfferByRollout, OnState: lv.firmware})
	return &fwService{images: images, server: server, clock: clock, logger: logger}, nil
}

// firmwareKeys reads the public keys of firmware.keys; `moongate check` reads them too.
func firmwareKeys(cfg *config.Config) ([]firmware.PublicKey, error) {
	var keys []firmware.PublicKey
	for _, path := range cfg.Firmware.Keys {
		b, err := os.ReadFile(cfg.Resolve(path))
		if err != nil {
			return nil, err
		}
		k, err := firmware.ParsePublicKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// collectors are the firmware series of /metrics.
func (fw *fwService) collectors() []prometheus.Collector {
	if fw == nil {
		return nil
	}
	return []prometheus.Collector{prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "moongate_firmware_not_healthy_total",
		Help: "Firmware updates that a device applied and did not report healthy within the manifest's health window.",
	}, func() float64 { return float64(fw.server.NotHealthy()) })}
}

func (fw *fwService) close() {
	if fw != nil {
		fw.images.Close()
	}
}

func (fw *fwService) subscriptions() []mqtt.Subscription {
	if fw == nil {
		return nil
	}
	var subs []mqtt.Subscription
	for _, f := range fw.server.Filters() {
		subs = append(subs, mqtt.Subscription{Filter: f, QoS: 1})
	}
	return subs
}

// messageHandler takes the firmware topics, which belong to the gateway (SPEC §9), and
// hands every other message to next.
func (fw *fwService) messageHandler(next mqtt.Handler) mqtt.Handler {
	if fw == nil {
		return next
	}
	return mqtt.HandlerFunc(func(m *mqtt.Message) {
		if fw.server.Handle(m.Topic, m.Payload) {
			m.Ack() // nothing to make durable: the device's state is kept by the broker
			return
		}
		next.HandleMessage(m)
	})
}

func (fw *fwService) run(ctx context.Context) {
	if fw != nil {
		fw.server.Run(ctx)
	}
}

// maxManifest bounds the manifest part of an upload.
const maxManifest = 16 << 10

// uploadWindow is how long an image upload may take to arrive: the console's read
// timeout is for requests of a page's size.
const uploadWindow = 10 * time.Minute

// postFirmware stores an image: multipart/mixed with a `manifest` part, then an
// `image` part, which is verified as it streams to disk.
func (a *api) postFirmware(w http.ResponseWriter, r *http.Request) {
	if a.firmwareOff(w) {
		return
	}
	fw := a.firmware
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadWindow))
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "want multipart/mixed with the parts manifest, then image: "+err.Error())
		return
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "manifest" {
		writeError(w, http.StatusBadRequest, "the first part must be the manifest")
		return
	}
	b, err := io.ReadAll(io.LimitReader(part, maxManifest+1))
	if err != nil || len(b) > maxManifest {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("manifest: unreadable or longer than %d bytes", maxManifest))
		return
	}
	m, err := firmware.ParseManifest(b)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	part, err = mr.NextPart()
	if err != nil || part.FormName() != "image" {
		writeError(w, http.StatusBadRequest, "the second part must be the image")
		return
	}
	if err := fw.images.Add(m, part, fw.clock.Now()); err != nil {
		writeError(w, firmwareStatus(err), err.Error())
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(part, 1<<20)) // the client then reads the answer, not a reset
	fw.logger.Info("firmware image published", "type", m.Type, logkey.Version, m.Version, "counter", m.Counter, "size", m.Size)
	fw.server.Published(m)
	writeJSON(w, http.StatusCreated, m)
}

func firmwareStatus(err error) int {
	switch {
	case errors.Is(err, firmware.ErrQuota):
		return http.StatusInsufficientStorage
	case errors.Is(err, firmware.ErrExists):
		return http.StatusConflict
	case errors.Is(err, firmware.ErrBadSignature), errors.Is(err, firmware.ErrDigest), errors.Is(err, firmware.ErrSize),
		errors.Is(err, firmware.ErrExpired):
		return http.StatusUnprocessableEntity
	case errors.Is(err, firmware.ErrManifest), errors.Is(err, firmware.ErrOldManifest):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// listFirmware lists the stored images, the store's use and the devices' states.
func (a *api) listFirmware(w http.ResponseWriter, _ *http.Request) {
	out := map[string]any{"images": []firmware.Manifest{}, "devices": []firmware.DeviceStatus{}, "used_bytes": 0,
		"quota_bytes": 0, "enabled": a.firmware != nil}
	if fw := a.firmware; fw != nil {
		used, quota := fw.images.Used()
		out["images"], out["devices"], out["used_bytes"], out["quota_bytes"] = fw.images.List(), fw.server.Devices(), used, quota
	}
	writeJSON(w, http.StatusOK, out)
}

// firmwareOff answers a firmware request on a gateway without firmware.keys.
func (a *api) firmwareOff(w http.ResponseWriter) bool {
	if a.firmware != nil {
		return false
	}
	writeError(w, http.StatusConflict, "firmware is off: no firmware.keys in the config, so the gateway trusts no signing key")
	return true
}

func (a *api) listRollouts(w http.ResponseWriter, _ *http.Request) {
	if a.firmwareOff(w) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"rollouts": a.firmware.server.Rollouts()})
}

func (a *api) createRollout(w http.ResponseWriter, r *http.Request) {
	if a.firmwareOff(w) {
		return
	}
	var plan firmware.RolloutPlan
	if !decodeBody(w, r, &plan) {
		return
	}
	ro, err := a.firmware.server.CreateRollout(plan)
	if err != nil {
		writeError(w, rolloutStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, ro)
}

func (a *api) getRollout(w http.ResponseWriter, r *http.Request) {
	if a.firmwareOff(w) {
		return
	}
	ro, err := a.firmware.server.Rollout(r.PathValue("id"))
	if err != nil {
		writeError(w, rolloutStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

// changeRollout is POST .../rollouts/{id}/{action}: pause, resume or abort.
func (a *api) changeRollout(w http.ResponseWriter, r *http.Request) {
	if a.firmwareOff(w) {
		return
	}
	change := map[string]func(string) (firmware.Rollout, error){
		"pause": a.firmware.server.PauseRollout, "resume": a.firmware.server.ResumeRollout, "abort": a.firmware.server.AbortRollout,
	}[r.PathValue("action")]
	if change == nil {
		writeError(w, http.StatusNotFound, "no such rollout action: "+r.PathValue("action")+" (pause, resume, abort)")
		return
	}
	ro, err := change(r.PathValue("id"))
	if err != nil {
		writeError(w, rolloutStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

func rolloutStatus(err error) int {
	switch {
	case errors.Is(err, firmware.ErrNoRollout):
		return http.StatusNotFound
	case errors.Is(err, firmware.ErrRollout):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}
