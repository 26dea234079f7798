package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"

	"github.com/lanmonitor/lanmonitor/internal/secureserve"
)

// Serving says how the agent serves its HTTP endpoints (the JSON API, the
// event stream, the dashboard, /metrics and the probes).
type Serving struct {
	// Listen are the addresses (host:port) to serve on. All are bound
	// before the agent changes anything on the machine.
	Listen []string
	// CertDir holds tls.crt and tls.key (PEM), reloaded when they change;
	// empty, or without the files: a self-signed certificate made at start.
	CertDir string
	// TokenFile (standalone mode) holds the bearer token clients must send;
	// set, the endpoints are served over HTTPS.
	TokenFile string
	// Insecure serves plain HTTP without authentication, on any address.
	Insecure bool
	// Disabled serves nothing: the agent's logic alone (Kubernetes mode
	// on kernel/fake, in tests and benchmarks of many nodes).
	Disabled bool
}

// publicPaths are served without credentials: the probes say ok or why
// not ready, the page's static files are those of the binary.
var publicPaths = []string{"/healthz", "/readyz", "/ui/"}

// server is the agent's HTTP server on its bound listeners.
type server struct {
	lns  []net.Listener
	srv  *http.Server
	tls  bool
	errs chan error
}

// bind binds every address of s.Listen (each once). Errors: the first that fails
// (address in use, not local), with every listener closed again.
func (s Serving) bind() ([]net.Listener, error) {
	if len(s.Listen) == 0 {
		return nil, errors.New("--listen: no address")
	}
	var lns []net.Listener
	seen := map[string]bool{}
	for _, a := range s.Listen {
		// The chart's $(HOST_IP) may be 127.0.0.1 too (a one-node lab).
		if seen[a] {
			continue
		}
		seen[a] = true
		ln, err := net.Listen("tcp", a)
		if err != nil {
			closeListeners(lns)
			return nil, fmt.Errorf("--listen %s: %w", a, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// closeListeners closes what bind bound.
func closeListeners(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// isLoopback reports whether address host:port is on a loopback address
// only ("" and unspecified addresses are every address: not loopback).
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// standaloneGuard decides how a standalone agent serves: plain HTTP
// without authentication on loopback addresses only; with TokenFile,
// HTTPS and that bearer token; elsewhere only with Insecure. Errors: a
// non-loopback address with neither, an unreadable or empty token file.
func (s Serving) standaloneGuard(log *slog.Logger) (*secureserve.Guard, error) {
	if s.TokenFile != "" {
		token, err := secureserve.ReadTokenFile(s.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("--auth-token-file: %w", err)
		}
		return secureserve.StaticToken(token, logr.FromSlogHandler(log.Handler()), publicPaths...)
	}
	for _, a := range s.Listen {
		if !isLoopback(a) && !s.Insecure {
			return nil, fmt.Errorf("--listen %s is not a loopback address: set --auth-token-file FILE (clients then send its token as "+
				"\"Authorization: Bearer TOKEN\", over HTTPS) or --insecure-listen to serve it to anyone who can reach it", a)
		}
	}
	return nil, nil
}

// start serves h on lns: behind guard (nil: no authentication) and over
// TLS when guard is set, else plain HTTP. It logs which.
func (s Serving) start(ctx context.Context, log *slog.Logger, lns []net.Listener, h http.Handler, guard *secureserve.Guard, hosts ...string) (*server, error) {
	srv := &server{lns: lns, errs: make(chan error, len(lns)), srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
	addrs := make([]string, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr().String()
	}
	if guard != nil {
		for _, ln := range lns {
			if host, _, err := net.SplitHostPort(ln.Addr().String()); err == nil {
				hosts = append(hosts, host)
			}
		}
		cfg, self, err := secureserve.TLSConfig(ctx, logr.FromSlogHandler(log.Handler()), s.CertDir, hosts...)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert-dir: %w", err)
		}
		srv.srv.Handler = guard.Wrap(h)
		srv.srv.TLSConfig = cfg
		srv.tls = true
		log.Info("serving HTTPS with authentication", "addresses", addrs, "selfSignedCertificate", self)
	} else if s.Insecure {
		log.Warn("serving plain HTTP WITHOUT authentication (--insecure-listen): anyone who reaches these addresses reads the traffic report", "addresses", addrs)
	} else {
		log.Info("serving plain HTTP without authentication on loopback only", "addresses", addrs)
	}
	for _, ln := range lns {
		go func() {
			var err error
			if srv.tls {
				err = srv.srv.ServeTLS(ln, "", "")
			} else {
				err = srv.srv.Serve(ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				srv.errs <- err
			}
		}()
	}
	return srv, nil
}

// scheme is the URL scheme the server answers.
func (s *server) scheme() string {
	if s.tls {
		return "https"
	}
	return "http"
}

// shutdown stops serving, waiting up to 5 s for requests in flight.
func (s *server) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}

// kubernetesGuard is the guard of the agent of node: TokenReview and
// SubjectAccessReview on the API server of rc (secureserve.Agent), or nil
// with Insecure.
func (s Serving) kubernetesGuard(rc *rest.Config, node string, log *slog.Logger) (*secureserve.Guard, error) {
	if s.Insecure {
		return nil, nil
	}
	return secureserve.Kubernetes(rc, secureserve.Agent(node), logr.FromSlogHandler(log.Handler()), publicPaths...)
}
