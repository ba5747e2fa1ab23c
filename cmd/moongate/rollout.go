package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moongate/moongate/firmware"
)

const rolloutUse = "usage: moongate firmware rollout create --type T --to VERSION [--from RANGE] [--canary N] [--waves 10%,50%,100%] [--max-failures K|P%] [--device-timeout D] | status [ID] | pause ID | resume ID | abort ID"

// firmwareRollout drives a gateway's rollouts (/api/v1/firmware/rollouts).
func firmwareRollout(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("%s", rolloutUse)
	}
	switch args[0] {
	case "create":
		return rolloutCreate(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help":
		return rolloutCreate(ctx, args, stdout, stderr) // its flags include every other subcommand's
	}
	fs := newFlags("firmware rollout "+args[0], stderr)
	a := clientFlags(fs)
	pos, err := splitArgs(fs, args[1:])
	if err != nil {
		return err
	}
	switch {
	case args[0] == "status" && len(pos) == 0:
		var out struct {
			Rollouts []firmware.Rollout `json:"rollouts"`
		}
		if err := a.do(ctx, http.MethodGet, "/api/v1/firmware/rollouts", nil, &out); err != nil {
			return err
		}
		rows := [][]string{}
		for _, r := range out.Rollouts {
			rows = append(rows, []string{r.ID, r.Type, r.Version, r.State, r.WaveName(r.Wave), progress(r), r.Reason})
		}
		table(stdout, []string{"ID", "TYPE", "VERSION", "STATE", "WAVE", "DEVICES", "REASON"}, rows)
		return nil
	case len(pos) != 1:
		return usagef("%s", rolloutUse)
	}
	var r firmware.Rollout
	switch args[0] {
	case "status":
		err = a.do(ctx, http.MethodGet, "/api/v1/firmware/rollouts/"+url.PathEscape(pos[0]), nil, &r)
	case "pause", "resume", "abort":
		err = a.do(ctx, http.MethodPost, "/api/v1/firmware/rollouts/"+url.PathEscape(pos[0])+"/"+args[0], nil, &r)
	default:
		return usagef("%s", rolloutUse)
	}
	if err != nil {
		return err
	}
	printRollout(stdout, r)
	return nil
}

func rolloutCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("firmware rollout create", stderr)
	a := clientFlags(fs)
	typ := fs.String("type", "", "the device type (required)")
	to := fs.String("to", "", "the version name, or the counter, of a published image of the type (required)")
	from := fs.String("from", "*", "the counters the devices run to take in: *, N, A-B or <N")
	canary := fs.Int("canary", 0, "devices updated first, alone: any failure among them halts the rollout")
	waves := fs.String("waves", "100%", "each wave's cumulative share of the other devices; a wave opens once the one before is all healthy or failed")
	maxFailures := fs.String("max-failures", "0", "failures the rollout takes before it halts: a count (2) or a share of its devices (10%)")
	timeout := fs.Duration("device-timeout", firmware.DefaultDeviceTimeout, "how long a device of an open wave has to end healthy or failed before it counts as failed")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *typ == "" || *to == "" {
		return usagef("--type and --to are required\n%s", rolloutUse)
	}
	if *timeout < time.Second {
		return usagef("--device-timeout must be at least 1s")
	}
	plan := firmware.RolloutPlan{Type: *typ, To: *to, Canary: *canary, DeviceTimeout: int64(timeout.Seconds())}
	var err error
	if plan.Waves, err = firmware.ParseWaves(*waves); err != nil {
		return usagef("--waves: %v", err)
	}
	if plan.MaxFailures, err = firmware.ParseThreshold(*maxFailures); err != nil {
		return usagef("--max-failures: %v", err)
	}
	rng, err := firmware.ParseRange(*from)
	if err != nil {
		return usagef("--from: %v", err)
	}
	plan.From = &rng
	var r firmware.Rollout
	if err := a.do(ctx, http.MethodPost, "/api/v1/firmware/rollouts", plan, &r); err != nil {
		return err
	}
	printRollout(stdout, r)
	return nil
}

// progress is "healthy/failed/all".
func progress(r firmware.Rollout) string {
	healthy, failed := 0, 0
	for _, d := range r.Devices {
		switch d.Status {
		case firmware.StatusHealthy:
			healthy++
		case firmware.StatusFailed:
			failed++
		}
	}
	return fmt.Sprintf("%d healthy, %d failed of %d", healthy, failed, len(r.Devices))
}

func printRollout(w io.Writer, r firmware.Rollout) {
	fmt.Fprintf(w, "rollout %s: %s %s (counter %d) to devices on counters %s\n", r.ID, r.Type, r.Version, r.Counter, r.From)
	fmt.Fprintf(w, "state %s, wave %s, %s, max failures %s, device timeout %s, updated %s\n", r.State, r.WaveName(r.Wave),
		progress(r), r.MaxFailures, time.Duration(r.DeviceTimeout)*time.Second, r.Updated.Format(time.RFC3339))
	if r.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", r.Reason)
	}
	ids := make([]string, 0, len(r.Devices))
	for id := range r.Devices {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		if c := r.Devices[a].Wave - r.Devices[b].Wave; c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	rows := [][]string{}
	for _, id := range ids {
		d := r.Devices[id]
		rows = append(rows, []string{id, r.WaveName(d.Wave) + " (" + strconv.Itoa(d.Wave) + ")", d.Status, d.Error})
	}
	table(w, []string{"DEVICE", "WAVE", "STATUS", "ERROR"}, rows)
}
