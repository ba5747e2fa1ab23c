package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/moongate/moongate/gateway/config"
)

// api is the client side of the HTTP API (SPEC §6), for the client commands.
type api struct {
	base  string
	token string
	http  *http.Client
}

// clientFlags adds --api and --token, defaulting from MOONGATE_API and MOONGATE_TOKEN.
func clientFlags(fs *flag.FlagSet) *api {
	a := &api{http: &http.Client{Timeout: 30 * time.Second}}
	def := os.Getenv("MOONGATE_API")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	fs.StringVar(&a.base, "api", def, "gateway API URL (env MOONGATE_API)")
	fs.StringVar(&a.token, "token", os.Getenv("MOONGATE_TOKEN"), "API token (env MOONGATE_TOKEN)")
	return a
}

// apiError is an error answer from the gateway.
type apiError struct {
	Status int
	Msg    string `json:"error"`
	Line   int    `json:"line"`
	// Tests are the cases of a deploy refused because some failed.
	Tests *struct {
		Cases []struct {
			File  string   `json:"file"`
			Case  string   `json:"case"`
			OK    bool     `json:"ok"`
			Diffs []string `json:"diffs"`
			Logs  []string `json:"logs"`
		} `json:"cases"`
	} `json:"tests"`
}

func (e *apiError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d)", e.Msg, e.Line)
	}
	return e.Msg
}

func (a *api) do(ctx context.Context, method, path string, body, out any) error {
	if body == nil {
		return a.send(ctx, method, path, "", nil, out)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return a.send(ctx, method, path, "application/json", bytes.NewReader(b), out)
}

// send is do with a body of any type (a firmware upload streams one).
func (a *api) send(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.base, "/")+path, body)
	if err != nil {
		return err
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("gateway at %s: %w", a.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Msg == "" {
			e.Msg = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
		}
		if resp.StatusCode == http.StatusUnauthorized {
			e.Msg += " (set --token or MOONGATE_TOKEN)"
		}
		return e
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// functionPath is the API path of function name, and of one of its endpoints: every
// segment is escaped, so no name can reach another endpoint.
func functionPath(name string, endpoint ...string) string {
	p := "/api/v1/functions/" + url.PathEscape(name)
	for _, e := range endpoint {
		p += "/" + url.PathEscape(e)
	}
	return p
}

// table prints aligned columns.
func table(w io.Writer, header []string, rows [][]string) {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			if i == len(cells)-1 {
				b.WriteString(c)
			} else {
				fmt.Fprintf(&b, "%-*s  ", widths[i], c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// splitArgs separates positional arguments from flags, so that flags may follow them
// (`moongate deploy NAME FILE --trigger ...`).
func splitArgs(fs *flag.FlagSet, args []string) (pos []string, err error) {
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return pos, nil
}

func deployCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("deploy", stderr)
	a := clientFlags(fs)
	var triggers multiFlag
	fs.Var(&triggers, "trigger", "trigger SPEC (repeat): mqtt:sensors/+/temp, gpio:GPIO17:falling:50ms, sensor:kitchen, every:30s; none for invoke only. Without it a redeploy keeps the triggers")
	timeout := fs.String("timeout", "", "wall time per invocation, e.g. 100ms")
	memory := fs.String("memory", "", "memory per invocation, e.g. 16MiB")
	concurrency := fs.Int("concurrency", 0, "warm VMs")
	emit := fs.String("emit", "", "stream that returned values are emitted to")
	overflow := fs.String("overflow", "", "when the function is full: block (hold the sources, the default) or drop_oldest (shed the oldest QoS 0 events)")
	var env, tests multiFlag
	fs.Var(&env, "env", "KEY=VALUE for the function's env table (repeat)")
	fs.Var(&tests, "test", "FILE_test.yaml (repeat): the gateway runs it against the new version first and refuses the deploy if a case fails")
	force := fs.Bool("force", false, "deploy over a function the fleet manages (until the fleet's next revision)")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("usage: moongate deploy NAME FILE.lua [--trigger SPEC]... [--timeout D] [--memory SIZE] [--test FILE_test.yaml]...")
	}
	if err := config.CheckFunctionName(pos[0]); err != nil {
		return usagef("%v", err)
	}
	src, err := os.ReadFile(pos[1])
	if err != nil {
		return usagef("read %s: %v", pos[1], err)
	}
	body := map[string]any{"source": string(src)}
	if len(tests) > 0 {
		files := []map[string]string{}
		for _, t := range tests {
			y, err := os.ReadFile(t)
			if err != nil {
				return usagef("read %s: %v", t, err)
			}
			files = append(files, map[string]string{"file": t, "yaml": string(y)})
		}
		body["tests"] = files
	}
	switch {
	case slices.Contains(triggers, "none"):
		if len(triggers) > 1 {
			return usagef("--trigger none means no triggers: it cannot go with others")
		}
		body["triggers"] = []string{}
	case len(triggers) > 0:
		body["triggers"] = []string(triggers)
	default:
		// Without --trigger a redeploy keeps the function's triggers; a new function would
		// get none and never run on its own, which is rarely what was meant.
		var cur functionInfo
		err := a.do(ctx, http.MethodGet, functionPath(pos[0]), nil, &cur)
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return usagef("a new function needs at least one --trigger; use --trigger none to deploy it for invoke only")
		}
		if err != nil {
			return err
		}
	}
	if *timeout != "" {
		body["timeout"] = *timeout
	}
	if *memory != "" {
		body["memory"] = *memory
	}
	if *concurrency > 0 {
		body["concurrency"] = *concurrency
	}
	if flagSet(fs, "emit") {
		body["emit"] = *emit
	}
	if flagSet(fs, "overflow") {
		if err := config.CheckOverflow(*overflow); err != nil {
			return usagef("--overflow: %v", err)
		}
		body["overflow"] = *overflow
	}
	if len(env) > 0 {
		m := map[string]string{}
		for _, kv := range env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return usagef("--env %q: want KEY=VALUE", kv)
			}
			m[k] = v
		}
		body["env"] = m
	}
	path := functionPath(pos[0])
	if *force {
		path += "?force=1"
	}
	var fn functionInfo
	if err := a.do(ctx, http.MethodPut, path, body, &fn); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.Line > 0 {
			return fmt.Errorf("%s:%d: %s", pos[1], ae.Line, ae.Msg)
		}
		if errors.As(err, &ae) && ae.Tests != nil {
			for _, c := range ae.Tests.Cases {
				if c.OK {
					continue
				}
				fmt.Fprintf(stdout, "FAIL %s: %s\n", c.File, c.Case)
				for _, d := range c.Diffs {
					fmt.Fprintf(stdout, "    %s\n", d)
				}
				printLogs(stdout, c.Logs)
			}
		}
		return err
	}
	triggersText := strings.Join(fn.Triggers, ", ")
	if len(fn.Triggers) == 0 {
		triggersText = "no triggers: invoke only"
	}
	tested := ""
	if fn.TestsPassed > 0 {
		tested = fmt.Sprintf(", %s passed", count(fn.TestsPassed, "test case"))
	}
	fmt.Fprintf(stdout, "deployed %s version %d (%s%s)\n", fn.Name, fn.Version, triggersText, tested)
	return nil
}

