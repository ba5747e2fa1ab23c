// The packages, installed for real: `make package` builds them; this test builds them
// again into a temporary directory, installs the amd64 .deb with dpkg into a Debian root
// of its own (debootstrap, cached), upgrades it over an edited config, runs the installed
// binary as the unit would, verifies the unit with systemd-analyze, and runs the ARM
// packages' binaries under qemu through MQTT. It needs root (dpkg and chroot) and is run
// by `make test` as root; elsewhere: `sudo go test ./packaging`.
package packaging_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moongate/moongate/internal/loopback"
	"github.com/moongate/moongate/internal/poll"
)

const (
	oldVersion = "1.0.0~test1"
	newVersion = "1.0.0~test2"
)

func TestPackages(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installs the package with dpkg into a chroot: run as root (sudo go test ./packaging); make test runs it as root in CI")
	}
	for _, tool := range []string{"debootstrap", "dpkg-deb", "systemd-analyze", "qemu-arm", "qemu-aarch64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (.ci/run installs it): %v", tool, err)
		}
	}
	dist, newer := t.TempDir(), t.TempDir()
	build(t, oldVersion, dist, "amd64", "arm64", "armhf")
	build(t, newVersion, newer, "amd64")
	host := filepath.Join(dist, "build", "moongate-host")

	t.Run("signed", func(t *testing.T) {
		run(t, dist, "sha256sum", "-c", "SHA256SUMS")
		for _, a := range []string{"moongate_" + oldVersion + "_armhf.deb", "moongate-" + oldVersion + "-linux-arm64.tar.gz", "SHA256SUMS"} {
			run(t, dist, host, "firmware", "verify", "dev-signing.pub", a, a+".manifest.json")
		}
	})

	root := debianRoot(t)
	deb := func(dir, version string) string { return filepath.Join(dir, "moongate_"+version+"_amd64.deb") }
	install := func(path string) {
		t.Helper()
		if err := copyFile(path, filepath.Join(root, "tmp", filepath.Base(path))); err != nil {
			t.Fatal(err)
		}
		run(t, "", "chroot", root, "dpkg", "-i", "/tmp/"+filepath.Base(path))
	}
	install(deb(dist, oldVersion))

	t.Run("files", func(t *testing.T) {
		uid, groups := account(t, root, "moongate")
		for _, g := range []string{"gpio", "i2c"} {
			if !groups[g] {
				t.Errorf("the moongate user is not in group %s", g)
			}
		}
		for _, f := range []struct {
			path string
			mode os.FileMode
			uid  int
		}{
			// Owned by moongate, for self-update (postinst).
			{"usr/lib/moongate", 0o755 | os.ModeDir, uid},
			{"usr/lib/moongate/moongate", 0o755, uid},
			{"usr/lib/systemd/system/moongate.service", 0o644, 0},
			{"etc/moongate/moongate.yaml", 0o644, 0},
			{"var/lib/moongate", 0o750 | os.ModeDir, uid},
		} {
			fi, err := os.Stat(filepath.Join(root, f.path))
			if err != nil {
				t.Errorf("/%s: %v", f.path, err)
				continue
			}
			if fi.Mode() != f.mode || int(fi.Sys().(*syscall.Stat_t).Uid) != f.uid {
				t.Errorf("/%s: mode %v uid %d, want %v uid %d", f.path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, f.mode, f.uid)
			}
		}
		if link, err := os.Readlink(filepath.Join(root, "usr/bin/moongate")); err != nil || link != "/usr/lib/moongate/moongate" {
			t.Errorf("/usr/bin/moongate: a link to %q (%v), want /usr/lib/moongate/moongate", link, err)
		}
		if conf := output(t, "chroot", root, "dpkg-query", "-W", "-f=${Conffiles}", "moongate"); !strings.Contains(conf, "/etc/moongate/moongate.yaml") {
			t.Errorf("the config is not a conffile: %q", conf)
		}
	})

	// The user's edit (other ports, a note) survives the upgrade.
	cfgPath := filepath.Join(root, "etc/moongate/moongate.yaml")
	apiPort, mqttPort := loopback.FreePort(t), loopback.FreePort(t)
	edit := func(b []byte) []byte {
		s := strings.Replace(string(b), "listen: 0.0.0.0:8080", fmt.Sprintf("listen: 127.0.0.1:%d", apiPort), 1)
		s = strings.Replace(s, "listen: 127.0.0.1:1883", fmt.Sprintf("listen: 127.0.0.1:%d", mqttPort), 1)
		return []byte(s + "# edited by the test\n")
	}
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	edited := edit(orig)
	if err := os.WriteFile(cfgPath, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	install(deb(newer, newVersion))
	t.Run("upgrade keeps the config", func(t *testing.T) {
		if v := output(t, "chroot", root, "dpkg-query", "-W", "-f=${Version}", "moongate"); v != newVersion {
			t.Errorf("installed version %q, want %q", v, newVersion)
		}
		if got, _ := os.ReadFile(cfgPath); !bytes.Equal(got, edited) {
			t.Errorf("the upgrade changed the edited config:\n%s", got)
		}
	})

	t.Run("runs as the unit says", func(t *testing.T) {
		unit := unitKeys(t, filepath.Join(root, "usr/lib/systemd/system/moongate.service"))
		if unit["User"] != "moongate" || unit["Type"] != "notify" {
			t.Fatalf("the unit runs as %q with Type=%q, want moongate and notify", unit["User"], unit["Type"])
		}
		// The gateway trusts a firmware key, for the self-update below.
		run(t, "", "chroot", root, "/usr/bin/moongate", "firmware", "keygen", "/etc/moongate/fw")
		f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "firmware:\n  keys: [/etc/moongate/fw.pub]\n")
		f.Close()
		gw := start(t, exec.Command("chroot", "--userspec="+unit["User"]+":"+unit["Group"], root,
			"/bin/sh", "-c", "cd "+unit["WorkingDirectory"]+" && exec "+unit["ExecStart"]))
		tokenFile := filepath.Join(root, "var/lib/moongate/console.token")
		status := func() map[string]any {
			tok, err := os.ReadFile(tokenFile)
			if err != nil {
				return nil
			}
			req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/api/v1/status", apiPort), nil)
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil
			}
			defer resp.Body.Close()
			var st map[string]any
			if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
				return nil
			}
			return st
		}
		poll.Within(t, 30*time.Second, "the installed gateway's console", func() bool { return status() != nil })
		if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm() != 0o600 || int(fi.Sys().(*syscall.Stat_t).Uid) == 0 {
			t.Errorf("console token: %v %v, want mode 0600 owned by moongate", fi.Mode(), err)
		}

		// moongate self-update under the unit's user and paths: a new build, signed,
		// replaces the packaged binary in /usr/lib/moongate, the old one kept beside it.
		newBin := filepath.Join(root, "tmp/moongate-new")
		run(t, "..", "go", "build", "-trimpath", "-ldflags", "-X main.version=selfupdated", "-o", newBin, "./cmd/moongate")
		run(t, "", "chroot", root, "/usr/bin/moongate", "firmware", "sign", "/etc/moongate/fw.key", "/tmp/moongate-new",
			"moongate-linux-amd64", "2.0.0", "--counter", "1")
		tok, _ := os.ReadFile(tokenFile)
		out, err := exec.Command("chroot", root, "/usr/bin/moongate", "self-update", "/tmp/moongate-new", "/tmp/moongate-new.manifest.json",
			"--api", fmt.Sprintf("http://127.0.0.1:%d", apiPort), "--token", strings.TrimSpace(string(tok))).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "updated to 2.0.0") {
			t.Fatalf("self-update of the packaged gateway: %v\n%s", err, out)
		}
		poll.Within(t, 30*time.Second, "the packaged gateway on the new binary", func() bool {
			st := status()
			return st != nil && st["version"] == "selfupdated"
		})
		for _, f := range []string{"usr/lib/moongate/moongate", "usr/lib/moongate/moongate.prev"} {
			if _, err := os.Stat(filepath.Join(root, f)); err != nil {
				t.Errorf("after the self-update: %v", err)
			}
		}
		if got, want := fileSum(t, filepath.Join(root, "usr/lib/moongate/moongate")), fileSum(t, newBin); got != want {
			t.Errorf("/usr/lib/moongate/moongate is not the new binary")
		}
		gw.stop(t)
	})

	t.Run("systemd-analyze verify", func(t *testing.T) {
		// A root holding the system's units, the installed unit and what it runs.
		vroot := t.TempDir()
		for _, f := range []struct{ from, to string }{
			{"/usr/lib/systemd/system", "usr/lib/systemd"},
			{filepath.Join(root, "usr/lib/systemd/system/moongate.service"), "etc/systemd/system"},
			{filepath.Join(root, "usr/lib/moongate/moongate"), "usr/lib/moongate"},
			{"/bin/kill", "bin"},
		} {
			if err := os.MkdirAll(filepath.Join(vroot, f.to), 0o755); err != nil {
				t.Fatal(err)
			}
			run(t, "", "cp", "-a", f.from, filepath.Join(vroot, f.to)+"/")
		}
		if err := os.Mkdir(filepath.Join(vroot, "tmp"), 0o1777); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("systemd-analyze", "verify", "--root="+vroot, "/etc/systemd/system/moongate.service")
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})

	for _, arm := range []struct{ arch, qemu string }{{"armhf", "qemu-arm"}, {"arm64", "qemu-aarch64"}} {
		t.Run("the "+arm.arch+" package end to end", func(t *testing.T) {
			dir := t.TempDir()
			run(t, "", "dpkg-deb", "-x", filepath.Join(dist, "moongate_"+oldVersion+"_"+arm.arch+".deb"), dir)
			endToEnd(t, arm.qemu, filepath.Join(dir, "usr/lib/moongate/moongate"))
		})
	}
}

