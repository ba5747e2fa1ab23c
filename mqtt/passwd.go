package mqtt

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/moongate/moongate/internal/atomicfile"
)

// A password file holds one device per line, "user:hash", where hash is bcrypt's
// ("$2a$..."); blank lines and lines starting with # are skipped. It is the layout of
// mosquitto_passwd's files, with bcrypt in place of Mosquitto's own hash: `moongate
// passwd` writes it.

// passwordCost is bcrypt's work factor: about 60 ms per check on a Raspberry Pi 4, and
// checks that succeeded are remembered (see passwords.check), so only new connections
// with new passwords pay it.
const passwordCost = 10

// HashPassword returns the salted bcrypt hash of a device's password.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("empty password")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), passwordCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// passwords are the users of a password file.
type passwords struct {
	hashes map[string][]byte

	// verified remembers, per user, a digest of the last password bcrypt accepted, so a
	// device that reconnects does not cost a bcrypt run each time.
	mu       sync.Mutex
	verified map[string][32]byte
}

// readPasswordFile parses path; an error names the file and the line.
func readPasswordFile(path string) (*passwords, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("password file: %w", err)
	}
	p := &passwords{hashes: map[string][]byte{}, verified: map[string][32]byte{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("%s:%d: want user:hash", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%s:%d: user %q: not a bcrypt hash (write the file with moongate passwd)", path, n, user)
		}
		p.hashes[user] = []byte(hash)
	}
	return p, sc.Err()
}

// check reports whether password is user's.
func (p *passwords) check(user, password string) bool {
	hash, ok := p.hashes[user]
	if !ok {
		// Spend the same time as for a known user, so that timing does not tell
		// which users exist.
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return false
	}
	digest := sha256.Sum256(append(append([]byte{}, hash...), password...))
	p.mu.Lock()
	seen, ok := p.verified[user]
	p.mu.Unlock()
	if ok && subtle.ConstantTimeCompare(seen[:], digest[:]) == 1 {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return false
	}
	p.mu.Lock()
	p.verified[user] = digest
	p.mu.Unlock()
	return true
}

var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password"), passwordCost)

// SetPassword adds user to the password file at path, or changes its password, writing
// the file atomically with mode 0600; the file is created if missing. An empty password
// removes the user.
func SetPassword(path, user, password string) error {
	if user == "" || strings.ContainsAny(user, ": \t\n") {
		return fmt.Errorf("user %q: a user name has no colon or white space", user)
	}
	lines := map[string]string{}
	if data, err := os.ReadFile(path); err == nil {
		if _, err := readPasswordFile(path); err != nil {
			return err
		}
		for _, l := range strings.Split(string(data), "\n") {
			if u, h, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && !strings.HasPrefix(u, "#") {
				lines[u] = h
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("password file: %w", err)
	}
	if password == "" {
		if _, ok := lines[user]; !ok {
			return fmt.Errorf("%s: no user %q", path, user)
		}
		delete(lines, user)
	} else {
		h, err := HashPassword(password)
		if err != nil {
			return err
		}
		lines[user] = h
	}
	users := make([]string, 0, len(lines))
	for u := range lines {
		users = append(users, u)
	}
	sort.Strings(users)
	var b strings.Builder
	for _, u := range users {
		b.WriteString(u + ":" + lines[u] + "\n")
	}
	return atomicfile.Write(path, []byte(b.String()), 0o600)
}
