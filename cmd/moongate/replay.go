package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// replayCmd feeds a recording (moongate record) to a gateway through the invoke API, in
// the recorded order and, unless --speed max, with the recorded spacing.
func replayCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("replay", stderr)
	a := clientFlags(fs)
	function := fs.String("function", "", "replay only the events recorded for this function")
	speedFlag := fs.String("speed", "1x", "how fast: 1x the recorded spacing, 10x ten times faster, max no waits")
	dryRun := fs.Bool("dry-run", false, "invoke with dry_run=1: the functions run, nothing they do is applied")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: moongate replay events.jsonl [--function NAME] [--speed 10x|max] [--dry-run]")
	}
	speed, err := parseSpeed(*speedFlag)
	if err != nil {
		return usagef("--speed %q: %v", *speedFlag, err)
	}
	records, err := readRecords(pos[0], *function)
	if err != nil {
		return err
	}
	failed := 0
	start := time.Now()
	for i, r := range records {
		if speed > 0 && i > 0 {
			// The spacing from the first event, not the last: waits do not add up drift.
			due := start.Add(time.Duration(float64(time.Duration(r.TS-records[0].TS)*time.Millisecond) / speed))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(due)):
			}
		}
		ev := r.Event
		ev.ID = "" // the gateway numbers the replayed run, so the live stream tells it from the original
		path := functionPath(r.Function, "invoke")
		if *dryRun {
			path += "?dry_run=1"
		}
		var res struct {
			Result json.RawMessage `json:"result"`
			Error  string          `json:"error"`
		}
		if err := a.do(ctx, http.MethodPost, path, ev, &res); err != nil {
			return fmt.Errorf("event %d (%s): %w", i+1, r.Function, err)
		}
		what := ev.Topic
		if ev.Pin != "" {
			what = "gpio/" + ev.Pin
		} else if ev.Sensor != "" {
			what = "sensor/" + ev.Sensor
		}
		if res.Error != "" {
			failed++
			fmt.Fprintf(stdout, "%d %s %s ERROR %s\n", i+1, r.Function, what, res.Error)
		} else {
			fmt.Fprintf(stdout, "%d %s %s ok %s\n", i+1, r.Function, what, res.Result)
		}
	}
	mode := ""
	if *dryRun {
		mode = " (dry run: nothing was applied)"
	}
	fmt.Fprintf(stdout, "replayed %s, %d failed%s\n", count(len(records), "event"), failed, mode)
	if failed > 0 {
		return errors.New(count(failed, "invocation") + " failed")
	}
	return nil
}
