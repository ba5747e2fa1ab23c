package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/moongate/moongate/firmware"
)

// firmwareCmd signs and checks firmware images offline; publishing and rollouts come with
// the over-the-air rollout.
func firmwareCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "usage: moongate firmware keygen PREFIX | sign KEY IMAGE TYPE VERSION | verify PUBKEY IMAGE MANIFEST"
	if len(args) == 0 {
		return usagef(use)
	}
	switch args[0] {
	case "keygen":
		if len(args) != 2 {
			return usagef(use)
		}
		pub, priv, err := firmware.Keygen()
		if err != nil {
			return err
		}
		if err := writeNew(args[1]+".key", priv+"\n", 0o600); err != nil {
			return err
		}
		if err := writeNew(args[1]+".pub", pub+"\n", 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s.key (keep it on the build machine) and %s.pub (for the gateways)\n", args[1], args[1])
	case "sign":
		if len(args) != 5 {
			return usagef(use)
		}
		key, image, err := readTwo(args[1], args[2])
		if err != nil {
			return err
		}
		m, err := firmware.Sign(image, args[3], args[4], string(key))
		if err != nil {
			return err
		}
		b, _ := json.MarshalIndent(m, "", "  ")
		if err := writeNew(args[2]+".manifest.json", string(b)+"\n", 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "signed %s as %s %s: %s.manifest.json\n", args[2], args[3], args[4], args[2])
	case "verify":
		if len(args) != 4 {
			return usagef(use)
		}
		key, image, err := readTwo(args[1], args[2])
		if err != nil {
			return err
		}
		var m firmware.Manifest
		b, err := os.ReadFile(args[3])
		if err != nil {
			return usagef("read %s: %v", args[3], err)
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return usagef("%s: %v", args[3], err)
		}
		if err := firmware.Verify(image, m, string(key)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: signature ok (%s %s)\n", args[2], m.Type, m.Version)
	default:
		return usagef(use)
	}
	return nil
}

func readTwo(a, b string) ([]byte, []byte, error) {
	x, err := os.ReadFile(a)
	if err != nil {
		return nil, nil, usagef("read %s: %v", a, err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		return nil, nil, usagef("read %s: %v", b, err)
	}
	return x, y, nil
}

// writeNew refuses to overwrite: losing a signing key is not recoverable.
func writeNew(path, data string, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
