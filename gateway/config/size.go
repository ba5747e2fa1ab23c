package config

import (
	"fmt"

	"github.com/dustin/go-humanize"
	"go.yaml.in/yaml/v3"
)

// Size is a byte count written as 16MiB, 256KiB, 1MB or a plain number of bytes.
type Size int64

// UnmarshalYAML parses a size; errors are yaml.TypeErrors so that decoding goes on and every
// error in the file is reported at once.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := humanize.ParseBytes(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode || v > 1<<62 {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid size %q (want e.g. 16MiB, 256KiB)", n.Line, n.Value)}}
	}
	*s = Size(v)
	return nil
}

func (s Size) String() string { return humanize.IBytes(uint64(s)) }