type functionInfo struct {
	Name        string   `json:"name"`
	Version     int      `json:"version"`
	Tested      bool     `json:"tested"`
	TestsPassed int      `json:"tests_passed"`
	Triggers    []string `json:"triggers"`
	Timeout     string   `json:"timeout"`
	Memory      string   `json:"memory"`
	Concurrency int      `json:"concurrency"`
	Counters    struct {
		Invocations   int64 `json:"invocations"`
		Errors        int64 `json:"errors"`
		DurationUSSum int64 `json:"duration_us_sum"`
	} `json:"counters"`
	Versions []struct {
		Version    int       `json:"version"`
		Created    time.Time `json:"created"`
		RollbackOf int       `json:"rollback_of"`
	} `json:"versions"`
}

func functionsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("functions", stderr)
	a := clientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var list struct {
		Functions []functionInfo `json:"functions"`
	}
	if err := a.do(ctx, http.MethodGet, "/api/v1/functions", nil, &list); err != nil {
		return err
	}
	var rows [][]string
	for _, f := range list.Functions {
		mean := "-"
		if f.Counters.Invocations > 0 {
			mean = micros(f.Counters.DurationUSSum / f.Counters.Invocations)
		}
		tested := "no"
		if f.Tested {
			tested = count(f.TestsPassed, "case")
		}
		rows = append(rows, []string{f.Name, fmt.Sprint(f.Version), tested, fmt.Sprint(f.Counters.Invocations),
			fmt.Sprint(f.Counters.Errors), mean, f.Timeout, f.Memory, strings.Join(f.Triggers, " ")})
	}
	table(stdout, []string{"NAME", "VERSION", "TESTED", "INVOCATIONS", "ERRORS", "MEAN", "TIMEOUT", "MEMORY", "TRIGGERS"}, rows)
	return nil
}

func invokeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("invoke", stderr)
	a := clientFlags(fs)
	event := fs.String("event", "{}", "test event as JSON, e.g. '{\"topic\":\"sensors/a/temp\",\"payload\":{\"temp\":31}}'")
	dryRun := fs.Bool("dry-run", false, "run the function but apply nothing: print the KV writes, emits, publishes and GPIO writes it would make")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: moongate invoke NAME [--event JSON] [--dry-run]")
	}
	var ev json.RawMessage
	if err := json.Unmarshal([]byte(*event), &ev); err != nil {
		return usagef("--event is not JSON: %v", err)
	}
	var res struct {
		Result     json.RawMessage `json:"result"`
		Logs       []struct{ Level, Msg string }
		Error      string   `json:"error"`
		Line       int      `json:"line"`
		DurationUS int64    `json:"duration_us"`
		Version    int      `json:"version"`
		Would      *effects `json:"would"`
		Effects    *effects `json:"effects"`
	}
	path := functionPath(pos[0], "invoke")
	if *dryRun {
		path += "?dry_run=1"
	}
	if err := a.do(ctx, http.MethodPost, path, ev, &res); err != nil {
		return err
	}
	for _, l := range res.Logs {
		fmt.Fprintf(stdout, "log %-5s %s\n", l.Level, l.Msg)
	}
	fmt.Fprintf(stdout, "version %d, %s\n", res.Version, micros(res.DurationUS))
	if res.Error != "" {
		return fmt.Errorf("invocation failed: %s", res.Error)
	}
	fmt.Fprintf(stdout, "result %s\n", res.Result)
	if *dryRun {
		fmt.Fprintln(stdout, "dry run: nothing was applied")
		res.Would.print(stdout, "would ")
	} else {
		res.Effects.print(stdout, "")
	}
	return nil
}

func rollbackCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rollback", stderr)
	a := clientFlags(fs)
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usagef("usage: moongate rollback NAME [VERSION]")
	}
	body := map[string]int{}
	if len(pos) == 2 {
		var v int
		if _, err := fmt.Sscan(pos[1], &v); err != nil || v < 1 {
			return usagef("VERSION %q is not a version number", pos[1])
		}
		body["version"] = v
	}
	var fn functionInfo
	if err := a.do(ctx, http.MethodPost, functionPath(pos[0], "rollback"), body, &fn); err != nil {
		return err
	}
	from := 0
	if len(fn.Versions) > 0 {
		from = fn.Versions[0].RollbackOf
	}
	fmt.Fprintf(stdout, "%s is now version %d (the code of version %d)\n", fn.Name, fn.Version, from)
	return nil
}

func deleteCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("delete", stderr)
	a := clientFlags(fs)
	purge := fs.Bool("purge", false, "also delete the function's KV")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: moongate delete NAME [--purge]")
	}
	path := functionPath(pos[0])
	if *purge {
		path += "?purge=1"
	}
	if err := a.do(ctx, http.MethodDelete, path, nil, nil); err != nil {
		return err
	}
	if *purge {
		fmt.Fprintf(stdout, "deleted %s and its KV\n", pos[0])
	} else {
		fmt.Fprintf(stdout, "deleted %s (its KV stays; --purge deletes it too)\n", pos[0])
	}
	return nil
}

func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	a := clientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var st struct {
		Version   string `json:"version"`
		GatewayID string `json:"gateway_id"`
		UptimeS   int64  `json:"uptime_s"`
		Broker    struct {
			State   string `json:"state"`
			Addr    string `json:"addr"`
			Clients int    `json:"clients"`
		} `json:"broker"`
		OutboxDepth int64  `json:"outbox_depth"`
		MemoryBytes uint64 `json:"memory_bytes"`
		Functions   int    `json:"functions"`
	}
	if err := a.do(ctx, http.MethodGet, "/api/v1/status", nil, &st); err != nil {
		return err
	}
	var sy struct {
		Sinks []struct {
			Name      string `json:"name"`
			Kind      string `json:"kind"`
			State     string `json:"state"`
			LagMS     int64  `json:"lag_ms"`
			Pending   int64  `json:"pending"`
			Delivered uint64 `json:"delivered"`
			Dropped   uint64 `json:"dropped"`
			LastError string `json:"last_error"`
		} `json:"sinks"`
	}
	if err := a.do(ctx, http.MethodGet, "/api/v1/sync", nil, &sy); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "gateway    %s (moongate %s), up %s\n", st.GatewayID, st.Version, time.Duration(st.UptimeS)*time.Second)
	fmt.Fprintf(stdout, "broker     %s %s, %s\n", st.Broker.State, st.Broker.Addr, count(st.Broker.Clients, "client"))
	fmt.Fprintf(stdout, "functions  %d\n", st.Functions)
	fmt.Fprintf(stdout, "outbox     %d pending\n", st.OutboxDepth)
	fmt.Fprintf(stdout, "memory     %.1f MiB\n", float64(st.MemoryBytes)/(1<<20))
	if len(sy.Sinks) > 0 {
		fmt.Fprintln(stdout)
		var rows [][]string
		for _, s := range sy.Sinks {
			rows = append(rows, []string{s.Name, s.Kind, s.State, fmt.Sprint(s.Pending), (time.Duration(s.LagMS) * time.Millisecond).String(),
				fmt.Sprint(s.Delivered), fmt.Sprint(s.Dropped), s.LastError})
		}
		table(stdout, []string{"SINK", "KIND", "STATE", "PENDING", "LAG", "DELIVERED", "DROPPED", "LAST ERROR"}, rows)
	}
	return nil
}
