package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moongate/moongate/internal/specdoc"
)

// TestSpecListsEveryCommand keeps docs/SPEC.md §2 current: every command (and firmware
// and fleet subcommand) has a row there that names each of its flags, and the section lists no
// command or flag that does not exist.
func TestSpecListsEveryCommand(t *testing.T) {
	section, err := specdoc.Section(2)
	if err != nil {
		t.Fatal(err)
	}
	all, err := specdoc.Rows(section)
	if err != nil {
		t.Fatalf("SPEC §2: %v", err)
	}
	// Rows per command word: "moongate deploy NAME FILE.lua" and "moongate firmware
	// keygen PREFIX" are the rows of deploy and of firmware keygen.
	rows := map[string][][]string{}
	for name, cells := range all {
		words := strings.Fields(name)
		if len(words) < 2 || words[0] != "moongate" {
			continue // the trigger table
		}
		cmd := words[1]
		if hasSubcommands[cmd] && len(words) > 2 {
			cmd += " " + words[2]
		}
		rows[cmd] = append(rows[cmd], cells)
	}

	want := map[string][]string{} // command -> its flags
	for _, c := range commands() {
		if hasSubcommands[c.name] {
			for _, sub := range subcommands(t, c) {
				want[c.name+" "+sub] = commandFlags(t, command{name: c.name + " " + sub,
					run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
						return c.run(ctx, append([]string{sub}, args...), stdout, stderr)
					}})
			}
			continue
		}
		want[c.name] = commandFlags(t, c)
	}
	for cmd, flags := range want {
		cells := rows[cmd]
		if len(cells) == 0 {
			t.Errorf("SPEC §2 has no row for `moongate %s`", cmd)
			continue
		}
		documented := documentedFlags(cells)
		for _, f := range flags {
			if !slices.Contains(documented, f) {
				t.Errorf("SPEC §2: the row of `moongate %s` does not name its flag -%s", cmd, f)
			}
		}
		for _, f := range documented {
			if !slices.Contains(flags, f) {
				t.Errorf("SPEC §2: the row of `moongate %s` names -%s, which it does not have", cmd, f)
			}
		}
	}
	for cmd := range rows {
		if _, ok := want[cmd]; !ok {
			t.Errorf("SPEC §2 lists `moongate %s`, which does not exist (move it to \"Not built yet\")", cmd)
		}
	}
}

// commandFlags asks a command for its help and returns the flags it lists.
func commandFlags(t *testing.T, c command) []string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := c.run(context.Background(), []string{"-h"}, &stdout, &stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("moongate %s -h: %v", c.name, err)
	}
	var flags []string
	for _, m := range helpFlag.FindAllStringSubmatch(stderr.String(), -1) {
		flags = append(flags, m[1])
	}
	return flags
}

var helpFlag = regexp.MustCompile(`(?m)^  -(\S+)`)

// hasSubcommands are the commands whose rows are per subcommand.
var hasSubcommands = map[string]bool{"firmware": true, "fleet": true}

// subcommands reads a command's subcommands from its usage error.
func subcommands(t *testing.T, c command) []string {
	t.Helper()
	err := c.run(context.Background(), nil, &bytes.Buffer{}, &bytes.Buffer{})
	use, ok := strings.CutPrefix(err.Error(), "usage: moongate "+c.name+" ")
	if !ok {
		t.Fatalf("%s's usage changed: %v", c.name, err)
	}
	var subs []string
	for part := range strings.SplitSeq(use, "|") {
		subs = append(subs, strings.Fields(part)[0])
	}
	return subs
}

// documentedFlags are the flags a command's rows name in their flags cell: `-c FILE`,
// `--trigger SPEC`.
func documentedFlags(rows [][]string) []string {
	var flags []string
	for _, cells := range rows {
		if len(cells) < 2 {
			continue
		}
		for _, m := range docFlag.FindAllStringSubmatch(cells[1], -1) {
			if !slices.Contains(flags, m[1]) {
				flags = append(flags, m[1])
			}
		}
	}
	return flags
}

var docFlag = regexp.MustCompile("`--?([A-Za-z][A-Za-z-]*)")
