// Package webui serves lanmonitor's live dashboards: self-contained static
// pages embedded in the binary (plain JavaScript, no build step, nothing
// loaded from the internet), with charts drawn by uPlot (vendored in
// vendor/uplot, see its README).
//
// Each page reads the JSON API of the server it is served by, with
// relative URLs (so it works behind a path prefix such as kubectl proxy):
// first api/v1/history for the last ten minutes, then api/v1/events as
// Server-Sent Events from the history's lastId on (package sse). The
// browser's EventSource reconnects by itself, with Last-Event-ID, and is
// replayed what it missed.
//
//   - Agent is the page of one node (or of a standalone agent): the
//     events are agent.ReportEvent, one per report of an interface, and
//     api/v1/interfaces lists the interfaces to choose from.
//   - Cluster is the controller's page: the events are the cluster
//     roll-up, a JSON object
//     {"time", "nodes": [...], "totals": {...}, "topTalkers": [...],
//     "ipBlocks": [...], "lanMonitors": [...]} (the fields the page reads
//     are listed at the top of static/cluster.js).
//
// Responses carry Content-Security-Policy default-src 'self' (the pages
// have no inline script or style), are compressed (gzip or zstd, as the
// browser accepts), and are cached: assets under ui/ are referenced with
// their content hash (?v=) and cached for a year when asked for with the
// current one; the pages themselves are revalidated on every load.
package webui

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/klauspost/compress/gzhttp"
)

//go:embed static vendor/uplot/uPlot.iife.min.js vendor/uplot/uPlot.min.css
var files embed.FS

// historyURL is the history the pages read first, which they preload.
const historyURL = "api/v1/history"

// Headers every response carries.
const (
	// CSP: everything from this origin, no inline script or style, no
	// framing, no form posts.
	contentSecurityPolicy = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	cacheImmutable        = "public, max-age=31536000, immutable"
	cacheRevalidate       = "no-cache"
)

// asset is one file served under ui/.
type asset struct {
	body  []byte
	ctype string
	hash  string // first 16 hex digits of the SHA-256 of body
}

// site is the set of files one page needs.
type site struct {
	page   []byte // the HTML served at /
	assets map[string]asset
}

// Agent returns the handler of the per-node (and standalone) dashboard:
// GET / is the page, GET /ui/NAME its scripts, styles and icon; any other
// path is 404. Mount it at "GET /" of a mux that serves the agent's
// /api/v1/ routes.
func Agent() http.Handler { return agentHandler }

// Cluster returns the handler of the cluster-wide dashboard, served by the
// controller next to its /api/v1/events and /api/v1/history of cluster
// roll-ups: GET / is the page, GET /ui/NAME its files; any other path is
// 404.
func Cluster() http.Handler { return clusterHandler }

var agentHandler, clusterHandler = mustHandler("agent.html"), mustHandler("cluster.html")

// compress is the wrapper of Compress: zstd (RFC 8878) or gzip (RFC 1952)
// as the client's Accept-Encoding prefers, for bodies of 1 KiB or more.
var compress = func() func(http.Handler) http.HandlerFunc {
	wrap, err := gzhttp.NewWrapper(gzhttp.CompressionLevel(gzip.BestCompression), gzhttp.MinSize(1024))
	if err != nil {
		panic(fmt.Sprintf("webui: %v", err))
	}
	return wrap
}()

// Compress wraps h so that its responses are compressed (zstd or gzip) for
// clients that accept it, with Vary: Accept-Encoding. For whole responses
// such as the pages and api/v1/history (ten minutes of reports: about
// 1.8 MB of JSON, 110 KB compressed); not for event streams.
func Compress(h http.Handler) http.Handler { return compress(h) }

// mustHandler builds the handler of one page; the embedded files are fixed
// at build time, so an error is a bug caught by the first test.
func mustHandler(page string) http.Handler {
	s, err := newSite(page)
	if err != nil {
		panic(fmt.Sprintf("webui: %v", err))
	}
	return compress(s)
}

// newSite reads the embedded files: every file of static/ but the pages,
// and uPlot. The page's references "ui/NAME" get ?v=HASH appended.
func newSite(page string) (*site, error) {
	s := &site{assets: map[string]asset{}}
	add := func(p string) error {
		body, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			return fmt.Errorf("%s: no content type for its extension", p)
		}
		s.assets[path.Base(p)] = asset{body: body, ctype: ctype, hash: hex.EncodeToString(sum[:8])}
		return nil
	}
	static, err := fs.Glob(files, "static/*")
	if err != nil {
		return nil, err
	}
	for _, p := range append(static, "vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css") {
		if strings.HasSuffix(p, ".html") {
			continue
		}
		if err := add(p); err != nil {
			return nil, err
		}
	}
	html, err := files.ReadFile("static/" + page)
	if err != nil {
		return nil, err
	}
	for name, a := range s.assets {
		ref := `"ui/` + name + `"`
		html = bytes.ReplaceAll(html, []byte(ref), []byte(`"ui/`+name+`?v=`+a.hash+`"`))
	}
	s.page = html
	return s, nil
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	var body []byte
	switch name, isAsset := strings.CutPrefix(r.URL.Path, "/ui/"); {
	case r.URL.Path == "/":
		body = s.page
		if iface := r.URL.Query().Get("interface"); iface != "" {
			// The page preloads the history it will ask for: the
			// interface's (see Stream.url in common.js).
			q := html.EscapeString(url.Values{"interface": {iface}}.Encode())
			body = bytes.Replace(body, []byte(`href="`+historyURL+`"`), []byte(`href="`+historyURL+"?"+q+`"`), 1)
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", cacheRevalidate)
	case isAsset && s.assets[name].body != nil:
		a := s.assets[name]
		body = a.body
		h.Set("Content-Type", a.ctype)
		if r.URL.Query().Get("v") == a.hash {
			h.Set("Cache-Control", cacheImmutable)
		} else {
			h.Set("Cache-Control", cacheRevalidate)
		}
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Write(body)
}
