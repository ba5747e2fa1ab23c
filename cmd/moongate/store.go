package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/moongate/moongate/gateway"
	"github.com/moongate/moongate/sync/store"
)

// storeCmd runs `moongate store check`: it verifies a stopped gateway's store and exits 1
// on damage, 0 when clean.
func storeCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "usage: moongate store check [-c moongate.yaml | -data DIR]"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		args = append([]string{"check"}, args...) // check is the only subcommand
	}
	if len(args) == 0 || args[0] != "check" {
		return usagef(use)
	}
	fs := newFlags("store check", stderr)
	var path string
	configFlag(fs, &path)
	data := fs.String("data", "", "the gateway's data dir (gateway.data_dir), instead of reading it from -c")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *data != "" && flagSet(fs, "c") {
		return usagef("-c and -data: give one")
	}
	cfg, err := loadConfig(path, flagSet(fs, "c"))
	if err != nil {
		return err
	}
	if *data != "" {
		cfg.Gateway.DataDir = *data
	}
	// Badger's own complaints (a value it could not read) go to stderr.
	opts := gateway.StoreOptions(cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	rep, err := store.Check(opts)
	fmt.Fprintf(stdout, "%s: %d tables (%d bytes) verified, %d keys read, %d outbox streams (%d records) checked against their index\n",
		opts.Dir, rep.Tables, rep.TableBytes, rep.Keys, rep.Streams, rep.Records)
	for _, p := range rep.Problems {
		fmt.Fprintln(stdout, "damaged:", p)
	}
	switch {
	case err != nil && len(rep.Problems) > 0:
		return fmt.Errorf("%w\nRestore the data dir from a copy, or move it aside to start with an empty store (see README, \"When the store is damaged\")", err)
	case err != nil:
		return err // a refusal of the open, which says what to do
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
