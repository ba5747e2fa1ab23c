package firmware

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moongate/moongate/internal/atomicfile"
	"github.com/moongate/moongate/internal/logkey"
)

// ErrQuota: publishing the image would pass the store's quota.
var ErrQuota = errors.New("firmware: the image store is full")

// ErrExists: the type's counter is already published with another image. Counters are
// never reused: a device that runs counter N must be able to trust that N means one image.
var ErrExists = errors.New("firmware: this counter is already published with another image")

// Images are the published images, in a directory of the data dir: TYPE/COUNTER.bin, the
// image, and TYPE/COUNTER.json, its manifest, written last: an image without its manifest
// is a publish that a crash interrupted, removed at open. Images are read by offset
// (ReadAt), never whole, so serving one costs a chunk of memory, not an image.
type Images struct {
	dir    string
	quota  int64
	keys   []PublicKey
	logger *slog.Logger

	mu       sync.Mutex
	images   map[imageKey]*storedImage
	used     int64 // bytes of the stored images and of those being written
	reserved int64
}

type imageKey struct {
	typ     string
	counter uint64
}

type storedImage struct {
	m    Manifest
	file *os.File // kept open for ReadAt
}

// OpenImages opens (creating it) the image store in dir. Images whose signature no key in
// keys verifies any more stay stored and listed but are never offered.
func OpenImages(dir string, quota int64, keys []PublicKey, logger *slog.Logger) (*Images, error) {
	if err := atomicfile.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("firmware store: %w", err)
	}
	s := &Images{dir: dir, quota: quota, keys: keys, logger: logger, images: map[imageKey]*storedImage{}}
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Images) load() error {
	types, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("firmware store: %w", err)
	}
	for _, t := range types {
		if !t.IsDir() || !validType(t.Name()) {
			continue
		}
		tdir := filepath.Join(s.dir, t.Name())
		files, err := os.ReadDir(tdir)
		if err != nil {
			return fmt.Errorf("firmware store: %w", err)
		}
		have := map[string]bool{}
		for _, f := range files {
			have[f.Name()] = true
		}
		for _, f := range files {
			name, path := f.Name(), filepath.Join(tdir, f.Name())
			base, ext := strings.TrimSuffix(name, filepath.Ext(name)), filepath.Ext(name)
			switch {
			case strings.HasPrefix(name, "."): // a temporary file of an interrupted write
				os.Remove(path)
			case ext == ".bin" && !have[base+".json"]:
				s.logger.Warn("firmware store: removing an image whose publish did not finish", logkey.File, path)
				os.Remove(path)
			case ext == ".json":
				if err := s.loadOne(t.Name(), path, strings.TrimSuffix(path, ".json")+".bin"); err != nil {
					s.logger.Warn("firmware store: skipping an image", logkey.File, path, logkey.Err, err)
				}
			}
		}
	}
	return nil
}

func (s *Images) loadOne(typ, manifestPath, imagePath string) error {
	b, err := os.ReadFile(manifestPath)
	if err != nil {
		return err
	}
	m, err := ParseManifest(b)
	if err != nil {
		return err
	}
	if m.Type != typ || strconv.FormatUint(m.Counter, 10)+".json" != filepath.Base(manifestPath) {
		return errors.New("the manifest does not match its file name")
	}
	f, err := os.Open(imagePath)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() != m.Size {
		f.Close()
		return fmt.Errorf("%w: the stored image is not %d bytes", ErrSize, m.Size)
	}
	s.images[imageKey{typ, m.Counter}] = &storedImage{m: m, file: f}
	s.used += m.Size
	return nil
}

