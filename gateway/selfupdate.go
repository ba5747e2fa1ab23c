package gateway

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moongate/moongate/firmware"
	"github.com/moongate/moongate/gateway/config"
	"github.com/moongate/moongate/internal/atomicfile"
	"github.com/moongate/moongate/internal/logkey"
)

// Self-update (SPEC §10): POST /api/v1/self-update takes a signed build of moongate for
// this machine, checks it as firmware is checked (firmware.keys, the type, a counter above
// the installed one, the digest, the expiry) and writes it beside the running binary as
// <exe>.new. The gateway then stops as for SIGTERM and Run returns a *StagedUpdate; the
// command (cmd/moongate) tries the new binary, swaps it in or puts the old one back, and
// writes the outcome to DATA/selfupdate.json, which GET /api/v1/self-update serves.

// The outcomes of a self-update attempt, in SelfUpdateAttempt.State.
const (
	SelfUpdateTrial      = "trial"       // staged, being tried
	SelfUpdateOK         = "ok"          // came up healthy and is installed
	SelfUpdateRolledBack = "rolled-back" // did not come up healthy: the previous binary runs
)

// SelfUpdateType is the manifest type of a gateway binary for this build's OS and
// architecture, named as the release files are: moongate-linux-amd64, -arm64, -armv6,
// -armv7.
func SelfUpdateType() string {
	arch := runtime.GOARCH
	if arch == "arm" {
		arch = "armv" + goarm()
	}
	return "moongate-" + runtime.GOOS + "-" + arch
}

// goarm is the GOARM the binary was built with ("7,softfloat" is 7); the toolchain
// records it in the build settings.
func goarm() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" {
				v, _, _ := strings.Cut(s.Value, ",")
				return v
			}
		}
	}
	return "7" // the toolchain's default
}

// SelfUpdateState is DATA/selfupdate.json.
type SelfUpdateState struct {
	// Counter is the manifest counter of the installed binary: a self-update must carry
	// a higher one. 0 until the first self-update.
	Counter uint64             `json:"counter"`
	Version string             `json:"version,omitempty"` // the installed binary's manifest version
	Last    *SelfUpdateAttempt `json:"last,omitempty"`
}

// SelfUpdateAttempt is the latest self-update and how it ended.
type SelfUpdateAttempt struct {
	Version string    `json:"version"`
	Counter uint64    `json:"counter"`
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"` // why it was rolled back
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
}

func selfUpdatePath(dataDir string) string { return filepath.Join(dataDir, "selfupdate.json") }

// ReadSelfUpdateState reads DATA/selfupdate.json; a missing file is the zero state.
func ReadSelfUpdateState(dataDir string) (SelfUpdateState, error) {
	var s SelfUpdateState
	b, err := os.ReadFile(selfUpdatePath(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", selfUpdatePath(dataDir), err)
	}
	return s, nil
}

// WriteSelfUpdateState replaces DATA/selfupdate.json atomically.
func WriteSelfUpdateState(dataDir string, s SelfUpdateState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(selfUpdatePath(dataDir), append(b, '\n'), 0o644)
}

// StagedUpdate is what Run returns, as its error, after a self-update was staged and the
// gateway stopped for it.
type StagedUpdate struct {
	Executable string // the running binary, resolved
	Binary     string // the new one: Executable + ".new"
	Manifest   firmware.Manifest
}

func (s *StagedUpdate) Error() string {
	return fmt.Sprintf("stopped for a self-update to %s (counter %d)", s.Manifest.Version, s.Manifest.Counter)
}

// Window is how long the new binary has to come up healthy: the manifest's health window.
func (s *StagedUpdate) Window() time.Duration { return s.Manifest.Window() }

// selfUpdater serves the self-update routes of the API.
type selfUpdater struct {
	cfg    *config.Config
	exe    string // Options.Executable; "": self-update is off
	clock  Clock
	staged chan<- *StagedUpdate // Run stops when it receives
	busy   atomic.Bool          // one upload at a time, and none once one is staged
	logger *slog.Logger
}

// selfUpdateDoc is GET /api/v1/self-update.
type selfUpdateDoc struct {
	Type       string `json:"type"`
	Executable string `json:"executable,omitempty"`
	SelfUpdateState
}

func (a *api) getSelfUpdate(w http.ResponseWriter, _ *http.Request) {
	s, err := ReadSelfUpdateState(a.cfg.Gateway.DataDir)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, selfUpdateDoc{Type: SelfUpdateType(), Executable: a.selfUpdate.exe, SelfUpdateState: s})
}

