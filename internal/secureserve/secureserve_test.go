package secureserve_test

import (
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/lanmonitor/lanmonitor/internal/secureserve"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// serve runs h behind g over TLS with a self-signed certificate.
func serve(t *testing.T, g *secureserve.Guard) *httptest.Server {
	t.Helper()
	h := http.NewServeMux()
	h.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served "+r.Method+" "+r.URL.Path+"\n")
	})
	return serveHandler(t, g, h)
}

// serveHandler runs h behind g over TLS with a self-signed certificate.
func serveHandler(t *testing.T, g *secureserve.Guard, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(g.Wrap(h))
	cfg, self, err := secureserve.TLSConfig(context.Background(), logr.Discard(), t.TempDir(), "198.18.0.1", "agent.example")
	if err != nil || !self {
		t.Fatalf("TLSConfig: self-signed %v, %v", self, err)
	}
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	crt, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(crt.DNSNames, ",") != "localhost,agent.example" || len(crt.IPAddresses) != 2 || crt.IPAddresses[1].String() != "198.18.0.1" {
		t.Fatalf("self-signed certificate for %v %v", crt.DNSNames, crt.IPAddresses)
	}
	return srv
}

type result struct {
	code int
	body string
	resp *http.Response
}

func do(t *testing.T, srv *httptest.Server, method, path, token string, hdr map[string]string, body io.Reader) result {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, string(b), resp}
}

// TestKubernetes: tokens from the real API server, checked with
// TokenReview and SubjectAccessReview as non-resource URLs.
func TestKubernetes(t *testing.T) {
	g, err := secureserve.Kubernetes(env.Config, secureserve.Agent("node-1"), logr.Discard(), "/healthz", "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, g)
	none := env.Token(t, "no-role")
	prom := env.Token(t, "prometheus", rbacv1.PolicyRule{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}})
	viewer := env.Token(t, "viewer", rbacv1.PolicyRule{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"lanmonitornodes/traffic"}, Verbs: []string{"get"}})
	other := env.Token(t, "other-node", rbacv1.PolicyRule{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"lanmonitornodes/traffic"},
		ResourceNames: []string{"node-2"}, Verbs: []string{"get"}})
	for _, c := range []struct {
		path, token string
		code        int
		body        string
	}{
		{"/metrics", "", 401, `{"error": "Unauthorized: send a bearer token (Authorization: Bearer ...) or sign in at /login"}` + "\n"},
		{"/metrics", "not-a-token", 401, `{"error": "Unauthorized: send a bearer token (Authorization: Bearer ...) or sign in at /login"}` + "\n"},
		{"/metrics", none, 403, `{"error": "Forbidden: user \"system:serviceaccount:default:no-role\" may not GET /metrics"}` + "\n"},
		{"/metrics", prom, 200, "served GET /metrics\n"},
		{"/api/v1/talkers", prom, 403, `{"error": "Forbidden: user \"system:serviceaccount:default:prometheus\" may not GET /api/v1/talkers"}` + "\n"},
		{"/api/v1/talkers", viewer, 200, "served GET /api/v1/talkers\n"},
		{"/", viewer, 200, "served GET /\n"},
		{"/api/v1/stats", other, 403, `{"error": "Forbidden: user \"system:serviceaccount:default:other-node\" may not GET /api/v1/stats"}` + "\n"},
		{"/metrics", viewer, 403, `{"error": "Forbidden: user \"system:serviceaccount:default:viewer\" may not GET /metrics"}` + "\n"},
		{"/healthz", "", 200, "served GET /healthz\n"},
		{"/ui/style.css", "", 200, "served GET /ui/style.css\n"},
	} {
		r := do(t, srv, http.MethodGet, c.path, c.token, nil, nil)
		if r.code != c.code || r.body != c.body {
			t.Errorf("GET %s with token %.12q: %d %q, want %d %q", c.path, c.token, r.code, r.body, c.code, c.body)
		}
		if r.code == 401 && r.resp.Header.Get("WWW-Authenticate") != `Bearer realm="lanmonitor"` {
			t.Errorf("401 without WWW-Authenticate: %v", r.resp.Header)
		}
	}
	if r := do(t, srv, http.MethodPost, "/api/v1/talkers", viewer, nil, nil); r.code != 403 {
		t.Errorf("POST with a get-only role: %d %s", r.code, r.body)
	}

	// Why not non-resource URLs for the API: every authenticated user may
	// get /api/* (the default system:discovery role).
	ng, err := secureserve.Kubernetes(env.Config, secureserve.NonResource, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if r := do(t, serve(t, ng), http.MethodGet, "/api/v1/talkers", none, nil, nil); r.code != 200 {
		t.Errorf("system:discovery no longer grants /api/*: %d (the Agent attributes could be simpler)", r.code)
	}

	// Resource attributes: whoever may get lanmonitors reads the cluster dashboard.
	rg, err := secureserve.Kubernetes(env.Config, secureserve.Resource("lanmonitor.io", "lanmonitors", "get"), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	rsrv := serve(t, rg)
	reader := env.Token(t, "lanmonitor-reader", rbacv1.PolicyRule{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"lanmonitors"}, Verbs: []string{"get", "list", "watch"}})
	if r := do(t, rsrv, http.MethodGet, "/api/v1/history", reader, nil, nil); r.code != 200 || r.body != "served GET /api/v1/history\n" {
		t.Errorf("reader: %d %q", r.code, r.body)
	}
	if r := do(t, rsrv, http.MethodGet, "/api/v1/history", viewer, nil, nil); r.code != 403 {
		t.Errorf("non-resource viewer on the resource guard: %d %q", r.code, r.body)
	}
}

