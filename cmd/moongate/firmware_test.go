package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFirmwareKeygenSignVerify(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append([]string{"firmware"}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}
	key := filepath.Join(dir, "fw")
	img := filepath.Join(dir, "app.bin")
	os.WriteFile(img, []byte("image bytes"), 0o644)
	if code, out := run("keygen", key); code != 0 {
		t.Fatalf("keygen: %d %s", code, out)
	}
	if fi, _ := os.Stat(key + ".key"); fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", fi.Mode())
	}
	if code, _ := run("keygen", key); code == 0 {
		t.Error("keygen overwrote an existing key")
	}
	if code, out := run("sign", key+".key", img, "esp32-env", "1.2.0"); code != exitUsage || !strings.Contains(out, "--counter is required") {
		t.Fatalf("sign without a counter: %d %s", code, out)
	}
	if code, out := run("sign", key+".key", img, "esp32-env", "1.2.0", "--counter", "3", "--expires", "1h"); code != 0 {
		t.Fatalf("sign: %d %s", code, out)
	}
	if code, out := run("verify", key+".pub", img, img+".manifest.json"); code != 0 || !strings.Contains(out, "signature ok") {
		t.Fatalf("verify: %d %s", code, out)
	}
	os.WriteFile(img, []byte("image bytez"), 0o644)
	if code, out := run("verify", key+".pub", img, img+".manifest.json"); code != exitFailure || !strings.Contains(out, "sha256 differs") {
		t.Fatalf("a tampered image: %d %s", code, out)
	}
}