func (a *api) postSelfUpdate(w http.ResponseWriter, r *http.Request) {
	u := a.selfUpdate
	if u.exe == "" {
		writeError(w, http.StatusConflict, "self-update is off: the running binary is not known, or is itself on trial")
		return
	}
	if !u.busy.CompareAndSwap(false, true) {
		writeError(w, http.StatusConflict, "a self-update is already under way")
		return
	}
	staged, status, err := u.stage(w, r)
	if err != nil {
		u.busy.Store(false)
		u.logger.Warn("self-update refused", logkey.Err, err)
		writeError(w, status, err.Error())
		return
	}
	u.logger.Info("self-update staged: stopping to try it", logkey.Version, staged.Manifest.Version,
		"counter", staged.Manifest.Counter, "binary", staged.Binary, "window", staged.Window())
	writeJSON(w, http.StatusAccepted, staged.Manifest)
	u.staged <- staged // buffered: Run takes it once the answer is out
}

// stage checks the manifest before a byte of the image is written, then writes the image
// to <exe>.new and checks it against the manifest.
func (u *selfUpdater) stage(w http.ResponseWriter, r *http.Request) (*StagedUpdate, int, error) {
	keys, err := firmwareKeys(u.cfg)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	if len(keys) == 0 {
		return nil, http.StatusConflict, errors.New("self-update is off: no firmware.keys in the config, so the gateway trusts no signing key")
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadWindow))
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("want multipart/mixed with the parts manifest, then image: %w", err)
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "manifest" {
		return nil, http.StatusBadRequest, errors.New("the first part must be the manifest")
	}
	b, err := io.ReadAll(io.LimitReader(part, maxManifest+1))
	if err != nil || len(b) > maxManifest {
		return nil, http.StatusBadRequest, fmt.Errorf("manifest: unreadable or longer than %d bytes", maxManifest)
	}
	m, err := firmware.ParseManifest(b)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	if want := SelfUpdateType(); m.Type != want {
		return nil, http.StatusUnprocessableEntity, fmt.Errorf("the manifest is for %s; this gateway runs %s", m.Type, want)
	}
	if err := m.CheckSigned(keys, u.clock.Now()); err != nil {
		return nil, firmwareStatus(err), err
	}
	state, err := ReadSelfUpdateState(u.cfg.Gateway.DataDir)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	if m.Counter <= state.Counter {
		return nil, http.StatusConflict, fmt.Errorf("counter %d is not above the installed binary's %d: a downgrade or a replay", m.Counter, state.Counter)
	}
	part, err = mr.NextPart()
	if err != nil || part.FormName() != "image" {
		return nil, http.StatusBadRequest, errors.New("the second part must be the image")
	}
	staged := &StagedUpdate{Executable: u.exe, Binary: u.exe + ".new", Manifest: m}
	if err := writeBinary(staged.Binary, io.LimitReader(part, m.Size+1), m, keys, u.clock.Now()); err != nil {
		return nil, firmwareStatus(err), err
	}
	state.Last = &SelfUpdateAttempt{Version: m.Version, Counter: m.Counter, State: SelfUpdateTrial, Started: u.clock.Now().UTC()}
	if err := WriteSelfUpdateState(u.cfg.Gateway.DataDir, state); err != nil {
		os.Remove(staged.Binary)
		return nil, http.StatusInternalServerError, err
	}
	return staged, 0, nil
}

// writeBinary writes an executable file at path, synced, and removes it again unless
// its bytes are the ones m signs.
func writeBinary(path string, r io.Reader, m firmware.Manifest, keys []firmware.PublicKey, now time.Time) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("write the new binary beside the running one: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		return fmt.Errorf("receive the image: %w", err)
	}
	if err := m.Check(n, [32]byte(h.Sum(nil)), keys, now); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
