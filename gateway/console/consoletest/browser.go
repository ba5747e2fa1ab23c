// Package consoletest drives the console in a real headless Chromium for tests: open a
// page, wait for and click elements, type into the editor, read text, take screenshots.
//
// Elements are addressed by CSS selectors; the console marks the ones tests need with
// data-testid (see gateway/console/ui/index.html), so TestID("deploy") is the usual way.
package consoletest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// Options configures a Browser. The zero value is a 1280x800 desktop window.
type Options struct {
	// ExecPath is the Chromium binary. Empty means $CHROMIUM, else /usr/bin/chromium,
	// else chromium or google-chrome from $PATH.
	ExecPath string
	// Width and Height of the viewport in CSS pixels; zero means 1280x800.
	Width, Height int
	// Mobile emulates a phone: touch, mobile viewport rules, device scale factor 3.
	Mobile bool
	// Artifacts is where screenshots go. Empty means $MOONGATE_ARTIFACTS/<test name>,
	// else a directory under os.TempDir() named after the test; the test log says
	// which.
	Artifacts string
	// Timeout bounds each action (a wait, a click). Zero means 10 s.
	Timeout time.Duration
}

// Browser is one Chromium tab, with a fresh profile, closed at the end of the test.
type Browser struct {
	t         testing.TB
	ctx       context.Context
	timeout   time.Duration
	artifacts string

	mu       sync.Mutex
	jsErrors []string
}

// New starts Chromium for t; it skips the test when no Chromium is installed. Chromium
// runs headless, without sandbox (containers), GPU, QUIC, first-run UI, background
// networking, component updates or sync, with a fresh user data dir, so nothing outside
// the test's own servers is contacted.
func New(t testing.TB, opts Options) *Browser {
	t.Helper()
	exe := findChromium(opts.ExecPath)
	if exe == "" {
		t.Skip("no Chromium found: install chromium or set $CHROMIUM")
	}
	if opts.Width == 0 || opts.Height == 0 {
		opts.Width, opts.Height = 1280, 800
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	b := &Browser{t: t, timeout: opts.Timeout, artifacts: artifactsDir(t, opts.Artifacts)}

	alloc := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(opts.Width, opts.Height),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), alloc...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	b.ctx = ctx

	// The first call starts Chromium, whose process lives as long as the context of
	// that call: it must be the tab's own context, not one with a timeout. The start
	// itself is bounded by chromedp's 20 s wait for the DevTools address.
	if err := chromedp.Listen(ctx, b.record); err != nil {
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	b.Viewport(opts.Width, opts.Height, opts.Mobile)
	return b
}

func findChromium(explicit string) string {
	for _, p := range []string{explicit, os.Getenv("CHROMIUM"), "/usr/bin/chromium"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func artifactsDir(t testing.TB, dir string) string {
	name := unsafeName.ReplaceAllString(t.Name(), "_")
	if dir == "" {
		if base := os.Getenv("MOONGATE_ARTIFACTS"); base != "" {
			dir = filepath.Join(base, name)
		} else {
			dir = filepath.Join(os.TempDir(), "moongate-artifacts", name)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts dir: %v", err)
	}
	return dir
}

// record keeps uncaught exceptions and console.error calls of the page.
func (b *Browser) record(ev any) {
	var msg string
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = "exception: " + e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil && e.ExceptionDetails.Exception.Description != "" {
			msg += " " + e.ExceptionDetails.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		parts := make([]string, 0, len(e.Args))
		for _, a := range e.Args {
			if a.Description != "" {
				parts = append(parts, a.Description)
			} else {
				parts = append(parts, strings.Trim(string(a.Value), `"`))
			}
		}
		msg = "console.error: " + strings.Join(parts, " ")
	default:
		return
	}
	b.mu.Lock()
	b.jsErrors = append(b.jsErrors, msg)
	b.mu.Unlock()
}

// JSErrors returns the uncaught exceptions and console.error calls seen so far.
func (b *Browser) JSErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.jsErrors...)
}

// Artifacts is the directory screenshots are written to.
func (b *Browser) Artifacts() string { return b.artifacts }

// TestID is the CSS selector of the element with that data-testid.
func TestID(id string) string { return `[data-testid="` + id + `"]` }

func (b *Browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

func (b *Browser) fail(what string, err error) {
	b.t.Helper()
	shot := b.trySave("failure-" + unsafeName.ReplaceAllString(what, "_"))
	b.t.Fatalf("%s: %v (screenshot %s; page errors %q)", what, err, shot, b.JSErrors())
}

func run[T any](b *Browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fail(what, err)
	}
	return v
}

// Viewport resizes the page; mobile emulates a phone (touch, mobile layout rules).
func (b *Browser) Viewport(width, height int, mobile bool) {
	b.t.Helper()
	opts := []chromedp.EmulateViewportOption{}
	if mobile {
		opts = append(opts, chromedp.EmulateScale(3), chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	b.do("viewport", chromedp.EmulateViewport(int64(width), int64(height), opts...))
}

// ColorScheme emulates the user's preference, "dark" or "light"; headless Chromium
// otherwise reports light.
func (b *Browser) ColorScheme(scheme string) {
	b.t.Helper()
	b.do("color scheme "+scheme, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return err
	}))
}

// Open navigates to url and waits for the page to load.
func (b *Browser) Open(url string) {
	b.t.Helper()
	b.do("open "+url, chromedp.Navigate(url))
}

// WaitVisible waits until the element is in the page and visible.
func (b *Browser) WaitVisible(sel string) {
	b.t.Helper()
	b.do("wait visible "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// WaitGone waits until no element matches sel, or the match is hidden. It polls: chromedp's
// WaitNotVisible first waits for a match to exist, so an element already removed from the
// page would time it out.
func (b *Browser) WaitGone(sel string) {
	b.t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return String(!e || !e.getClientRects().length); })()`, sel)
	deadline := time.Now().Add(b.timeout)
	for b.Eval(js) != "true" {
		if time.Now().After(deadline) {
			b.fail("wait hidden "+sel, errors.New("still visible"))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// WaitText waits until the element's text contains want, and returns the text.
func (b *Browser) WaitText(sel, want string) string {
	b.t.Helper()
	deadline := time.Now().Add(b.timeout)
	var last string
	for time.Now().Before(deadline) {
		last = b.Eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.innerText : ""; })()`, sel))
		if strings.Contains(last, want) {
			return last
		}
		time.Sleep(25 * time.Millisecond)
	}
	if len(last) > 400 {
		last = last[:400] + "…"
	}
	b.fail(fmt.Sprintf("wait for %q in %s", want, sel), fmt.Errorf("text is %q", last))
	return ""
}

