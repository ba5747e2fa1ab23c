// Package specdoc reads docs/SPEC.md for the tests that keep it current: each package
// that owns part of the contract (the CLI, the API routes, the config keys) checks that
// its section names everything the code has, and nothing it does not.
package specdoc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Section returns the text of section n of docs/SPEC.md ("## n. Title" up to the next
// "## "), found from the working directory upwards, as go test runs in a package's folder.
func Section(n int) (string, error) {
	path, err := find()
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the spec: %w", err)
	}
	head := fmt.Sprintf("## %d. ", n)
	var out []string
	in := false
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.HasPrefix(line, head)
		}
		if in {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return "", fmt.Errorf("%s has no section %q", path, head)
	}
	return strings.Join(out, "\n"), nil
}

func find() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "docs", "SPEC.md"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Rows returns the cells of every table row in text whose first cell starts with a
// backquoted name, keyed by that name (the text between the first pair of backquotes):
// "| `moongate run` | `-c FILE` | ..." gives "moongate run" -> its cells. A name listed
// twice is an error, so that a stale copy cannot hide behind a current one.
func Rows(text string) (map[string][]string, error) {
	rows := map[string][]string{}
	for line := range strings.SplitSeq(text, "\n") {
		m := firstCell.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if _, dup := rows[m[1]]; dup {
			return nil, fmt.Errorf("%q is listed twice", m[1])
		}
		rows[m[1]] = splitCells(line)
	}
	return rows, nil
}

var firstCell = regexp.MustCompile("^\\| `([^`]+)`")

// splitCells splits a Markdown table row at the pipes that are not escaped (\|).
func splitCells(line string) []string {
	line = strings.Trim(strings.TrimSpace(line), "|")
	var cells []string
	var cell strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cell.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}
