package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/moongate/moongate/gateway"
	"github.com/moongate/moongate/gateway/fntest"
)

// errTestsFailed makes `moongate test` exit 1 without another message: the cases said it.
var errTestsFailed = errors.New("tests failed")

// testCmd runs function tests offline (gateway/fntest): PATH... are test files
// (NAME_test.yaml) or directories searched for them, default the current one.
func testCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("test", stderr)
	cfgPath := flags.String("c", "", "the gateway's config: run each function with its entry's env and limits, and check that every test event reaches it through its triggers")
	run := flags.String("run", "", "run only the cases whose FILE/CASE matches this regular expression")
	verbose := flags.Bool("v", false, "print every case and the function's log lines")
	asJSON := flags.Bool("json", false, "print one JSON object per case")
	watch := flags.Bool("watch", false, "run again whenever a test or a .lua file changes")
	snapshot := flags.String("snapshot", "", "events.jsonl (moongate record): print a test file with a case per event, expecting what the function does with it today; needs -c")
	function := flags.String("function", "", "with --snapshot: the function whose events to take (needed when the recording has several)")
	paths, err := splitArgs(flags, args)
	if err != nil {
		return err
	}
	if *snapshot != "" {
		if *cfgPath == "" || len(paths) > 0 || *watch {
			return usagef("usage: moongate test --snapshot events.jsonl -c moongate.yaml [--function NAME] > NAME_test.yaml")
		}
		return snapshotCmd(*snapshot, *cfgPath, *function, stdout)
	}
	if *function != "" {
		return usagef("--function goes with --snapshot")
	}
	if len(paths) == 0 {
		paths = []string{"."}
	}
	var filter *regexp.Regexp
	if *run != "" {
		if filter, err = regexp.Compile(*run); err != nil {
			return usagef("-run: %v", err)
		}
	}
	r := &fntest.Runner{}
	if *cfgPath != "" {
		if r.Config, err = gateway.Load(*cfgPath); err != nil {
			return usageError{err}
		}
	}
	once := func() error {
		files, err := testFiles(paths)
		if err != nil {
			return err
		}
		return runTests(r, files, filter, *verbose, *asJSON, stdout)
	}
	if !*watch {
		return once()
	}
	for last := ""; ; {
		if stamp := tree(paths); stamp != last {
			last = stamp
			if err := once(); err != nil && !errors.Is(err, errTestsFailed) {
				fmt.Fprintln(stdout, err)
			}
			fmt.Fprintln(stdout, "-- watching for changes (Ctrl-C stops)")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func runTests(r *fntest.Runner, files []string, filter *regexp.Regexp, verbose, asJSON bool, stdout io.Writer) error {
	if len(files) == 0 {
		return usagef("no test files (NAME_test.yaml) found")
	}
	passed, failed := 0, 0
	start := time.Now()
	enc := json.NewEncoder(stdout)
	for _, path := range files {
		f, err := fntest.Load(path)
		if err != nil {
			return usageError{err}
		}
		results, err := r.Run(f)
		if err != nil {
			return usageError{err}
		}
		for _, res := range results {
			if filter != nil && !filter.MatchString(path+"/"+res.Case) {
				continue
			}
			if res.OK {
				passed++
			} else {
				failed++
			}
			switch {
			case asJSON:
				enc.Encode(res)
			case !res.OK:
				fmt.Fprintf(stdout, "FAIL %s: %s\n", path, res.Case)
				for _, d := range res.Diffs {
					fmt.Fprintf(stdout, "    %s\n", d)
				}
				printLogs(stdout, res.Logs)
			case verbose:
				fmt.Fprintf(stdout, "ok   %s: %s (%s)\n", path, res.Case, res.Duration.Round(time.Microsecond))
				printLogs(stdout, res.Logs)
			}
		}
	}
	if !asJSON {
		verdict := "ok"
		if failed > 0 {
			verdict = "FAIL"
		}
		fmt.Fprintf(stdout, "%s: %d passed, %d failed, %s in %s\n", verdict, passed, failed,
			count(len(files), "file"), time.Since(start).Round(time.Millisecond))
	}
	if failed > 0 {
		return errTestsFailed
	}
	return nil
}

func printLogs(w io.Writer, logs []string) {
	for _, l := range logs {
		fmt.Fprintf(w, "    | %s\n", l)
	}
}

// testFiles lists the test files named or under the directories named, sorted.
func testFiles(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, usagef("%v", err)
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && path != p && (strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "moongate-data")) {
				return filepath.SkipDir
			}
			if !d.IsDir() && strings.HasSuffix(path, "_test.yaml") {
				out = append(out, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// tree is a stamp of the test and .lua files under paths: it changes when one does.
func tree(paths []string) string {
	var b strings.Builder
	for _, p := range paths {
		filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".lua")) {
				if info, err := d.Info(); err == nil {
					fmt.Fprintf(&b, "%s %d %d\n", path, info.Size(), info.ModTime().UnixNano())
				}
			}
			return nil
		})
	}
	return b.String()
}

// snapshotCmd prints a test file made of recorded events (fntest.Snapshot).
func snapshotCmd(path, cfgPath, function string, stdout io.Writer) error {
	cfg, err := gateway.Load(cfgPath)
	if err != nil {
		return usageError{err}
	}
	records, err := readRecords(path, function)
	if err != nil {
		return err
	}
	if function == "" {
		for _, r := range records {
			if function != "" && r.Function != function {
				return usagef("%s has events of %s and %s: pick one with --function", path, function, r.Function)
			}
			function = r.Function
		}
	}
	if len(records) == 0 {
		return usagef("%s has no events of %s", path, cmp.Or(function, "any function"))
	}
	for _, f := range cfg.Functions {
		if f.Name == function {
			out, err := fntest.Snapshot(cfg, f, records)
			if err != nil {
				return fmt.Errorf("snapshot of %s: %w", function, err)
			}
			_, err = stdout.Write(out)
			return err
		}
	}
	return usagef("%s has no function %s", cfgPath, function)
}
