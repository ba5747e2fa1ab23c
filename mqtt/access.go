package mqtt

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/moongate/moongate/internal/throttle"
)

// access decides who may connect to the embedded broker and what each device may publish
// and subscribe to: the password file, the ACL file (both reloaded when they change, or
// on Reload), and the topics that belong to the gateway.
type access struct {
	passwordFile, aclFile string
	username, password    string // a single device credential, when no password file

	mu    sync.RWMutex
	users *passwords // nil: no password file
	rules *acl       // nil: no ACL file
	seen  map[string]fileStamp

	logins *throttle.Failures
	denied *throttle.Failures // keyed by client id: logs the first denial per minute
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// A device's topic names and filters are bounded: deeper or longer ones are refused like
// an ACL denial. A sensor's topic has a handful of levels.
const (
	maxDeviceTopicLevels = 32
	maxDeviceTopicBytes  = 1024
)

// Failed logins allowed per source address and window; past them the address is refused
// without a password check (bcrypt is expensive on purpose).
const (
	maxLoginFailures  = 5
	loginFailureReset = time.Minute
	// How often the password and ACL files are checked for changes.
	accessReloadEvery = 2 * time.Second
)

func newAccess(o EmbeddedOptions) (*access, error) {
	a := &access{passwordFile: o.PasswordFile, aclFile: o.ACLFile, username: o.Username, password: o.Password,
		seen:   map[string]fileStamp{},
		logins: throttle.New(maxLoginFailures, loginFailureReset), denied: throttle.New(1, time.Minute)}
	if _, err := a.reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// CheckDeviceFiles reads a password file and an ACL file ("" skips one) as the broker
// would, for `moongate check`: an error names the file and the line.
func CheckDeviceFiles(passwordFile, aclFile string) (passwordErr, aclErr error) {
	if passwordFile != "" {
		_, passwordErr = readPasswordFile(passwordFile)
	}
	if aclFile != "" {
		_, aclErr = readACLFile(aclFile)
	}
	return passwordErr, aclErr
}

// reload reads the files again; on an error the rules in force stay. changed reports
// whether a file had changed since the last read.
func (a *access) reload() (changed bool, err error) {
	var users *passwords
	var rules *acl
	stamps := map[string]fileStamp{}
	if a.passwordFile != "" {
		if users, err = readPasswordFile(a.passwordFile); err != nil {
			return false, err
		}
		stamps[a.passwordFile] = stampOf(a.passwordFile)
	}
	if a.aclFile != "" {
		if rules, err = readACLFile(a.aclFile); err != nil {
			return false, err
		}
		stamps[a.aclFile] = stampOf(a.aclFile)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for f, s := range stamps {
		changed = changed || a.seen[f] != s
	}
	a.users, a.rules, a.seen = users, rules, stamps
	return changed, nil
}

// stale reports whether a file changed on disk since it was read.
func (a *access) stale() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for f, s := range a.seen {
		if stampOf(f) != s {
			return true
		}
	}
	return false
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}
}

// authenticate checks a CONNECT's credentials. throttled reports a refusal without a check
// because the source failed too often.
func (a *access) authenticate(user, password string, remote string) (ok, throttled bool) {
	host := hostOfAddr(remote)
	if a.logins.Blocked(host) {
		return false, true
	}
	a.mu.RLock()
	users := a.users
	a.mu.RUnlock()
	switch {
	case users != nil:
		ok = users.check(user, password)
	case a.username != "":
		ok = subtle.ConstantTimeCompare([]byte(user), []byte(a.username))&
			subtle.ConstantTimeCompare([]byte(password), []byte(a.password)) == 1
	default:
		ok = true // anonymous: the config allowed it (loopback, or allow_anonymous)
	}
	return ok, false
}

// knows reports whether user is still in the password file (all are, without one).
func (a *access) knows(user string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.users == nil {
		return true
	}
	_, ok := a.users.hashes[user]
	return ok
}

// allows decides a device's publish (write) to a topic, or subscription (read) to a
// filter or delivery of a topic. Topics under $ and moongate/ belong to the gateway: a
// device may write them only where an ACL rule names them explicitly.
func (a *access) allows(user, clientID, topic string, write bool) bool {
	if len(topic) > maxDeviceTopicBytes || strings.Count(topic, "/") >= maxDeviceTopicLevels {
		return false // matching a filter of thousands of levels costs the broker dearly
	}
	a.mu.RLock()
	rules := a.rules
	a.mu.RUnlock()
	if write && reservedTopic(topic) {
		return rules != nil && rules.allowsExplicitly(user, clientID, topic)
	}
	return rules == nil || rules.allows(user, clientID, topic, write)
}

func reservedTopic(topic string) bool {
	return strings.HasPrefix(topic, "$") || strings.HasPrefix(topic, "moongate/")
}

func hostOfAddr(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// watchAccess reloads the password and ACL files when they change, until ctx ends.
func (e *Embedded) watchAccess(ctx context.Context) {
	t := time.NewTicker(accessReloadEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if e.access.stale() {
				if err := e.Reload(); err != nil {
					e.log.Error("embedded broker: reload of the device files failed; the previous rules stay", logKeyErr, err)
				}
			}
		}
	}
}

// Reload reads the password and ACL files again (the gateway calls it on SIGHUP; the
// broker also watches the files). Connected devices stay connected, except those whose
// user is no longer in the password file. On an error the previous rules stay.
func (e *Embedded) Reload() error {
	changed, err := e.access.reload()
	if err != nil {
		return fmt.Errorf("embedded broker: reload: %w", err)
	}
	if changed {
		e.log.Info("embedded broker: device files reloaded", "password_file", e.opts.PasswordFile, "acl_file", e.opts.ACLFile)
	}
	for _, cl := range e.srv.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		if _, byCert := certificateIdentity(cl.Net.Conn); byCert {
			continue // its CA vouches for it, not the password file
		}
		if user := string(cl.Properties.Username); !e.access.knows(user) {
			e.log.Info("embedded broker: disconnecting a device whose user was removed", logKeyClient, cl.ID, "user", user)
			e.disconnect(cl, packets.ErrNotAuthorized)
		}
	}
	return nil
}

