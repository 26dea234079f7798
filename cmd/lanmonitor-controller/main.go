// Command lanmonitor-controller runs the lanmonitor controller: it turns
// LanMonitors and IPBlocks into one LanMonitorNode spec per node, assigns
// IPBlock rule IDs, and rolls the nodes' reports up into LanMonitor and
// IPBlock status. Run it as a Deployment; leader election (on by default)
// keeps one replica active.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/controllers"
)

type options struct {
	metricsAddr     string
	metricsSecure   bool
	metricsCertDir  string
	dashboardAddr   string
	dashboardCerts  string
	dashboardEvery  time.Duration
	probeAddr       string
	leaderElect     bool
	leaseName       string
	leaseNamespace  string
	leaseDuration   time.Duration
	qps             float32
	burst           int
	nodeWorkers     int
	statusWorkers   int
	zap             zap.Options
	shutdownTimeout time.Duration
}

func main() {
	if err := newCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	o := options{zap: zap.Options{}}
	cmd := &cobra.Command{
		Use:   "lanmonitor-controller",
		Short: "Reconcile LanMonitors and IPBlocks into per-node LanMonitorNodes and roll the node reports up",
		Long: `lanmonitor-controller selects nodes for every LanMonitor and writes one
LanMonitorNode spec per node (resolved configuration, applicable IPBlocks,
protected API server endpoints), assigns IPBlock rule IDs, expires blocks,
and rolls the nodes' reports up into LanMonitor and IPBlock status.

Every replica serves the cluster dashboard on --dashboard-bind-address
(HTTPS; every request but /healthz and the page's static files needs a
bearer token, or the page's sign-in cookie, of a user allowed to list
lanmonitors.lanmonitor.io) and /metrics on --metrics-bind-address (HTTPS,
for callers allowed get on the non-resource URL /metrics).`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", `address of the Prometheus metrics endpoint ("0" turns it off)`)
	f.BoolVar(&o.metricsSecure, "metrics-secure", true, "serve /metrics over HTTPS to callers whose token the API server accepts (TokenReview) and allows get on the non-resource URL /metrics (SubjectAccessReview); false: plain HTTP to anyone")
	f.StringVar(&o.metricsCertDir, "metrics-cert-dir", "", "directory with tls.crt and tls.key for /metrics (default: a self-signed certificate)")
	f.StringVar(&o.dashboardAddr, "dashboard-bind-address", ":9480", `address of the cluster dashboard, HTTPS, for users allowed to list lanmonitors ("0" turns it off)`)
	f.StringVar(&o.dashboardCerts, "dashboard-cert-dir", "", "directory with tls.crt and tls.key for the dashboard (default: a self-signed certificate)")
	f.DurationVar(&o.dashboardEvery, "dashboard-interval", controllers.DefaultDashboardInterval, "how often the dashboard rolls the node reports up into an event")
	f.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	f.BoolVar(&o.leaderElect, "leader-elect", true, "elect a leader among the replicas so that only one writes")
	f.StringVar(&o.leaseName, "leader-election-id", "lanmonitor-controller.lanmonitor.io", "name of the leader election Lease")
	f.StringVar(&o.leaseNamespace, "leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's namespace; required out of cluster)")
	f.DurationVar(&o.leaseDuration, "leader-election-lease-duration", 15*time.Second, "how long a non-leader waits before taking over a lease that is not renewed")
	f.Float32Var(&o.qps, "kube-api-qps", 100, "client-side limit of API requests per second (an IPBlock change is one write per node)")
	f.IntVar(&o.burst, "kube-api-burst", 200, "client-side burst of API requests")
	f.IntVar(&o.nodeWorkers, "node-workers", 4, "LanMonitorNode reconciles in parallel")
	f.IntVar(&o.statusWorkers, "status-workers", 2, "LanMonitor and IPBlock status reconciles in parallel (each)")
	f.DurationVar(&o.shutdownTimeout, "graceful-shutdown-timeout", 30*time.Second, "how long to wait for running reconciles on shutdown")
	gofs := flag.NewFlagSet("", flag.ContinueOnError)
	o.zap.BindFlags(gofs)
	f.AddGoFlagSet(gofs)
	f.AddGoFlagSet(flag.CommandLine) // --kubeconfig, registered by controller-runtime
	cmd.AddCommand(newDrainCommand(), newApplyCRDsCommand())
	return cmd
}

// metricsOptions is the metrics server of kubebuilder v4: HTTPS, and
// controller-runtime's filter authenticating and authorizing each request
// with the API server.
func metricsOptions(o options) metricsserver.Options {
	m := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: o.metricsSecure, CertDir: o.metricsCertDir}
	if o.metricsSecure {
		m.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return m
}

func run(o options) error {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(lanmonitorv1alpha1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = o.qps, o.burst
	cfg.UserAgent = "lanmonitor-controller"

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         controllers.CacheOptions(),
		Metrics:                       metricsOptions(o),
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              o.leaseName,
		LeaderElectionNamespace:       o.leaseNamespace,
		LeaseDuration:                 &o.leaseDuration,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &o.shutdownTimeout,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := controllers.Setup(mgr, controllers.Options{NodeWorkers: o.nodeWorkers, StatusWorkers: o.statusWorkers}); err != nil {
		return err
	}
	if o.dashboardAddr != "0" {
		if err := addDashboard(mgr, cfg, o); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}
	log.Info("starting", "leaderElection", o.leaderElect, "lease", o.leaseName)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}
