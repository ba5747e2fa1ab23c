package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit codes (SPEC §2).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a bad command line or a bad config: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

type command struct {
	name, args, help string
	run              func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "[-c moongate.yaml] [--allow-missing-hardware]", "start the gateway", runCmd},
		{"check", "[-c moongate.yaml]", "validate the config and the functions, then exit", checkCmd},
		{"test", "[PATH...] [-c moongate.yaml] [-run RE] [-v] [-json] [--watch] [--snapshot events.jsonl [--function NAME]]", "run function tests (NAME_test.yaml) offline", testCmd},
		{"deploy", "NAME FILE.lua [--trigger SPEC|none]... [--timeout D] [--memory SIZE] [--test FILE_test.yaml]...", "deploy a function (a new version)", deployCmd},
		{"invoke", "NAME [--event JSON] [--dry-run]", "run a function once with a test event", invokeCmd},
		{"functions", "", "list functions, versions, triggers, counters", functionsCmd},
		{"rollback", "NAME [VERSION]", "deploy an earlier version again", rollbackCmd},
		{"delete", "NAME [--purge]", "delete a function (its KV stays unless --purge)", deleteCmd},
		{"logs", "[-f] [NAME]", "stream invocations and logs", logsCmd},
		{"record", "[-f NAME] [--duration D] > events.jsonl", "save the live events that reach the functions", recordCmd},
		{"replay", "events.jsonl [--function NAME] [--speed 10x|max] [--dry-run]", "feed recorded events to a gateway", replayCmd},
		{"status", "", "uptime, broker, sinks, outbox depth, memory", statusCmd},
		{"store", "check [-c moongate.yaml | -data DIR]", "verify a stopped gateway's store (exit 1 on damage)", storeCmd},
		{"init", "[-o moongate.yaml] [--force] [--data DIR]", "write a starter config for this machine (its Pi, I2C sensors, a console token)", initCmd},
		{"passwd", "[-D] FILE USER", "add a device to the embedded broker's password file, or remove it", passwdCmd},
		{"firmware", "keygen|sign|verify|publish|list ...", "sign firmware images, check them, publish them to a gateway", firmwareCmd},
		{"self-update", "IMAGE MANIFEST", "install a signed moongate binary on the gateway; rolled back unless it comes up healthy", selfUpdateCmd},
		{"fleet", "keygen|sign|push|status ...", "sign deployment documents, push them to the fleet's broker, show the fleet", fleetCmd},
		{"version", "", "print the version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
			fmt.Fprintln(stdout, "moongate", version)
			return nil
		}},
	}
}

// Main runs one moongate command and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		var ue usageError
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "moongate %s: %v\n", c.name, err)
			return exitUsage
		case errors.Is(err, errTestsFailed): // the failing cases said it
			return exitFailure
		default:
			fmt.Fprintf(stderr, "moongate %s: %v\n", c.name, err)
			return exitFailure
		}
	}
	fmt.Fprintf(stderr, "moongate: unknown command %q\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Moongate: serverless Lua functions at the edge.\n\nUsage:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  moongate %-11s %-38s %s\n", c.name, c.args, c.help)
	}
}

// newFlags makes a command's flag set; errors go to stderr and are returned, not fatal.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("moongate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses and turns a flag error into a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}