// Click clicks the element once it is visible.
func (b *Browser) Click(sel string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// Text returns the element's visible text.
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	return run(b, "text of "+sel, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
}

// Attr returns an attribute of the element ("" when absent).
func (b *Browser) Attr(sel, name string) string {
	b.t.Helper()
	return b.Eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? (e.getAttribute(%q) || "") : ""; })()`, sel, name))
}

// Count returns how many elements match sel.
func (b *Browser) Count(sel string) int {
	b.t.Helper()
	return run(b, "count "+sel, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
}

// Type focuses the element and sends key strokes, as a user typing would: "\n" is
// Enter, "\t" is Tab. Each key is a keyDown that carries its text, so a page that
// calls preventDefault on keydown (the editor's Enter and Tab) stops the text as
// with a real keyboard; chromedp's SendKeys sends the text as a separate char event
// that no keydown handler can stop.
func (b *Browser) Type(sel, keys string) {
	b.t.Helper()
	b.do("type into "+sel, chromedp.Focus(chromedp.CSS(sel), chromedp.NodeVisible),
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			for _, r := range keys {
				var down, up *input.DispatchKeyEventParams
				text := ""
				for _, k := range kb.Encode(r) {
					switch k.Type {
					case kb.KeyDown:
						down = k
					case kb.KeyUp:
						up = k
					case kb.KeyChar:
						text = k.Text
					}
				}
				down.Text, down.UnmodifiedText = text, text
				for _, k := range []*input.DispatchKeyEventParams{down, up} {
					if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, *k); err != nil {
						return fmt.Errorf("key %q: %w", r, err)
					}
				}
			}
			return nil
		}))
}

// SetValue replaces the value of an input or textarea and fires an input event, so
// the page reacts as to typing (the editor re-highlights). Faster than Type for
// whole programs.
func (b *Browser) SetValue(sel, value string) {
	b.t.Helper()
	js := fmt.Sprintf(`(() => {
		const e = document.querySelector(%q);
		if (!e) return false;
		e.focus();
		e.value = %q;
		e.dispatchEvent(new Event("input", {bubbles: true}));
		return true;
	})()`, sel, value)
	if !run(b, "set value of "+sel, chromedp.Evaluate[bool](js)) {
		b.fail("set value of "+sel, errors.New("no such element"))
	}
}

// Eval evaluates a JavaScript expression that yields a string.
func (b *Browser) Eval(js string) string {
	b.t.Helper()
	return run(b, "eval", chromedp.Evaluate[string](js))
}

// EvalAsync evaluates a JavaScript expression that yields a promise of a string, and
// waits for it.
func (b *Browser) EvalAsync(js string) string {
	b.t.Helper()
	return run(b, "eval", chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
}

// Screenshot saves a PNG of the viewport as <artifacts>/<name>.png and returns its path.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	png := run(b, "screenshot "+name, chromedp.CaptureScreenshot())
	return b.write(name, png)
}

// FullScreenshot saves a PNG of the whole page, beyond the viewport.
func (b *Browser) FullScreenshot(name string) string {
	b.t.Helper()
	png := run(b, "screenshot "+name, chromedp.FullScreenshot(100))
	return b.write(name, png)
}

func (b *Browser) write(name string, png []byte) string {
	b.t.Helper()
	p := filepath.Join(b.artifacts, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatalf("save screenshot: %v", err)
	}
	b.t.Logf("screenshot %s", p)
	return p
}

// trySave takes a best-effort screenshot for a failure report.
func (b *Browser) trySave(name string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return "none: " + err.Error()
	}
	p := filepath.Join(b.artifacts, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		return "none: " + err.Error()
	}
	return p
}