// build runs packaging/build.sh VERSION DIST ARCHES.
func build(t *testing.T, version, dist string, arches ...string) {
	t.Helper()
	args := append([]string{version, dist}, arches...)
	cmd := exec.Command("./build.sh", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// debianRoot is a fresh copy of a minimal Debian bookworm root, made by debootstrap
// once and kept in the user's cache directory.
func debianRoot(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(cache, "moongate", "debian-bookworm-minbase.tar.gz")
	if _, err := os.Stat(tarball); err != nil {
		made := t.TempDir()
		t.Logf("debootstrap bookworm into %s (once; cached in %s)", made, tarball)
		run(t, "", "debootstrap", "--variant=minbase", "bookworm", made, "http://deb.debian.org/debian")
		if err := os.MkdirAll(filepath.Dir(tarball), 0o755); err != nil {
			t.Fatal(err)
		}
		run(t, "", "tar", "-C", made, "-czf", tarball+".part", ".")
		if err := os.Rename(tarball+".part", tarball); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	run(t, "", "tar", "-C", root, "-xzf", tarball)
	return root
}

// endToEnd runs bin under qemu with a function that answers in/x on out/x, and checks
// that a message goes through the embedded broker and the function.
func endToEnd(t *testing.T, qemu, bin string) {
	t.Helper()
	dir := t.TempDir()
	mqttPort, apiPort := loopback.FreePort(t), loopback.FreePort(t)
	files := map[string]string{
		"echo.lua": "function handle(event)\n  mqtt.publish(\"out/x\", event.payload)\nend\n",
		"moongate.yaml": fmt.Sprintf("gateway:\n  data_dir: ./data\n  console: {listen: 127.0.0.1:%d}\n"+
			"mqtt:\n  embedded: {listen: 127.0.0.1:%d}\nfunctions:\n  - name: echo\n    source: echo.lua\n    triggers: [\"mqtt:in/x\"]\n",
			apiPort, mqttPort),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(qemu, bin, "run", "-c", "moongate.yaml")
	cmd.Dir = dir
	gw := start(t, cmd)
	poll.Within(t, 60*time.Second, "the gateway under "+qemu, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/status", apiPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	c := paho.NewClient(paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)).SetClientID("dev"))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	got := make(chan string, 1)
	if tok := c.Subscribe("out/x", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish("in/x", 1, false, "hello"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case p := <-got:
		if p != "hello" {
			t.Fatalf("out/x carried %q, want hello", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer on out/x from the function")
	}
	gw.stop(t)
}

// proc is a gateway process under test, killed at the end of the test if it still runs;
// its output is logged if the test failed.
type proc struct {
	cmd    *exec.Cmd
	out    bytes.Buffer // written by the process's copying goroutines until exited
	exited chan error
}

func start(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("gateway output:\n%s", p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and wants a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.exited; err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, p.out.String())
	}
}

// unitKeys reads a unit file's Key=Value lines (the last of a repeated key).
func unitKeys(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = v
		}
	}
	return keys
}

// account is a user's uid and groups in root's /etc/passwd and /etc/group.
func account(t *testing.T, root, user string) (uid int, groups map[string]bool) {
	t.Helper()
	uid = -1
	for _, l := range lines(t, filepath.Join(root, "etc/passwd")) {
		if f := strings.Split(l, ":"); len(f) > 2 && f[0] == user {
			uid, _ = strconv.Atoi(f[2])
		}
	}
	if uid < 0 {
		t.Fatalf("no user %s in the root", user)
	}
	groups = map[string]bool{}
	for _, l := range lines(t, filepath.Join(root, "etc/group")) {
		if f := strings.Split(l, ":"); len(f) > 3 && (f[0] == user || strings.Contains(","+f[3]+",", ","+user+",")) {
			groups[f[0]] = true
		}
	}
	return uid, groups
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// fileSum is the sha256 of a file, in hex.
func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