// TestSignIn: a browser without a bearer token signs in with a form and a
// cookie.
func TestSignIn(t *testing.T) {
	g, err := secureserve.Kubernetes(env.Config, secureserve.Agent("node-1"), logr.Discard(), "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, g)
	viewer := env.Token(t, "signin-viewer", rbacv1.PolicyRule{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"lanmonitornodes/traffic"}, Verbs: []string{"get"}})
	none := env.Token(t, "signin-none")
	html := map[string]string{"Accept": "text/html"}

	if r := do(t, srv, http.MethodGet, "/", "", html, nil); r.code != http.StatusSeeOther || r.resp.Header.Get("Location") != "/login" {
		t.Fatalf("page without credentials: %d %v", r.code, r.resp.Header)
	}
	if r := do(t, srv, http.MethodGet, "/", "", nil, nil); r.code != 401 {
		t.Fatalf("API client without credentials: %d", r.code)
	}
	if r := do(t, srv, http.MethodGet, "/login", "", nil, nil); r.code != 200 || !strings.Contains(r.body, `<form method="post" action="login">`) ||
		!strings.Contains(r.resp.Header.Get("Content-Security-Policy"), "form-action 'self'") {
		t.Fatalf("login form: %d %v %.300s", r.code, r.resp.Header, r.body)
	}
	form := func(token string) io.Reader { return strings.NewReader(url.Values{"token": {token}}.Encode()) }
	post := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if r := do(t, srv, http.MethodPost, "/login", "", post, form("not-a-token")); r.code != 401 || !strings.Contains(r.body, "This token is not valid") {
		t.Fatalf("bad token: %d %.300s", r.code, r.body)
	}
	if r := do(t, srv, http.MethodPost, "/login", "", post, form(none)); r.code != 403 || !strings.Contains(r.body, "system:serviceaccount:default:signin-none may not read") {
		t.Fatalf("token without the role: %d %.300s", r.code, r.body)
	}
	evil := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://attacker.example"}
	if r := do(t, srv, http.MethodPost, "/login", "", evil, form(viewer)); r.code != 403 || len(r.resp.Cookies()) != 0 {
		t.Fatalf("cross-origin sign-in: %d %v", r.code, r.resp.Cookies())
	}
	for _, h := range []map[string]string{{"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}} {
		h["Content-Type"] = "application/x-www-form-urlencoded"
		if r := do(t, srv, http.MethodPost, "/login", "", h, form(viewer)); r.code != 403 || len(r.resp.Cookies()) != 0 {
			t.Fatalf("sign-in with %v: %d %v", h, r.code, r.resp.Cookies())
		}
	}
	r := do(t, srv, http.MethodPost, "/login", "", post, form(viewer))
	if r.code != http.StatusSeeOther || r.resp.Header.Get("Location") != "/" || len(r.resp.Cookies()) != 1 {
		t.Fatalf("sign in: %d %v", r.code, r.resp.Header)
	}
	c := r.resp.Cookies()[0]
	if c.Name != secureserve.CookieName || c.Value != viewer || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != 12*3600 {
		t.Fatalf("cookie %+v", c)
	}
	cookie := map[string]string{"Cookie": secureserve.CookieName + "=" + viewer, "Accept": "text/html"}
	if r := do(t, srv, http.MethodGet, "/", "", cookie, nil); r.code != 200 || r.body != "served GET /\n" {
		t.Fatalf("page with the cookie: %d %q", r.code, r.body)
	}
	if r := do(t, srv, http.MethodGet, "/api/v1/events", "", cookie, nil); r.code != 200 {
		t.Fatalf("stream with the cookie: %d %q", r.code, r.body)
	}
	noRole := map[string]string{"Cookie": secureserve.CookieName + "=" + none, "Accept": "text/html"}
	if r := do(t, srv, http.MethodGet, "/", "", noRole, nil); r.code != http.StatusSeeOther || r.resp.Header.Get("Location") != "/login?forbidden=1" {
		t.Fatalf("page with a forbidden cookie: %d %v", r.code, r.resp.Header)
	}
	r = do(t, srv, http.MethodPost, "/logout", "", cookie, nil)
	if r.code != http.StatusSeeOther || len(r.resp.Cookies()) != 1 || r.resp.Cookies()[0].MaxAge >= 0 {
		t.Fatalf("logout: %d %v", r.code, r.resp.Cookies())
	}
}

// TestStaticToken: the standalone agent's one token.
func TestStaticToken(t *testing.T) {
	if _, err := secureserve.StaticToken("", logr.Discard()); err == nil {
		t.Fatal("an empty token was accepted")
	}
	g, err := secureserve.StaticToken("s3cret-token", logr.Discard(), "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, g)
	for _, c := range []struct {
		path, token string
		code        int
	}{{"/api/v1/stats", "", 401}, {"/api/v1/stats", "s3cret-tokeN", 401}, {"/api/v1/stats", "s3cret-token", 200}, {"/healthz", "", 200}} {
		if r := do(t, srv, http.MethodGet, c.path, c.token, nil, nil); r.code != c.code {
			t.Errorf("GET %s with %q: %d %s, want %d", c.path, c.token, r.code, r.body, c.code)
		}
	}
}

// TestTLSConfigDir: a directory with one of the two files is an error.
func TestTLSConfigDir(t *testing.T) {
	dir := t.TempDir()
	if err := writeFile(dir+"/tls.crt", "x"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := secureserve.TLSConfig(context.Background(), logr.Discard(), dir); err == nil || !strings.Contains(err.Error(), "need both tls.crt and tls.key") {
		t.Fatalf("half a key pair: %v", err)
	}
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }
