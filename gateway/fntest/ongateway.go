package fntest

import (
	"errors"
	"fmt"

	"github.com/moongate/moongate/gateway"
	"github.com/moongate/moongate/gateway/config"
)

// OnGateway is the gateway's gateway.TestRunner: it runs the attached test files against
// the version about to go live, with the same Runner as `moongate test`, in the same
// sandbox, on an in-memory KV: the live KV, the broker, the outbox and the pins are never
// touched. Every file is parsed before any case runs, so a bad file refuses the lot.
func OnGateway(fn config.Function, tests []gateway.TestFile) ([]gateway.TestResult, error) {
	files := make([]*File, 0, len(tests))
	var errs []error
	for i, t := range tests {
		name := t.File
		if name == "" {
			name = fmt.Sprintf("tests[%d]", i)
		}
		f, err := Parse(name, []byte(t.YAML))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		files = append(files, f)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var r Runner
	out := []gateway.TestResult{}
	for _, f := range files {
		for _, res := range r.RunFunction(f, fn) {
			out = append(out, gateway.TestResult{File: res.File, Case: res.Case, OK: res.OK, Diffs: res.Diffs, Logs: res.Logs})
		}
	}
	return out, nil
}

var _ gateway.TestRunner = OnGateway
