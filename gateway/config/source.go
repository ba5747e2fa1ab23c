package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a config file.
type Error struct {
	File string
	Line int
	Key  string // dotted path, e.g. functions[0].timeout
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// MsgUnknownKey is the Msg of an Error about a key the config does not have.
const MsgUnknownKey = "unknown key"

// ErrorList is every error found in one config, in file order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

func (l ErrorList) err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

func (l ErrorList) sorted() ErrorList {
	sort.SliceStable(l, func(i, j int) bool { return l[i].Line < l[j].Line })
	return l
}

// source is a parsed YAML document with an index from key paths to lines, so that errors
// found after decoding (validation) can still point at the line that caused them.
type source struct {
	file   string
	root   *yaml.Node
	lines  map[string]int // key path -> line of its value
	byLine map[int]string // line -> deepest key path whose key starts on it
	// blank holds, per key path, the ${VAR}s that expanded to nothing there, each with
	// why ("is not set", "is set but empty"): an error about that value says so.
	blank map[string][]string
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

func parseSource(file string, data []byte) (*source, ErrorList) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, ErrorList{yamlSyntaxError(file, err)}
	}
	s := &source{file: file, lines: map[string]int{}, byLine: map[int]string{}, blank: map[string][]string{}}
	if len(doc.Content) == 0 { // empty file: all defaults
		s.root = &yaml.Node{Kind: yaml.MappingNode}
		return s, nil
	}
	s.root = doc.Content[0]
	s.index(s.root, "")
	return s, nil
}

// index records where every key path is, and expands ${VAR} in scalar values; expansion
// happens on values only, after parsing, so an expanded secret can never change the YAML
// structure.
func (s *source) index(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			s.lines[p] = v.Line
			s.byLine[k.Line] = p
			s.index(v, p)
		}
	case yaml.SequenceNode:
		for i, v := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			s.lines[p] = v.Line
			if _, taken := s.byLine[v.Line]; !taken || v.Kind == yaml.ScalarNode {
				s.byLine[v.Line] = p
			}
			s.index(v, p)
		}
	case yaml.ScalarNode:
		if strings.Contains(n.Value, "${") {
			n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
				v, ok := os.LookupEnv(ref[2 : len(ref)-1])
				switch {
				case !ok:
					s.blank[path] = append(s.blank[path], ref+" is not set")
				case v == "":
					s.blank[path] = append(s.blank[path], ref+" is set but empty")
				}
				return v
			})
		}
	}
	// Aliases are not followed: their anchor is indexed where it stands, and a
	// self-referencing alias would never end.
}

// explain adds to an error about a value that came from blank ${VAR}s which they were.
func (s *source) explain(e *Error) {
	if why := s.blank[e.Key]; len(why) > 0 {
		e.Msg += " (" + strings.Join(why, ", ") + ")"
	}
}

func (s *source) lineOf(path string) int {
	for p := path; p != ""; {
		if l, ok := s.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

var typeErrLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// decode decodes n into v, rejecting unknown keys, with every message rewritten into an
// Error that carries file, line and key. Node.Decode keeps the node's own line numbers, but
// has no strict mode, so unknown keys are found first by walking n against v's type.
func (s *source) decode(n *yaml.Node, base string, v any) ErrorList {
	out := s.unknownKeys(n, base, reflect.TypeOf(v))
	err := n.Decode(v)
	if err == nil {
		return out
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return append(out, &Error{File: s.file, Line: n.Line, Key: base, Msg: err.Error()})
	}
	for _, msg := range te.Errors {
		e := &Error{File: s.file, Key: base, Msg: msg}
		if m := typeErrLine.FindStringSubmatch(msg); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = strings.ReplaceAll(m[2], "!!str ", "")
			if k, ok := s.byLine[e.Line]; ok {
				e.Key = k
			}
		}
		s.explain(e)
		out = append(out, e)
	}
	return out
}

var (
	nodeType        = reflect.TypeOf(yaml.Node{})
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

// unknownKeys reports every mapping key under n that t has no field for.
func (s *source) unknownKeys(n *yaml.Node, path string, t reflect.Type) ErrorList {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nodeType || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	var out ErrorList
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			f, ok := fieldByTag(t, k.Value)
			if !ok {
				out = append(out, &Error{File: s.file, Line: k.Line, Key: join(k.Value), Msg: MsgUnknownKey})
				continue
			}
			out = append(out, s.unknownKeys(n.Content[i+1], join(k.Value), f.Type)...)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			out = append(out, s.unknownKeys(n.Content[i+1], join(n.Content[i].Value), t.Elem())...)
		}
	case n.Kind == yaml.SequenceNode && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for i, c := range n.Content {
			out = append(out, s.unknownKeys(c, fmt.Sprintf("%s[%d]", path, i), t.Elem())...)
		}
	}
	return out
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

var syntaxLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func yamlSyntaxError(file string, err error) *Error {
	e := &Error{File: file, Msg: err.Error()}
	if m := syntaxLine.FindStringSubmatch(err.Error()); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = m[2]
	}
	return e
}

// DecodeYAML decodes a YAML document other than the config (moongate test's files) into v
// the way the config is decoded: unknown keys refused, every error with file, line and
// key, all at once, ${VAR} expanded in values.
func DecodeYAML(file string, data []byte, v any) error {
	src, errs := parseSource(file, data)
	if src == nil {
		return errs.err()
	}
	return src.decode(src.root, "", v).sorted().err()
}
