// Command lanmonitor-agent is lanmonitor's node agent. `lanmonitor-agent
// standalone` watches one interface of one Linux box without Kubernetes;
// `lanmonitor-agent kubernetes` runs on every node of a cluster (DaemonSet).
package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lanmonitor/lanmonitor/agent"
	"github.com/lanmonitor/lanmonitor/internal/version"
)

func main() {
	// A soft memory limit (see agent.TuneMemoryLimit), retuned after
	// every configuration load.
	agent.TuneMemoryLimit()
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lanmonitor-agent:", err)
		os.Exit(1)
	}
}

// common are the flags every mode takes.
type common struct {
	pinRoot     string
	netns       string
	maxPrefixes uint32
	maxRules    uint32
	logFormat   string
	logLevel    string
}

func (c *common) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.pinRoot, "pin-root", agent.DefaultPinRoot, "bpffs directory for the pinned maps and XDP links (one subdirectory per interface)")
	f.StringVar(&c.netns, "netns", "", "path of the network namespace holding the interface (default: the agent's own)")
	f.Uint32Var(&c.maxPrefixes, "max-prefixes", 0, "capacity of the blocklist and protected tables, in prefixes (default 262144)")
	f.Uint32Var(&c.maxRules, "max-rules", 0, "how many IPBlocks (rules) one interface can hold (default 4096)")
	f.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

func (c *common) options() (agent.Options, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return agent.Options{}, fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch c.logFormat {
	case "text":
		h = slog.NewTextHandler(os.Stderr, hopts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, hopts)
	default:
		return agent.Options{}, fmt.Errorf("--log-format: %q is neither text nor json", c.logFormat)
	}
	log := slog.New(h)
	slog.SetDefault(log)
	return agent.Options{PinRoot: c.pinRoot, NetNS: c.netns, MaxPrefixes: c.maxPrefixes, MaxRules: c.maxRules, Logger: log}, nil
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "lanmonitor-agent",
		Short:         "lanmonitor's node agent: XDP traffic counting and blocking on a LAN interface",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newStandaloneCommand(), newKubernetesCommand())
	return root
}

