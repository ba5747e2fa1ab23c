package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// An ACL file says which topics each device may publish to (write) and subscribe to
// (read), in Mosquitto's acl_file format:
//
//	# rules before any user line are for devices without a user name
//	topic read public/#
//	user alice
//	topic readwrite alice/#
//	# pattern rules are for every device: %u is its user name, %c its client id
//	pattern write sensors/%u/#
//	pattern read commands/%c/#
//
// The access word is read, write, readwrite (the default when it is left out) or deny;
// a deny rule wins over any grant. With an ACL file, what no rule grants is refused.
type acl struct {
	anonymous []aclRule            // rules before the first user line
	users     map[string][]aclRule // user -> its topic rules
	patterns  []aclRule            // for every device, with %u and %c replaced
}

type aclRule struct {
	filter      string
	read, write bool
	deny        bool
}

func readACLFile(path string) (*acl, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("acl file: %w", err)
	}
	a := &acl{users: map[string][]aclRule{}}
	user, inUser := "", false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s", path, n, fmt.Sprintf(format, args...))
		}
		switch fields[0] {
		case "user":
			if len(fields) != 2 {
				return nil, bad("want: user NAME")
			}
			user, inUser = fields[1], true
		case "topic", "pattern":
			r, err := parseRule(fields[1:])
			if err != nil {
				return nil, bad("%v", err)
			}
			switch {
			case fields[0] == "pattern":
				a.patterns = append(a.patterns, r)
			case inUser:
				a.users[user] = append(a.users[user], r)
			default:
				a.anonymous = append(a.anonymous, r)
			}
		default:
			return nil, bad("%q is not user, topic or pattern", fields[0])
		}
	}
	return a, sc.Err()
}

func parseRule(f []string) (aclRule, error) {
	r := aclRule{read: true, write: true}
	if len(f) == 2 {
		switch f[0] {
		case "read":
			r.write = false
		case "write":
			r.read = false
		case "readwrite":
		case "deny":
			r.deny = true
		default:
			return r, fmt.Errorf("%q is not read, write, readwrite or deny", f[0])
		}
		f = f[1:]
	}
	if len(f) != 1 {
		return r, fmt.Errorf("want: topic|pattern [read|write|readwrite|deny] FILTER")
	}
	r.filter = f[0]
	if err := ValidFilter(strings.NewReplacer("%u", "u", "%c", "c").Replace(r.filter)); err != nil {
		return r, err
	}
	return r, nil
}

// allows reports whether the device (user, client id) may write (publish to) the topic,
// or read it: subscribe to a filter, which must lie within what a rule grants, or
// receive a message on a topic.
func (a *acl) allows(user, clientID, topic string, write bool) bool {
	return a.decide(user, clientID, topic, write, false)
}

// allowsExplicitly is allows for the gateway's own topics: only rules whose filter names
// the topic's first level count, so a grant of # does not reach moongate/ or $SYS.
func (a *acl) allowsExplicitly(user, clientID, topic string) bool {
	return a.decide(user, clientID, topic, true, true)
}

func (a *acl) decide(user, clientID, topic string, write, explicit bool) bool {
	rules := a.anonymous
	if user != "" {
		rules = a.users[user]
	}
	granted := false
	check := func(r aclRule, filter string) bool {
		if !covers(filter, topic) {
			return true
		}
		if first, _, _ := strings.Cut(filter, "/"); explicit && !r.deny && (first == "+" || first == "#") {
			return true
		}
		if r.deny {
			return false
		}
		granted = granted || (write && r.write) || (!write && r.read)
		return true
	}
	for _, r := range rules {
		if !check(r, r.filter) {
			return false
		}
	}
	for _, r := range a.patterns {
		if user == "" && strings.Contains(r.filter, "%u") {
			continue
		}
		f := strings.NewReplacer("%u", user, "%c", clientID).Replace(r.filter)
		if !check(r, f) {
			return false
		}
	}
	return granted
}

// covers reports whether every topic that sub matches is matched by filter too: a
// subscription to sensors/# lies within a grant of sensors/#, not of sensors/+/temp. For
// a topic (no wildcards) it is Match.
func covers(filter, sub string) bool {
	if !strings.ContainsAny(sub, "+#") {
		return Match(filter, sub)
	}
	fl, sl := strings.Split(filter, "/"), strings.Split(sub, "/")
	for i, f := range fl {
		if f == "#" {
			return !strings.HasPrefix(sub, "$") || i > 0
		}
		if i >= len(sl) {
			return false
		}
		switch s := sl[i]; {
		case s == "#":
			return false // sub reaches deeper levels than filter grants
		case f == "+":
			if i == 0 && strings.HasPrefix(s, "$") {
				return false
			}
		case s == "+" || f != s:
			return false
		}
	}
	return len(fl) == len(sl)
}