// authenticate is mochi's OnConnectAuthenticate: a verified client certificate (on the
// TLS listener with a client CA) names the device; otherwise its user name and password,
// throttled per address.
func (e *Embedded) authenticate(cl *mochi.Client, pk packets.Packet) bool {
	if cn, ok := certificateIdentity(cl.Net.Conn); ok && e.opts.ClientCA != "" {
		// The TLS handshake verified the device's certificate: its name is its user.
		cl.Properties.Username = []byte(cn)
		return true
	}
	ok, throttled := e.access.authenticate(string(pk.Connect.Username), string(pk.Connect.Password), cl.Net.Remote)
	switch {
	case throttled:
		e.loginsThrottled.Add(1)
	case !ok:
		e.authFailures.Add(1)
		if e.access.logins.Fail(hostOfAddr(cl.Net.Remote)) {
			e.log.Warn("embedded broker: device refused: bad username or password (logged once a minute per address; past 5 failures the address waits a minute)",
				logKeyClient, cl.ID, "user", string(pk.Connect.Username), "remote", cl.Net.Remote)
		}
	}
	return ok
}

// willAllowed refuses a CONNECT whose last will the device could not publish itself: a
// will is a publish the broker makes for the device later, and mochi checks nothing of
// it (a will could spoof $SYS, retained, or name a wildcard). The refusal is counted as
// an ACL denial; MQTT's CONNACK has no closer code than "not authorized".
func (e *Embedded) willAllowed(cl *mochi.Client, pk packets.Packet) bool {
	if !pk.Connect.WillFlag {
		return true
	}
	topic := pk.Connect.WillTopic
	if ValidTopic(topic) == nil && e.publishAllowed(cl, topic) {
		return true
	}
	if ValidTopic(topic) != nil {
		e.aclDenied.Add(1)
	}
	e.log.Warn("embedded broker: device refused: its will names a topic it may not publish to",
		logKeyClient, cl.ID, logKeyTopic, topic)
	return false
}

// aclCheck is mochi's OnACLCheck: every device subscribe and delivery. Publishes are
// decided in OnPublish instead (publishAllowed): mochi disconnects an MQTT 3 device
// whose QoS 1 publish OnACLCheck refuses, and the device would resend it at every
// reconnect; acknowledged and dropped, as Mosquitto does, it is gone.
func (e *Embedded) aclCheck(cl *mochi.Client, topic string, write bool) bool {
	if write {
		return true
	}
	return e.permitted(cl, topic, false)
}

// publishAllowed decides a device's publish.
func (e *Embedded) publishAllowed(cl *mochi.Client, topic string) bool {
	return e.permitted(cl, topic, true)
}

func (e *Embedded) permitted(cl *mochi.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	if e.access.allows(string(cl.Properties.Username), cl.ID, topic, write) {
		return true
	}
	e.aclDenied.Add(1)
	e.device(cl).denied.Add(1)
	if e.access.denied.Fail(cl.ID) {
		what := "read of"
		if write {
			what = "publish to"
		}
		e.log.Warn("embedded broker: denied a device's "+what+" a topic (logged once a minute per device)",
			logKeyClient, cl.ID, "user", string(cl.Properties.Username), logKeyTopic, topic)
	}
	return false
}
