// Package browsertest drives a headless Chromium (Debian's chromium
// package) through the DevTools protocol, with chromedp, for the tests of
// the dashboards (internal/webui, agent). Each Browser is a fresh browser
// process with its own profile in a temporary directory, started with the
// flags that keep it off the network (no background networking, component
// updates, sync or QUIC): the only requests it makes are the page's.
//
// Without Chromium a test skips with a message saying how to install it,
// or fails when LANMONITOR_REQUIRE_PRIVILEGED=1 (CI), as privileged tests
// do.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/lanmonitor/lanmonitor/internal/privileged"
)

// EnvChromium names the browser binary, overriding the search of PATH for
// chromium, chromium-browser and google-chrome.
const EnvChromium = "LANMONITOR_CHROMIUM"

// Browser is one headless browser with one tab. Its methods fail the test
// on error.
type Browser struct {
	t   testing.TB
	ctx context.Context

	mu       sync.Mutex
	messages []string // console messages, exceptions and browser log entries
}

// ExecPath returns the browser binary to use, or "" when there is none.
func ExecPath() string {
	if p := os.Getenv(EnvChromium); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// New starts a browser for t, closed when t ends, with a 1280x900 window.
func New(t testing.TB) *Browser {
	t.Helper()
	path := ExecPath()
	if path == "" {
		msg := "needs Chromium for the dashboard tests: apt-get install chromium (or set " + EnvChromium + ")"
		if os.Getenv(privileged.EnvRequire) == "1" {
			t.Fatalf("%s; %s=1 forbids skipping", msg, privileged.EnvRequire)
		}
		t.Skip(msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-quic", true),
		// The servers under test make self-signed certificates.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &Browser{t: t, ctx: ctx}
	// The Network domain stays off: capturing response bodies for DevTools
	// would slow the page down (Resources measures transfers instead).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.messages = append(b.messages, fmt.Sprintf("%s: %s", m.Type, m))
			b.mu.Unlock()
		}
	}()
	return b
}

// SignIn signs the tab in to the dashboard at base (https://HOST:PORT)
// with token through its sign-in form (internal/secureserve) and waits
// for the page the form returns to. Cookies do not tell ports apart, so
// this signs in to every dashboard on the same host.
func (b *Browser) SignIn(base, token string) {
	b.t.Helper()
	b.Navigate(base + "/login")
	b.Do(chromedp.SetValue(chromedp.CSS("#token"), token), chromedp.Submit(chromedp.CSS("#token")))
	b.waitFor(10*time.Second, func() bool {
		return Eval[bool](b, `location.pathname === "/" && document.querySelector("#conn") !== null`)
	}, func() string {
		return "the dashboard after signing in; the tab is at " + Eval[string](b, `location.href + ": " + document.body.innerText.slice(0, 300)`)
	})
}

// Navigate loads url in the tab and waits for its load event.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	b.Do(chromedp.Navigate(url))
}

// Context is the tab's chromedp context, for actions this package lacks.
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs actions in the tab.
func (b *Browser) Do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatal(err)
	}
}

// Eval evaluates a JavaScript expression in the tab and decodes its value.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// Text returns the textContent of the first element matching the CSS
// selector, trimmed, or "<missing>".
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	return Eval[string](b, fmt.Sprintf(`(e => e ? e.textContent.trim() : "<missing>")(document.querySelector(%q))`, sel))
}

// Attr returns an attribute of the first element matching sel ("" when
// absent).
func (b *Browser) Attr(sel, name string) string {
	b.t.Helper()
	return Eval[string](b, fmt.Sprintf(`(e => (e && e.getAttribute(%q)) || "")(document.querySelector(%q))`, name, sel))
}

// Texts returns the trimmed textContent of every element matching sel.
func (b *Browser) Texts(sel string) []string {
	b.t.Helper()
	return Eval[[]string](b, fmt.Sprintf(`[...document.querySelectorAll(%q)].map(e => e.textContent.trim())`, sel))
}

// WaitText waits until Text(sel) is want, failing with the last text seen.
func (b *Browser) WaitText(sel, want string, timeout time.Duration) {
	b.t.Helper()
	var got string
	b.waitFor(timeout, func() bool { got = b.Text(sel); return got == want }, func() string {
		return fmt.Sprintf("%s: text %q, want %q", sel, got, want)
	})
}

// WaitAttr waits until Attr(sel, name) is want, failing with the last
// value seen.
func (b *Browser) WaitAttr(sel, name, want string, timeout time.Duration) {
	b.t.Helper()
	var got string
	b.waitFor(timeout, func() bool { got = b.Attr(sel, name); return got == want }, func() string {
		return fmt.Sprintf("%s: %s=%q, want %q", sel, name, got, want)
	})
}