// Add verifies image against m and stores it, reading it once, as it arrives. It
// refuses (each error wraps its reason) an image past the quota (ErrQuota), whose size
// (ErrSize), digest (ErrDigest) or signature (ErrBadSignature) does not match, or whose
// manifest has expired (ErrExpired). Publishing the same image again is not an error.
func (s *Images) Add(m Manifest, image io.Reader, now time.Time) (err error) {
	// The manifest first, on its own digest: a forged or expired one is refused before a
	// byte of its image reaches the disk.
	if err := m.CheckSigned(s.keys, now); err != nil {
		return err
	}
	k := imageKey{m.Type, m.Counter}
	s.mu.Lock()
	if old, ok := s.images[k]; ok {
		s.mu.Unlock()
		if old.m.SHA256 == m.SHA256 && old.m.Signature == m.Signature {
			return nil
		}
		return fmt.Errorf("%w: %s counter %d is %s", ErrExists, m.Type, m.Counter, old.m.Version)
	}
	if s.used+s.reserved+m.Size > s.quota {
		used := s.used + s.reserved
		s.mu.Unlock()
		return fmt.Errorf("%w: %d of %d bytes used, the image needs %d more (raise firmware.store_quota)", ErrQuota, used, s.quota, m.Size)
	}
	s.reserved += m.Size
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.reserved -= m.Size
		s.mu.Unlock()
	}()

	tdir := filepath.Join(s.dir, m.Type)
	if err := atomicfile.MkdirAll(tdir, 0o755); err != nil {
		return fmt.Errorf("firmware store: %w", err)
	}
	f, err := os.CreateTemp(tdir, ".upload-*")
	if err != nil {
		return fmt.Errorf("firmware store: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	// One byte past the size tells a longer image from an exact one without reading on.
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(image, m.Size+1))
	if err != nil {
		return fmt.Errorf("firmware store: receive the image: %w", err)
	}
	var digest [32]byte
	h.Sum(digest[:0])
	if err := m.Check(n, digest, s.keys, now); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("firmware store: %w", err)
	}
	base := filepath.Join(tdir, strconv.FormatUint(m.Counter, 10))
	if err := os.Rename(f.Name(), base+".bin"); err != nil {
		return fmt.Errorf("firmware store: %w", err)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := atomicfile.Write(base+".json", b, 0o644); err != nil { // syncs the directory, and both renames with it
		os.Remove(base + ".bin")
		return fmt.Errorf("firmware store: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.images[k] = &storedImage{m: m, file: f}
	s.used += m.Size
	return nil
}

// List returns the stored images, by type, newest counter first.
func (s *Images) List() []Manifest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Manifest, 0, len(s.images))
	for _, im := range s.images {
		out = append(out, im.m)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].Counter > out[j].Counter
	})
	return out
}

// Used is the bytes the stored images take, and the quota.
func (s *Images) Used() (used, quota int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, s.quota
}

// Newest returns the manifest of the newest image of typ whose counter is above `above`
// and that may be offered at now: signed by a trusted key, not expired.
func (s *Images) Newest(typ string, above uint64, now time.Time) (Manifest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best Manifest
	for k, im := range s.images {
		if k.typ != typ || k.counter <= above || k.counter <= best.Counter || !s.offerable(im.m, now) {
			continue
		}
		best = im.m
	}
	return best, best.Counter > 0
}

// Get returns the manifest of one image if it may be offered at now.
func (s *Images) Get(typ string, counter uint64, now time.Time) (Manifest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, ok := s.images[imageKey{typ, counter}]
	if !ok || !s.offerable(im.m, now) {
		return Manifest{}, false
	}
	return im.m, true
}

// offerable checks the signature with the stored digest: the image's bytes were checked
// against it when they were published.
func (s *Images) offerable(m Manifest, now time.Time) bool {
	return m.CheckSigned(s.keys, now) == nil
}

// ReadAt reads the bytes of one image at off into p.
func (s *Images) ReadAt(typ string, counter uint64, p []byte, off int64) (int, error) {
	s.mu.Lock()
	im, ok := s.images[imageKey{typ, counter}]
	s.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("firmware store: no image %s counter %d", typ, counter)
	}
	n, err := im.file.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return n, err
}

// Close closes the image files.
func (s *Images) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, im := range s.images {
		im.file.Close()
	}
	return nil
}
