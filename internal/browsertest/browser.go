// Package browsertest drives headless Chromium (Debian's chromium package)
// with a fake camera and microphone, for tests of the real web app.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// InstallHint says what to install when no browser is found.
const InstallHint = "browser tests need Chromium: run `make test` (installs it as root) or `sudo apt-get install -y chromium`, or set CHROMIUM=/path/to/chromium"

// Path returns the Chromium binary, or an error with InstallHint.
func Path() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Chromium found: %s", InstallHint)
}

// Browser is one headless Chromium process with its own profile.
type Browser struct {
	ctx context.Context
}

// Launch starts Chromium with the fake media devices; extra flags are
// appended (e.g. "force-webrtc-ip-handling-policy"). It is stopped when the
// test ends. A missing browser fails the test, it never skips.
func Launch(t testing.TB, extra ...chromedp.ExecAllocatorOption) *Browser {
	t.Helper()
	path, err := Path()
	if err != nil {
		t.Fatal(err)
	}
	home, err := os.MkdirTemp("", "browsertest-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(home + "/profile"),
		chromedp.Env("HOME="+home, "TMPDIR="+home),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
	}
	opts = append(opts, extra...)
	var actx, bctx context.Context
	var cancelAlloc, cancelBrowser context.CancelFunc
	// On a loaded machine Chromium occasionally drops the first DevTools
	// connection (EOF); a second start is clean.
	for attempt := 1; ; attempt++ {
		actx, cancelAlloc = chromedp.NewExecAllocator(context.Background(), opts...)
		bctx, cancelBrowser = chromedp.NewContext(actx)
		err := chromedp.Run(bctx) // starts the process
		if err == nil {
			break
		}
		cancelBrowser()
		cancelAlloc()
		if attempt == 3 {
			t.Fatalf("start %s: %v (%s)", path, err, InstallHint)
		}
		t.Logf("start %s (attempt %d): %v; trying again", path, attempt, err)
		time.Sleep(500 * time.Millisecond)
	}
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		// Chromium's helpers may still be writing for a moment.
		for i := 0; i < 50 && os.RemoveAll(home) != nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
	return &Browser{ctx: bctx}
}

// Tab is one page.
type Tab struct {
	t   testing.TB
	ctx context.Context
}

// Open opens url in a new tab.
func (b *Browser) Open(t testing.TB, url string) *Tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	// The first Run allocates the tab and ties it to its context, so it
	// must get the tab's own context, not one with a timeout.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("browser: new tab: %v", err)
	}
	tab := &Tab{t: t, ctx: ctx}
	// Chromium started in a fresh network namespace may still see its
	// interfaces change (addresses settling) and abort the first load
	// with net::ERR_NETWORK_CHANGED; loading again is clean.
	for attempt := 1; ; attempt++ {
		nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := chromedp.Run(nctx, chromedp.Navigate(url))
		cancel()
		if err == nil {
			return tab
		}
		if attempt == 3 || !strings.Contains(err.Error(), "ERR_NETWORK_CHANGED") {
			t.Fatalf("browser: %v", err)
		}
		t.Logf("browser: %v; loading again", err)
		time.Sleep(200 * time.Millisecond)
	}
}

// Run runs chromedp actions with a 30 s limit, failing the test on error.
func (tab *Tab) Run(actions ...chromedp.Action) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		tab.t.Fatalf("browser: %v", err)
	}
}

// Eval evaluates a JavaScript expression; promises are awaited.
func (tab *Tab) Eval(expr string, out any) {
	tab.t.Helper()
	tab.Run(chromedp.Evaluate(expr, out, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
		return p.WithAwaitPromise(true)
	}))
}

// TryEval is Eval that returns the error instead of failing.
func (tab *Tab) TryEval(expr string, out any) error {
	ctx, cancel := context.WithTimeout(tab.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate(expr, out, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
		return p.WithAwaitPromise(true)
	}))
}

// WaitFor polls a boolean JavaScript expression every 50 ms until it is true.
func (tab *Tab) WaitFor(expr string, timeout time.Duration) {
	tab.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		err := tab.TryEval("!!("+expr+")", &ok)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			tab.t.Fatalf("browser: %s not true within %v (last error: %v)", expr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Viewport sets the tab's layout size in CSS pixels; mobile emulates a
// phone (touch, mobile viewport rules).
func (tab *Tab) Viewport(width, height int64, mobile bool) {
	tab.t.Helper()
	tab.Run(emulation.SetDeviceMetricsOverride(width, height, 1, mobile))
}

// Key types one key into the focused element (e.g. "\r" for Enter,
// kb.Escape).
func (tab *Tab) Key(key string) {
	tab.t.Helper()
	tab.Run(chromedp.KeyEvent(key))
}

// Screenshot saves a PNG of the viewport to path.
func (tab *Tab) Screenshot(path string) {
	tab.t.Helper()
	var buf []byte
	tab.Run(chromedp.CaptureScreenshot(&buf))
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		tab.t.Fatalf("screenshot: %v", err)
	}
}
