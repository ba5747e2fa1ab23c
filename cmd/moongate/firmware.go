package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/moongate/moongate/firmware"
)

// firmwareCmd signs and checks firmware images offline, and publishes them to a gateway,
// which offers them to the devices (firmware/PROTOCOL.md).
func firmwareCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "usage: moongate firmware keygen PREFIX | sign KEY IMAGE TYPE VERSION --counter N [--expires T] [--health-window D] | verify PUBKEY IMAGE MANIFEST | publish IMAGE MANIFEST | list | rollout ..."
	if len(args) == 0 {
		return usagef(use)
	}
	switch args[0] {
	case "keygen":
		pos, err := splitArgs(newFlags("firmware keygen", stderr), args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef(use)
		}
		args = append(args[:1], pos...)
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
		fs := newFlags("firmware sign", stderr)
		counter := fs.Uint64("counter", 0, "the version counter (required, at least 1): a gateway offers the image only to devices that run a lower one")
		expires := fs.String("expires", "2160h", "when no gateway may offer the image any more: a time (2027-06-01T00:00:00Z) or a duration from now (720h)")
		window := fs.Duration("health-window", firmware.DefaultHealthWindow, "how long a device has to report healthy after applying the image, whole seconds: past it the gateway counts the attempt as failed")
		pos, err := splitArgs(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 4 {
			return usagef(use)
		}
		if *window < time.Second {
			return usagef("--health-window must be at least 1s")
		}
		if *counter == 0 {
			return usagef("--counter is required: the image's version counter, higher than every earlier image of %s", pos[2])
		}
		until, err := parseExpiry(*expires, time.Now())
		if err != nil {
			return usagef("--expires: %v", err)
		}
		key, image, err := readTwo(pos[0], pos[1])
		if err != nil {
			return err
		}
		m, err := firmware.Sign(image, firmware.Signing{Type: pos[2], Version: pos[3], Counter: *counter, Expires: until,
			HealthWindow: *window}, string(key))
		if err != nil {
			return usagef("%v", err)
		}
		args = append(args[:1], pos...)
		b, _ := json.MarshalIndent(m, "", "  ")
		if err := writeNew(args[2]+".manifest.json", string(b)+"\n", 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "signed %s as %s %s (counter %d, expires %s, health window %s): %s.manifest.json\n", args[2], args[3], args[4],
			m.Counter, m.Expires.Format(time.RFC3339), m.Window(), args[2])
	case "verify":
		pos, err := splitArgs(newFlags("firmware verify", stderr), args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 3 {
			return usagef(use)
		}
		args = append(args[:1], pos...)
		key, image, err := readTwo(args[1], args[2])
		if err != nil {
			return err
		}
		b, err := os.ReadFile(args[3])
		if err != nil {
			return usagef("read %s: %v", args[3], err)
		}
		m, err := firmware.ParseManifest(b)
		if err != nil {
			return fmt.Errorf("%s: %w", args[3], err)
		}
		if err := firmware.Verify(image, m, string(key), time.Now()); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: signature ok (%s %s, counter %d, expires %s)\n", args[2], m.Type, m.Version, m.Counter,
			m.Expires.Format(time.RFC3339))
	case "publish":
		return firmwarePublish(ctx, args[1:], stdout, stderr)
	case "rollout":
		return firmwareRollout(ctx, args[1:], stdout, stderr)
	case "list":
		return firmwareList(ctx, args[1:], stdout, stderr)
	default:
		return usagef(use)
	}
	return nil
}

// parseExpiry reads --expires: an RFC 3339 time, or a duration from now.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%s is not in the future", s)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a time (2027-06-01T00:00:00Z) nor a duration (720h)", s)
	}
	return t, nil
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

// firmwarePublish sends an image and its manifest to a gateway (POST /api/v1/firmware,
// multipart/mixed: the manifest first, so the gateway can refuse before reading the image),
// streamed from the file.
func firmwarePublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("firmware publish", stderr)
	a := clientFlags(fs)
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("usage: moongate firmware publish IMAGE MANIFEST [--api URL] [--token T]")
	}
	var got firmware.Manifest
	if err := uploadImage(ctx, a, "/api/v1/firmware", pos[0], pos[1], &got); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "published %s %s (counter %d, %d bytes, expires %s)\n", got.Type, got.Version, got.Counter, got.Size,
		got.Expires.Format(time.RFC3339))
	return nil
}

// uploadImage posts an image and its manifest to path, as multipart/mixed with the parts
// manifest, then image (POST /api/v1/firmware and /api/v1/self-update), and decodes the
// answer into out.
func uploadImage(ctx context.Context, a *api, path, imagePath, manifestPath string, out any) error {
	manifest, err := os.ReadFile(manifestPath)
	if err != nil {
		return usagef("read %s: %v", manifestPath, err)
	}
	img, err := os.Open(imagePath)
	if err != nil {
		return usagef("read %s: %v", imagePath, err)
	}
	defer img.Close()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	// multipart/mixed, not form-data: the gateway takes no body a web page could send it
	// across origins without a preflight.
	contentType := "multipart/mixed; boundary=" + mw.Boundary()
	go func() { // ends when the request has read it all, or failed and closed pr
		pw.CloseWithError(writeFirmwareParts(mw, manifest, img))
	}()
	a.http.Timeout = 0 // an image may take long on a slow link; ctx still ends it
	if err := a.send(ctx, http.MethodPost, path, contentType, pr, out); err != nil {
		pr.CloseWithError(err)
		return err
	}
	return nil
}

func writeFirmwareParts(mw *multipart.Writer, manifest []byte, img io.Reader) error {
	w, err := mw.CreateFormField("manifest")
	if err != nil {
		return err
	}
	if _, err := w.Write(manifest); err != nil {
		return err
	}
	w, err = mw.CreateFormFile("image", "image.bin")
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, img); err != nil {
		return err
	}
	return mw.Close()
}

// firmwareList prints the images a gateway stores (GET /api/v1/firmware).
func firmwareList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("firmware list", stderr)
	a := clientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var out struct {
		Images     []firmware.Manifest `json:"images"`
		Used       int64               `json:"used_bytes"`
		StoreQuota int64               `json:"quota_bytes"`
	}
	if err := a.do(ctx, http.MethodGet, "/api/v1/firmware", nil, &out); err != nil {
		return err
	}
	rows := [][]string{}
	for _, m := range out.Images {
		rows = append(rows, []string{m.Type, m.Version, strconv.FormatUint(m.Counter, 10), strconv.FormatInt(m.Size, 10),
			m.Expires.Format(time.RFC3339), m.SHA256[:16]})
	}
	table(stdout, []string{"TYPE", "VERSION", "COUNTER", "BYTES", "EXPIRES", "SHA256"}, rows)
	fmt.Fprintf(stdout, "%d of %d bytes used\n", out.Used, out.StoreQuota)
	return nil
}