func newKubernetesCommand() *cobra.Command {
	var (
		c          common
		node       string
		kubeconfig string
		serving    agent.Serving
		cleanup    bool
		settle     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "kubernetes [--node-name NODE] [--kubeconfig FILE]",
		Short: "Run as the node agent of a cluster (DaemonSet): follow this node's LanMonitorNode",
		Long: `Watches the LanMonitorNode named after this node and the IPBlocks it lists,
attaches to the interfaces it names, and writes the node's report into its
status (at most once per report interval, only when something changed).
Serves the same JSON API, dashboard and /metrics as standalone mode on
--listen, over HTTPS: every request but /healthz, /readyz and the page's
static files needs a bearer token (or the dashboard's sign-in cookie) that
the API server accepts (TokenReview) and allows (SubjectAccessReview): GET
/metrics as the non-resource URL /metrics, everything else as get on
lanmonitornodes/traffic named after the node. By default it listens on
$HOST_IP (the node's InternalIP, from the downward API) and on 127.0.0.1
(for kubectl port-forward), port 9470.

On SIGTERM the programs stay attached and pinned, so a restarted or upgraded
agent pod adopts them without a gap in enforcement; an interface is released
(detached, unpinned, promiscuity restored) when the LanMonitorNode stops
naming it. --cleanup-on-exit releases everything on SIGTERM instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := c.options()
			if err != nil {
				return err
			}
			rc, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if !cmd.Flags().Changed("listen") {
				serving.Listen = defaultKubernetesListen(os.Getenv("HOST_IP"))
			}
			if settle == 0 {
				settle = -1 // written at once
			}
			return agent.RunKubernetes(ctx, agent.KubernetesOptions{NodeName: node, RESTConfig: rc, Serving: serving, CleanupOnExit: cleanup,
				TuneMemoryLimit: true, StatusSettle: settle, Manager: opts})
		},
	}
	c.register(cmd)
	cmd.Flags().StringVar(&node, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME, from the downward API)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then the in-cluster service account)")
	cmd.Flags().StringArrayVar(&serving.Listen, "listen", nil, "address of the JSON API, dashboard, /metrics and probes (repeatable; default $HOST_IP:9470 and 127.0.0.1:9470)")
	cmd.Flags().StringVar(&serving.CertDir, "tls-cert-dir", "", "directory with tls.crt and tls.key (default: a self-signed certificate)")
	cmd.Flags().BoolVar(&serving.Insecure, "insecure-listen", false, "serve plain HTTP without authentication (development only: anyone who reaches --listen reads the traffic report)")
	cmd.Flags().DurationVar(&settle, "status-settle", agent.DefaultStatusSettle, "wait this long, plus up to as long again at random, before writing the node's status after a change (0: at once); keeps a thousand nodes from writing in the same instant")
	cmd.Flags().BoolVar(&cleanup, "cleanup-on-exit", false, "on SIGTERM detach, unpin and restore every interface instead of leaving them to the next agent")
	return cmd
}

// defaultKubernetesListen is where the node agent listens by default: the
// node's own address that the API server knows (hostIP, from the downward
// API) and loopback (kubectl port-forward reaches a host-network pod there).
func defaultKubernetesListen(hostIP string) []string {
	out := []string{"127.0.0.1:9470"}
	if hostIP != "" && hostIP != "127.0.0.1" {
		out = append([]string{net.JoinHostPort(hostIP, "9470")}, out...)
	}
	return out
}

// restConfig reads --kubeconfig, else $KUBECONFIG, else the in-cluster
// configuration.
func restConfig(path string) (*rest.Config, error) {
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
	}
	return rc, nil
}

func newStandaloneCommand() *cobra.Command {
	var (
		c       common
		iface   string
		files   []string
		serving agent.Serving
		keep    bool
	)
	cmd := &cobra.Command{
		Use:   "standalone --interface IF -f FILE [-f FILE...] [--listen ADDR] [--auth-token-file FILE]",
		Short: "Monitor one interface without Kubernetes, configured by LanMonitor/IPBlock manifests",
		Long: `Attaches the XDP program to --interface, puts it in promiscuous mode (as the
LanMonitor says), applies the IPBlocks of the files (reloaded when they change)
and serves the JSON API and Prometheus metrics on --listen:

  GET /api/v1/talkers?limit=N   top talkers (limit=0: every tracked source)
  GET /api/v1/stats             cumulative counters
  GET /api/v1/blocks            per-IPBlock counters
  GET /metrics, /healthz, /readyz
  GET /                         the live dashboard

--listen is loopback (127.0.0.1:9470) by default, served over plain HTTP. Any
other address needs --auth-token-file (HTTPS, and every request but the
probes must carry "Authorization: Bearer TOKEN"; the dashboard has a sign-in
form) or an explicit --insecure-listen.

On SIGTERM or SIGINT it detaches, unpins and restores promiscuity, and exits 0
(with --keep-on-exit it leaves the program attached for the next agent).
A restarted agent adopts the pinned program and counters of the previous one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := c.options()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return agent.RunStandalone(ctx, agent.StandaloneOptions{Interface: iface, Files: files, Serving: serving, KeepOnExit: keep, Manager: opts})
		},
	}
	c.register(cmd)
	cmd.Flags().StringVarP(&iface, "interface", "i", "", "interface to monitor (required)")
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, "file of LanMonitor and IPBlock manifests (repeatable, required)")
	cmd.Flags().StringArrayVar(&serving.Listen, "listen", []string{agent.DefaultListen}, "address of the JSON API, dashboard and /metrics (repeatable)")
	cmd.Flags().StringVar(&serving.TokenFile, "auth-token-file", "", "file holding the bearer token clients must send; serves HTTPS (required for a non-loopback --listen)")
	cmd.Flags().StringVar(&serving.CertDir, "tls-cert-dir", "", "directory with tls.crt and tls.key for --auth-token-file (default: a self-signed certificate)")
	cmd.Flags().BoolVar(&serving.Insecure, "insecure-listen", false, "allow a non-loopback --listen over plain HTTP without authentication")
	cmd.Flags().BoolVar(&keep, "keep-on-exit", false, "on SIGTERM leave the program attached and pinned for the next agent to adopt (an upgrade without a gap) instead of cleaning up")
	cmd.MarkFlagRequired("interface")
	cmd.MarkFlagRequired("file")
	return cmd
}
