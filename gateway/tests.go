package gateway

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/moongate/moongate/gateway/config"
)

// TestFile is a function test file attached to a deploy (the format of gateway/fntest,
// NAME_test.yaml): File names it in the results, YAML is its text.
type TestFile struct {
	File string `json:"file"`
	YAML string `json:"yaml"`
}

// TestResult is the outcome of one test case, as the API answers it.
type TestResult struct {
	File  string   `json:"file"`
	Case  string   `json:"case"`
	OK    bool     `json:"ok"`
	Diffs []string `json:"diffs,omitempty"` // by path: "publishes[0].payload.temp: want 31, got 30"
	Logs  []string `json:"logs,omitempty"`
}

// TestRunner runs test files against a function (its source, env and limits) in a
// sandbox: an in-memory KV and a fixed clock, nothing published, stored or written to a
// pin. An error is a bad test file. Moongate's is fntest.OnGateway.
type TestRunner func(f config.Function, tests []TestFile) ([]TestResult, error)

// testReport is what the API answers about a run of tests.
type testReport struct {
	Passed int          `json:"passed"`
	Failed int          `json:"failed"`
	Cases  []TestResult `json:"cases"`
}

// testsFailed refuses a deploy whose tests did not all pass.
type testsFailed struct{ report testReport }

func (e *testsFailed) Error() string {
	return fmt.Sprintf("%d of %d test cases failed", e.report.Failed, e.report.Failed+e.report.Passed)
}

// errNoTestRunner refuses tests on a gateway built without a runner, rather than deploy
// what was meant to be tested first.
var errNoTestRunner = errors.New("this gateway runs no function tests (Options.Tests is not set)")

// runTests runs tests against spec, as the version spec would run.
func (a *api) runTests(spec functionSpec, tests []TestFile) (testReport, error) {
	if a.tests == nil {
		return testReport{}, errNoTestRunner
	}
	if len(tests) == 0 {
		return testReport{}, &deployRefused{Field: "tests", Err: errors.New("tests: no test files")}
	}
	retries := spec.Retries
	f := config.Function{Name: spec.Name, Source: spec.Filename, Code: spec.Source, Triggers: spec.Triggers,
		Timeout: spec.Timeout, Memory: config.Size(spec.Memory), Concurrency: spec.Concurrency, Retries: &retries,
		Env: spec.Env, Emit: spec.Emit, Overflow: spec.Overflow}
	if f.Source == "" {
		f.Source = spec.Name + ".lua"
	}
	results, err := a.tests(f, tests)
	if err != nil {
		return testReport{}, &deployRefused{Field: "tests", Err: err}
	}
	r := testReport{Cases: results}
	for _, c := range results {
		if c.OK {
			r.Passed++
		} else {
			r.Failed++
		}
	}
	if r.Cases == nil {
		r.Cases = []TestResult{}
	}
	return r, nil
}

// testFunction runs tests against a source and settings without deploying them: the
// console's "Run tests". The body is a deploy's (absent settings are the current
// version's); the answer is the report, whether the cases pass or fail.
func (a *api) testFunction(w http.ResponseWriter, r *http.Request) {
	spec, req, _, ok := a.specFromRequest(w, r)
	if !ok {
		return
	}
	if req.Tests == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "tests are required", "field": "tests"})
		return
	}
	report, err := a.runTests(spec, req.Tests)
	if err != nil {
		writeDeployError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, report)
}
