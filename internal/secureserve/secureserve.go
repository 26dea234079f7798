// Package secureserve puts lanmonitor's HTTP endpoints (the agent's API,
// metrics and dashboard; the controller's dashboard) behind TLS,
// authentication and authorization, the way kube-rbac-proxy and
// kubebuilder v4's secure metrics do:
//
//   - TLS: the certificate and key of a directory (tls.crt, tls.key: a
//     Secret or cert-manager Certificate mounted there), reloaded when they
//     change (controller-runtime's certwatcher); without them a self-signed
//     certificate generated at start (client-go's certutil), as
//     controller-runtime's metrics server does.
//   - Authentication: in Kubernetes, the bearer token of the request checked
//     with a TokenReview, and authorization with a SubjectAccessReview
//     (k8s.io/apiserver's delegating authenticator and authorizer, with
//     their caches: a token is reviewed at most once a minute, a decision
//     cached 5 minutes when allowed and 30 s when denied). Standalone, one
//     static bearer token compared in constant time.
//   - Browsers cannot send a bearer token: GET /login is a form that takes
//     one (kubectl create token ...) and, once it is reviewed and allowed,
//     keeps it in an HttpOnly, Secure, SameSite=Strict cookie that later
//     requests are authenticated with; POST /logout deletes it.
//
// Paths listed as public (/healthz, /readyz, the page's static files
// under /ui/) are served without authentication; they say nothing about
// the network.
package secureserve

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	authenticationv1 "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationv1 "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// TLSConfig returns the server TLS configuration: the key pair in dir
// (tls.crt and tls.key, PEM), watched for changes until ctx ends, or, when
// dir is empty or holds neither file, a self-signed certificate for hosts
// (names or IP addresses; "localhost" and 127.0.0.1 are always included)
// valid one year. self reports which. Errors: a directory with only one of
// the files, or unreadable files.
func TLSConfig(ctx context.Context, log logr.Logger, dir string, hosts ...string) (cfg *tls.Config, self bool, err error) {
	cfg = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if dir != "" {
		crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		_, crtErr := os.Stat(crt)
		_, keyErr := os.Stat(key)
		switch {
		case crtErr == nil && keyErr == nil:
			w, err := certwatcher.New(crt, key)
			if err != nil {
				return nil, false, fmt.Errorf("load the certificate of %s: %w", dir, err)
			}
			go func() {
				if err := w.Start(ctx); err != nil {
					log.Error(err, "watch the certificate", "dir", dir)
				}
			}()
			cfg.GetCertificate = w.GetCertificate
			return cfg, false, nil
		case !errors.Is(crtErr, os.ErrNotExist) || !errors.Is(keyErr, os.ErrNotExist):
			return nil, false, fmt.Errorf("certificate directory %s: need both tls.crt and tls.key (%v, %v)", dir, crtErr, keyErr)
		}
	}
	ips := []net.IP{{127, 0, 0, 1}}
	var names []string
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			names = append(names, h)
		}
	}
	crt, key, err := certutil.GenerateSelfSignedCertKeyWithFixtures("localhost", ips, names, "")
	if err != nil {
		return nil, false, fmt.Errorf("generate a self-signed certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, false, fmt.Errorf("generate a self-signed certificate: %w", err)
	}
	cfg.Certificates = []tls.Certificate{pair}
	return cfg, true, nil
}

// AttributesFunc says what a request asks to do, for the authorizer: every
// field but User.
type AttributesFunc func(r *http.Request) authorizer.AttributesRecord

// NonResource authorizes a request as a non-resource URL: the verb is the
// lower-case HTTP method (HEAD is get), the path the URL's. RBAC grants it
// with nonResourceURLs, such as "/metrics" or "/api/v1/*" (kube-rbac-proxy's
// and controller-runtime's metrics filter's model).
func NonResource(r *http.Request) authorizer.AttributesRecord {
	verb := strings.ToLower(r.Method)
	if verb == "head" {
		verb = "get"
	}
	return authorizer.AttributesRecord{Verb: verb, Path: r.URL.Path}
}

// Resource authorizes every request as verb on resource of group (for
// example get lanmonitors.lanmonitor.io): whoever may do that may read.
func Resource(group, resource, verb string) AttributesFunc {
	return func(*http.Request) authorizer.AttributesRecord {
		return authorizer.AttributesRecord{Verb: verb, APIGroup: group, Resource: resource, ResourceRequest: true}
	}
}

// Agent authorizes the requests of node's agent: GET /metrics as the
// non-resource URL /metrics (what Prometheus is granted, by convention),
// everything else (the JSON API, the event stream, the dashboard) as get
// on the traffic subresource of the node's LanMonitorNode
// (lanmonitornodes/traffic in lanmonitor.io, named after the node), so
// that RBAC can grant one node's traffic or every node's.
//
// The API is not authorized as non-resource URLs /api/v1/*: Kubernetes'
// default system:discovery role grants get on /api/* to every
// authenticated user, so any service account token would read it.
func Agent(node string) AttributesFunc {
	return func(r *http.Request) authorizer.AttributesRecord {
		if r.URL.Path == "/metrics" {
			return NonResource(r)
		}
		a := NonResource(r)
		return authorizer.AttributesRecord{Verb: a.Verb, APIGroup: "lanmonitor.io", Resource: "lanmonitornodes",
			Subresource: "traffic", Name: node, ResourceRequest: true}
	}
}

