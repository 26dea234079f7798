package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/lanmonitor/lanmonitor/controllers"
	"github.com/lanmonitor/lanmonitor/internal/secureserve"
)

// addDashboard adds the cluster dashboard to mgr: the roll-up loop and its
// HTTPS server, on every replica (they only read the cache).
func addDashboard(mgr ctrl.Manager, cfg *rest.Config, o options) error {
	log := ctrl.Log.WithName("dashboard")
	d := controllers.NewDashboard(mgr.GetClient(), o.dashboardEvery)
	guard, err := secureserve.Kubernetes(cfg, secureserve.Resource("lanmonitor.io", "lanmonitors", "list"), log, "/healthz", "/ui/")
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	secureserve.Hint = "kubectl create token <service-account> -n <namespace>  (a service account allowed to list lanmonitors)"
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("/", d.Handler())
	srv := &dashboardServer{addr: o.dashboardAddr, certDir: o.dashboardCerts, handler: guard.Wrap(mux), log: log}
	for _, r := range []manager.Runnable{d, srv} {
		if err := mgr.Add(r); err != nil {
			return fmt.Errorf("dashboard: %w", err)
		}
	}
	return nil
}

// dashboardServer serves the dashboard over HTTPS until the manager stops.
type dashboardServer struct {
	addr, certDir string
	handler       http.Handler
	log           logr.Logger
}

// NeedLeaderElection is false: every replica serves the dashboard.
func (s *dashboardServer) NeedLeaderElection() bool { return false }

// Start binds the address and serves until ctx ends.
func (s *dashboardServer) Start(ctx context.Context) error {
	cfg, self, err := secureserve.TLSConfig(ctx, s.log, s.certDir)
	if err != nil {
		return fmt.Errorf("--dashboard-cert-dir: %w", err)
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("--dashboard-bind-address: %w", err)
	}
	srv := &http.Server{Handler: s.handler, TLSConfig: cfg, ReadHeaderTimeout: 5 * time.Second}
	s.log.Info("serving the cluster dashboard over HTTPS", "address", ln.Addr().String(), "selfSignedCertificate", self)
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve the dashboard: %w", err)
	}
}