// Wait waits until the JavaScript expression is true.
func (b *Browser) Wait(expr string, timeout time.Duration) {
	b.t.Helper()
	b.waitFor(timeout, func() bool { return Eval[bool](b, expr) }, func() string { return expr })
}

func (b *Browser) waitFor(timeout time.Duration, cond func() bool, what func() string) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out after %v waiting for %s", timeout, what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Click clicks the element matching the CSS selector with the mouse.
func (b *Browser) Click(sel string) {
	b.t.Helper()
	b.Do(chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// Press focuses the element matching sel and types keys on it (for
// example "\r" for Enter).
func (b *Browser) Press(sel, keys string) {
	b.t.Helper()
	b.Do(chromedp.Focus(chromedp.CSS(sel)), chromedp.KeyEvent(keys))
}

// Type empties the input matching sel (firing its input event) and types
// s into it with the keyboard, key by key.
func (b *Browser) Type(sel, s string) {
	b.t.Helper()
	Eval[bool](b, fmt.Sprintf(`(e => { e.value = ""; e.dispatchEvent(new Event("input", {bubbles: true})); return true })(document.querySelector(%q))`, sel))
	if s != "" {
		b.Do(chromedp.SendKeys(chromedp.CSS(sel), s))
	}
}

// Select chooses the option of value in the select element matching sel
// and fires its change event, as choosing it does.
func (b *Browser) Select(sel, value string) {
	b.t.Helper()
	Eval[bool](b, fmt.Sprintf(`(e => { e.value = %q; e.dispatchEvent(new Event("change", {bubbles: true})); return e.value === %[1]q })(document.querySelector(%q))`, value, sel))
}

// ColorScheme emulates prefers-color-scheme ("light" or "dark").
func (b *Browser) ColorScheme(scheme string) {
	b.t.Helper()
	if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
	}); err != nil {
		b.t.Fatal(err)
	}
}

// Viewport sets the viewport's size in CSS pixels (mobile: a phone's
// device scale factor 2 and touch).
func (b *Browser) Viewport(width, height int64, mobile bool) {
	b.t.Helper()
	opts := []chromedp.EmulateViewportOption{}
	if mobile {
		opts = append(opts, chromedp.EmulateScale(2), chromedp.EmulateMobile)
	}
	b.Do(chromedp.EmulateViewport(width, height, opts...))
}

// Screenshot saves a PNG of the whole page to path.
func (b *Browser) Screenshot(path string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// Resource is a load of the page as Resource Timing (W3C) reports it:
// its URL, what started it, and its sizes in bytes: TransferSize with the
// response's headers as received (compressed), EncodedBody the body as
// received, DecodedBody after decompression.
type Resource struct {
	URL          string  `json:"name"`
	Initiator    string  `json:"initiatorType"`
	TransferSize float64 `json:"transferSize"`
	EncodedBody  float64 `json:"encodedBodySize"`
	DecodedBody  float64 `json:"decodedBodySize"`
}

// Resources returns the current document and every resource it loaded
// so far (navigation and resource entries of Resource Timing), in the
// order they started.
func (b *Browser) Resources() []Resource {
	b.t.Helper()
	return Eval[[]Resource](b, `[...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")].map(e => e.toJSON())`)
}

// Block makes the tab's requests whose URL matches pattern (a DevTools
// Fetch pattern: * any characters, ? one) fail as if the server refused
// the connection (net::ERR_CONNECTION_REFUSED), until the returned
// function is called; from then on they go through again. Requests
// already answered (an open event stream) are not affected.
func (b *Browser) Block(pattern string) (unblock func()) {
	b.t.Helper()
	ctx, cancel := context.WithCancel(b.ctx)
	var blocked atomic.Bool
	blocked.Store(true)
	paused := chromedp.Events(ctx, fetch.RequestPaused)
	if _, err := chromedp.Call(b.ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: pattern}}}); err != nil {
		b.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range paused {
			if err != nil {
				return
			}
			if blocked.Load() {
				chromedp.Call(b.ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonConnectionRefused})
			} else {
				chromedp.Call(b.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
			}
		}
	}()
	var once sync.Once
	unblock = func() {
		once.Do(func() {
			blocked.Store(false)
			if _, err := chromedp.Call(b.ctx, fetch.Disable, cdp.Empty{}); err != nil {
				b.t.Errorf("unblock %s: %v", pattern, err)
			}
			cancel()
			<-done
		})
	}
	b.t.Cleanup(unblock)
	return unblock
}

// Messages returns the console messages, uncaught exceptions and browser
// log entries (such as failed loads and Content-Security-Policy
// violations) seen so far, as "type: text".
func (b *Browser) Messages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.messages...)
}