// Guard authenticates and authorizes requests before its handler sees them.
type Guard struct {
	authn  authenticator.Request
	authz  authorizer.Authorizer
	attrs  AttributesFunc
	public []string // paths served without credentials; a trailing / is a prefix
	log    logr.Logger
}

// Kubernetes returns a Guard that reviews bearer tokens with TokenReview
// and decisions with SubjectAccessReview on the API server of cfg, with
// the request's attributes from attrs; public paths (exact, or prefixes
// ending in /) need no credentials. Errors: a bad cfg.
func Kubernetes(cfg *rest.Config, attrs AttributesFunc, log logr.Logger, public ...string) (*Guard, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	authnClient, err := authenticationv1.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	authzClient, err := authorizationv1.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	backoff := &wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}
	authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		Anonymous:                &apiserver.AnonymousAuthConfig{Enabled: false},
		CacheTTL:                 time.Minute,
		TokenAccessReviewClient:  authnClient,
		TokenAccessReviewTimeout: 10 * time.Second,
		WebhookRetryBackoff:      backoff,
	}.New()
	if err != nil {
		return nil, fmt.Errorf("create the TokenReview authenticator: %w", err)
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: authzClient,
		AllowCacheTTL:             5 * time.Minute,
		DenyCacheTTL:              30 * time.Second,
		WebhookRetryBackoff:       backoff,
	}.New()
	if err != nil {
		return nil, fmt.Errorf("create the SubjectAccessReview authorizer: %w", err)
	}
	return &Guard{authn: authn, authz: authz, attrs: attrs, public: public, log: log}, nil
}

// StaticToken returns a Guard that lets in requests carrying token as
// bearer token (compared in constant time), as user "standalone"; public
// paths need none. Errors: an empty token.
func StaticToken(token string, log logr.Logger, public ...string) (*Guard, error) {
	if token == "" {
		return nil, errors.New("the token is empty")
	}
	want := []byte(token)
	authn := bearertoken.New(authenticator.TokenFunc(func(_ context.Context, got string) (*authenticator.Response, bool, error) {
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			return nil, false, nil
		}
		return &authenticator.Response{User: &user.DefaultInfo{Name: "standalone"}}, true, nil
	}))
	return &Guard{authn: authn, authz: authorizerfactory.NewAlwaysAllowAuthorizer(), attrs: NonResource, public: public, log: log}, nil
}

// ReadTokenFile reads a bearer token from path: the file's content with
// surrounding white space removed. Errors: unreadable or empty file.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%s: empty token", path)
	}
	return t, nil
}

// decision is the outcome of checking a request.
type decision int

const (
	allowed decision = iota
	unauthenticated
	forbidden
	failed
)

// check authenticates r (bearer token, else the sign-in cookie) and
// authorizes it as attrs(r) says.
func (g *Guard) check(r *http.Request) (decision, string) {
	if r.Header.Get("Authorization") == "" {
		if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+c.Value)
		}
	}
	res, ok, err := g.authn.AuthenticateRequest(r)
	if err != nil {
		// The bearer token authenticator answers an invalid token with an
		// error too, so this is not necessarily a failure of ours: 401,
		// logged at V(1) (a failed TokenReview call is logged by
		// k8s.io/apiserver itself).
		g.log.V(1).Info("authentication failed", "error", err.Error())
		return unauthenticated, ""
	}
	if !ok {
		return unauthenticated, ""
	}
	attrs := g.attrs(r)
	attrs.User = res.User
	d, reason, err := g.authz.Authorize(r.Context(), attrs)
	if err != nil {
		g.log.Error(err, "authorization failed", "user", res.User.GetName())
		return failed, res.User.GetName()
	}
	if d != authorizer.DecisionAllow {
		g.log.V(1).Info("forbidden", "user", res.User.GetName(), "reason", reason)
		return forbidden, res.User.GetName()
	}
	return allowed, res.User.GetName()
}

func (g *Guard) isPublic(path string) bool {
	for _, p := range g.public {
		if path == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(path, p)) {
			return true
		}
	}
	return false
}

// Wrap returns h behind g: public paths go straight to h; /login and
// /logout are the sign-in (see the package doc); any other request needs
// credentials allowed by the authorizer. Answers: 401 (no or bad
// credentials, with WWW-Authenticate: Bearer), 403 (authenticated, not
// allowed), 500 (the API server could not be asked), JSON
// {"error": "..."}; a browser asking for the page (GET / accepting
// text/html) is sent to the sign-in form instead.
func (g *Guard) Wrap(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/login", g.login)
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "login", http.StatusSeeOther)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if g.isPublic(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		d, name := g.check(r)
		page := r.URL.Path == "/" && r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html")
		switch d {
		case allowed:
			h.ServeHTTP(w, r)
		case unauthenticated:
			if page {
				http.Redirect(w, r, "login", http.StatusSeeOther)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="lanmonitor"`)
			writeError(w, http.StatusUnauthorized, "Unauthorized: send a bearer token (Authorization: Bearer ...) or sign in at /login")
		case forbidden:
			if page {
				http.Redirect(w, r, "login?forbidden=1", http.StatusSeeOther)
				return
			}
			writeError(w, http.StatusForbidden, fmt.Sprintf("Forbidden: user %q may not %s %s", name, r.Method, r.URL.Path))
		default:
			writeError(w, http.StatusInternalServerError, "the authorization check failed (is the API server reachable?)")
		}
	})
	return mux
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{%q: %q}\n", "error", msg)
}
