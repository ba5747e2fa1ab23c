package fleet

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Document is one layer of desired state.
type Document struct {
	// Revision orders the documents of one target; it only goes up (1, 2, ...).
	Revision uint64 `json:"revision"`
	// Target is "group:NAME" or "gateway:ID": the topic it is retained on (Topic).
	Target string `json:"target"`
	// Priority orders a gateway's group layers: the higher one wins a function both name.
	// A gateway's own document is above every group's whatever its priority.
	Priority  int        `json:"priority,omitempty"`
	Functions []Function `json:"functions"`
	// Canary, when set, are the only gateways this revision is for: the others of the
	// target leave it unapplied, and take the next revision (moongate fleet push --canary).
	Canary []string `json:"canary,omitempty"`
}

// For reports whether the document is for the gateway id: not a canary revision, or one
// that names it.
func (d *Document) For(id string) bool { return len(d.Canary) == 0 || slices.Contains(d.Canary, id) }

// Function is a function as the fleet deploys it: what a functions: entry of
// moongate.yaml says, with the source in line. Unset limits take the gateway's defaults.
type Function struct {
	Name        string            `json:"name"`
	Source      string            `json:"source"`
	Triggers    []string          `json:"triggers"`
	Timeout     string            `json:"timeout,omitempty"` // a Go duration: 500ms, 2s
	Memory      string            `json:"memory,omitempty"`  // 8MiB
	Concurrency int               `json:"concurrency,omitempty"`
	Retries     *int              `json:"retries,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	Emit        string            `json:"emit,omitempty"`
	Overflow    string            `json:"overflow,omitempty"`
}

// Target kinds.
const (
	GroupPrefix   = "group:"
	GatewayPrefix = "gateway:"
)

// A group name or gateway id is one MQTT topic level that any broker takes.
var targetName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckName refuses a group name or gateway id that cannot be a topic level.
func CheckName(name string) error {
	if !targetName.MatchString(name) {
		return fmt.Errorf("%q is not 1 to 64 letters, digits, '.', '_' or '-'", name)
	}
	return nil
}

// Parse decodes a document and checks what a gateway relies on: a revision, a target,
// function names once each, a source and a timeout that parses. Whether a function
// compiles is the gateway's to say.
func Parse(b []byte) (*Document, error) {
	var d Document
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields() // a misspelt key is refused, not ignored
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("fleet: document: %w", err)
	}
	var errs []error
	if d.Revision == 0 {
		errs = append(errs, errors.New("revision must be at least 1"))
	}
	if _, _, err := SplitTarget(d.Target); err != nil {
		errs = append(errs, err)
	}
	for i, id := range d.Canary {
		if err := CheckName(id); err != nil {
			errs = append(errs, fmt.Errorf("canary[%d]: %w", i, err))
		}
	}
	seen := map[string]bool{}
	for i, f := range d.Functions {
		switch {
		case f.Name == "":
			errs = append(errs, fmt.Errorf("functions[%d]: name is required", i))
		case seen[f.Name]:
			errs = append(errs, fmt.Errorf("functions[%d]: duplicate function %q", i, f.Name))
		}
		seen[f.Name] = true
		if f.Source == "" {
			errs = append(errs, fmt.Errorf("functions[%d]: source is required", i))
		}
		if f.Timeout != "" {
			if _, err := time.ParseDuration(f.Timeout); err != nil {
				errs = append(errs, fmt.Errorf("functions[%d].timeout: %v", i, err))
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("fleet: document: %w", errors.Join(errs...))
	}
	return &d, nil
}

// SplitTarget splits "group:lab" into its kind prefix and name.
func SplitTarget(target string) (kind, name string, err error) {
	for _, k := range []string{GroupPrefix, GatewayPrefix} {
		if n, ok := strings.CutPrefix(target, k); ok {
			if err := CheckName(n); err != nil {
				return "", "", fmt.Errorf("target %q: %w", target, err)
			}
			return k, n, nil
		}
	}
	return "", "", fmt.Errorf("target %q is not group:NAME or gateway:ID", target)
}

// The topics on the cloud broker. Desired documents and reports are retained.
const topicRoot = "moongate/fleet/"

// DesiredTopic is where the document for target is retained.
func DesiredTopic(target string) (string, error) {
	kind, name, err := SplitTarget(target)
	if err != nil {
		return "", err
	}
	if kind == GroupPrefix {
		return topicRoot + "groups/" + name + "/desired", nil
	}
	return topicRoot + "gateways/" + name + "/desired", nil
}

// ReportedTopic is where gateway id retains its Report; OnlineTopic says whether it is
// connected (its will says offline).
func ReportedTopic(id string) string { return topicRoot + "gateways/" + id + "/reported" }
func OnlineTopic(id string) string   { return topicRoot + "gateways/" + id + "/online" }

// The filters moongate fleet status reads every gateway's state with.
const (
	AllReported = topicRoot + "gateways/+/reported"
	AllOnline   = topicRoot + "gateways/+/online"
)

// Payloads of OnlineTopic.
var (
	Online  = []byte("online")
	Offline = []byte("offline")
)

// GatewayOf is the gateway id in a reported or online topic, "" for another topic.
func GatewayOf(topic string) string {
	rest, ok := strings.CutPrefix(topic, topicRoot+"gateways/")
	if !ok {
		return ""
	}
	id, _, ok := strings.Cut(rest, "/")
	if !ok {
		return ""
	}
	return id
}

// Layered is a function of the merged state, with the layer it came from.
type Layered struct {
	Function
	Target   string
	Revision uint64
}

// Merge layers a gateway's documents (see the package doc): groups is the gateway's
// fleet.groups in order, layers its documents by target (absent ones are skipped). It
// returns the functions to run, sorted by name.
func Merge(id string, groups []string, layers map[string]*Document) []Layered {
	type layer struct{ doc *Document }
	var ordered []layer
	for _, g := range groups {
		if d := layers[GroupPrefix+g]; d != nil {
			ordered = append(ordered, layer{d})
		}
	}
	// Lowest priority first; equal priorities keep the order of fleet.groups.
	slices.SortStableFunc(ordered, func(a, b layer) int { return cmp.Compare(a.doc.Priority, b.doc.Priority) })
	if d := layers[GatewayPrefix+id]; d != nil {
		ordered = append(ordered, layer{d})
	}
	byName := map[string]Layered{}
	for _, l := range ordered {
		for _, f := range l.doc.Functions {
			byName[f.Name] = Layered{Function: f, Target: l.doc.Target, Revision: l.doc.Revision}
		}
	}
	out := make([]Layered, 0, len(byName))
	for _, f := range byName {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Layered) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
