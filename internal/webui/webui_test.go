package webui_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lanmonitor/lanmonitor/internal/webui"
)

// get answers GET path from h, with Accept-Encoding gzip when gz.
func get(t *testing.T, h http.Handler, method, path string, gz bool) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

// body reads a response's body, gunzipping it when it is gzip-encoded.
func body(t *testing.T, r *http.Response) []byte {
	t.Helper()
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Get("Content-Encoding") != "gzip" {
		return raw
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var refRE = regexp.MustCompile(`(?:src|href)="(ui/[^"?]+)\?v=([0-9a-f]{16})"`)

// TestPages: each page and every file it references are served from the
// embedded files, gzip-compressed for a client that accepts it, with the
// security headers; a file asked for with its current hash is cached for a
// year, otherwise revalidated; the whole page transfers in under 150 KiB.
func TestPages(t *testing.T) {
	for name, h := range map[string]http.Handler{"agent": webui.Agent(), "cluster": webui.Cluster()} {
		t.Run(name, func(t *testing.T) {
			page := get(t, h, "GET", "/", true)
			if page.StatusCode != 200 || page.Header.Get("Content-Type") != "text/html; charset=utf-8" || page.Header.Get("Cache-Control") != "no-cache" {
				t.Fatalf("GET /: %s, %q, cache %q", page.Status, page.Header.Get("Content-Type"), page.Header.Get("Cache-Control"))
			}
			html := body(t, page)
			wantFile(t, html, filepath.Join("static", name+".html"), true)
			refs := refRE.FindAllSubmatch(html, -1)
			// uPlot's script and style, common.js, the page's script, style.css, the icon.
			if len(refs) != 6 {
				t.Fatalf("%d versioned references in the page, want 6: %q", len(refs), refs)
			}
			if m := regexp.MustCompile(`(?:src|href)="(?:https?:)?//`).Find(html); m != nil {
				t.Fatalf("the page loads %s from elsewhere", m)
			}
			transfer := page.ContentLength
			if transfer < 0 {
				transfer = int64(len(body(t, get(t, h, "GET", "/", true))))
			}
			for _, ref := range refs {
				p, hash := "/"+string(ref[1]), string(ref[2])
				r := get(t, h, "GET", p+"?v="+hash, true)
				raw, _ := io.ReadAll(r.Body)
				transfer += int64(len(raw))
				r.Body = io.NopCloser(bytes.NewReader(raw))
				if r.StatusCode != 200 || r.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
					t.Errorf("GET %s: %s, cache %q", p, r.Status, r.Header.Get("Cache-Control"))
				}
				if r.Header.Get("Content-Security-Policy") != "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'" || r.Header.Get("X-Content-Type-Options") != "nosniff" {
					t.Errorf("GET %s: headers %v", p, r.Header)
				}
				ct := r.Header.Get("Content-Type")
				if want := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}[filepath.Ext(p)]; ct != want {
					t.Errorf("GET %s: Content-Type %q, want %q", p, ct, want)
				}
				if !strings.HasSuffix(p, ".svg") && r.Header.Get("Content-Encoding") != "gzip" {
					t.Errorf("GET %s with Accept-Encoding gzip: Content-Encoding %q", p, r.Header.Get("Content-Encoding"))
				}
				src := filepath.Join("static", filepath.Base(p))
				if strings.HasPrefix(filepath.Base(p), "uPlot") {
					src = filepath.Join("vendor", "uplot", filepath.Base(p))
				}
				wantFile(t, body(t, r), src, false)
				if stale := get(t, h, "GET", p+"?v=0000000000000000", false); stale.StatusCode != 200 || stale.Header.Get("Cache-Control") != "no-cache" || stale.Header.Get("Content-Encoding") != "" {
					t.Errorf("GET %s with an old hash, no gzip: %s, cache %q, encoding %q", p, stale.Status, stale.Header.Get("Cache-Control"), stale.Header.Get("Content-Encoding"))
				}
			}
			t.Logf("%s page: %d bytes transferred gzip-compressed (html, scripts, styles, icon; headers not counted)", name, transfer)
			if transfer > 150<<10 {
				t.Errorf("the page transfers %d bytes compressed, over the budget of 150 KiB", transfer)
			}
		})
	}
}

// wantFile fails unless got is the file at path (relative to the
// package), where the page's references may carry ?v=HASH.
func wantFile(t *testing.T, got []byte, path string, page bool) {
	t.Helper()
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if page {
		got = regexp.MustCompile(`\?v=[0-9a-f]{16}"`).ReplaceAll(got, []byte(`"`))
	}
	if !bytes.Equal(got, want) {
		t.Errorf("served %s differs from the file (%d bytes, want %d)", path, len(got), len(want))
	}
}

// TestNotFoundAndMethods: unknown paths are 404, other methods than GET
// and HEAD are 405 with Allow.
func TestNotFoundAndMethods(t *testing.T) {
	h := webui.Agent()
	for _, p := range []string{"/index.html", "/ui/", "/ui/nope.js", "/ui/agent.html", "/static/common.js", "/ui/../webui.go"} {
		if r := get(t, h, "GET", p, false); r.StatusCode != 404 {
			t.Errorf("GET %s: %s, want 404", p, r.Status)
		}
	}
	if r := get(t, h, "POST", "/", false); r.StatusCode != 405 || r.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %s, Allow %q; want 405 with Allow: GET, HEAD", r.Status, r.Header.Get("Allow"))
	}
	if r := get(t, h, "HEAD", "/ui/common.js", false); r.StatusCode != 200 {
		t.Errorf("HEAD /ui/common.js: %s", r.Status)
	}
}

// TestPreload: the page preloads the history it will read: the default
// interface's, or that of ?interface=, encoded as the page's script
// encodes it and escaped for HTML.
func TestPreload(t *testing.T) {
	for query, want := range map[string]string{
		"":                           `<link rel="preload" href="api/v1/history" as="fetch" crossorigin="anonymous">`,
		"?interface=lan1":            `<link rel="preload" href="api/v1/history?interface=lan1" as="fetch" crossorigin="anonymous">`,
		`?interface=a%22%3E%3Cb+c&x`: `<link rel="preload" href="api/v1/history?interface=a%22%3E%3Cb+c" as="fetch" crossorigin="anonymous">`,
	} {
		html := string(body(t, get(t, webui.Agent(), "GET", "/"+query, false)))
		if !strings.Contains(html, want) {
			t.Errorf("GET /%s: no %s in\n%s", query, want, html)
		}
	}
}
