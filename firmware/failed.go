package firmware

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/moongate/moongate/internal/atomicfile"
)

// Failure is the image a device last failed with, and why.
type Failure struct {
	Type    string `json:"type"`
	Counter uint64 `json:"counter"`
	Reason  string `json:"reason"`
}

// FailedDevices remember, across gateway restarts, the image each device last failed
// with, so the gateway does not offer it to that device again. They are one JSON file,
// written whole (atomicfile) on each change: failures are rare,
// and a crash leaves the old file or the new one. A nil *FailedDevices remembers nothing.
type FailedDevices struct {
	path string
	mu   sync.Mutex
	m    map[string]Failure
}

// OpenFailedDevices reads the file at path; a missing file is an empty one.
func OpenFailedDevices(path string) (*FailedDevices, error) {
	f := &FailedDevices{path: path, m: map[string]Failure{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("firmware: failed devices: %w", err)
	}
	if err := json.Unmarshal(b, &f.m); err != nil {
		return nil, fmt.Errorf("firmware: failed devices: %s: %w", path, err)
	}
	return f, nil
}

// Get is the failure recorded for device.
func (f *FailedDevices) Get(device string) (Failure, bool) {
	if f == nil {
		return Failure{}, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fl, ok := f.m[device]
	return fl, ok
}

// Put records device's failure and writes the file. Past maxDevices devices a new one is
// not recorded (a device id is a topic level anyone allowed to publish can make up).
func (f *FailedDevices) Put(device string, fl Failure) error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.m[device]; !ok && len(f.m) >= maxDevices {
		return fmt.Errorf("firmware: failed devices: %d recorded already, not recording %s", maxDevices, device)
	}
	if f.m[device] == fl {
		return nil
	}
	f.m[device] = fl
	b, _ := json.Marshal(f.m)
	if err := atomicfile.Write(f.path, b, 0o644); err != nil {
		return fmt.Errorf("firmware: failed devices: %w", err)
	}
	return nil
}
