// Package demo brings up lanmonitor for real on one machine: etcd and
// kube-apiserver on loopback, the CRDs and RBAC rendered from the Helm chart,
// a lab LAN of network namespaces (nodes and hosts on a hub, so that nodes in
// promiscuous mode see the hosts' conversations), the controller and one
// agent per lab node run with the chart's arguments and the chart's service
// accounts, the samples applied, and steady traffic. `make demo` and the
// end-to-end tests are built on it.
//
// Nothing is created in the machine's root network namespace: the agents run
// there but enter their node's namespace (--netns) for netlink and attach;
// every lab address is in 198.18.0.0/15 or 2001:db8::/32.
package demo

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/internal/lab"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

// Namespace is where the chart's namespaced objects go.
const Namespace = "lanmonitor-system"

// Options configure Up.
type Options struct {
	// Repo is the repository root (charts/, config/samples/).
	Repo string
	// Bin holds lanmonitor-controller and lanmonitor-agent.
	Bin string
	// Assets holds kube-apiserver and etcd (hack/tools.sh controlplane).
	Assets string
	// Helm is the helm binary (hack/tools.sh helm).
	Helm string
	// StateDir receives the kubeconfigs and the processes' logs.
	StateDir string
	// Prefix names the lab's namespaces (e.g. "lmdemo-").
	Prefix string
	// Nodes is the number of lab nodes (default 3).
	Nodes int
	// NoSamples and NoTraffic leave the samples unapplied and the LAN
	// quiet (the end-to-end tests apply their own).
	NoSamples, NoTraffic bool
	// Logf reports progress (default: discard).
	Logf func(format string, args ...any)
}

// Node is one lab node: a namespace whose lan0 an agent watches.
type Node struct {
	Name  string
	NS    *lab.NS
	IPv4  netip.Addr
	IPv6  netip.Addr
	API   string // the agent's JSON API and dashboard, https://127.0.0.1:PORT
	Agent *Process
}

// Host is one lab host: a namespace that sends traffic.
type Host struct {
	Name       string
	NS         *lab.NS
	IPv4, IPv6 netip.Addr
}

// Demo is a running lanmonitor on a lab LAN.
type Demo struct {
	o Options

	// Kubeconfig is the administrator's kubeconfig file.
	Kubeconfig string
	// Config and Client reach the API server as administrator.
	Config *rest.Config
	Client client.Client

	Lab        *lab.Lab
	Switch     *lab.NS
	Nodes      []*Node
	Hosts      map[string]*Host
	Controller *Process
	// ClusterDashboard is the controller's dashboard, https://127.0.0.1:PORT.
	ClusterDashboard string
	// ViewerToken is a token of the service account lanmonitor-viewer,
	// bound to the chart's dashboard-viewer and metrics-reader ClusterRoles:
	// it reads every agent's API, metrics and dashboard and the cluster
	// dashboard. ViewerTokenFile holds it.
	ViewerToken, ViewerTokenFile string
	Flows                        []*Sender
	// Sinks receive the flows' datagrams in every node and host, by name.
	Sinks map[string]*Sink

	env          *envtest.Environment
	apiArgv      []string
	restartedAPI *Process
	pinRoot      string
	mu           sync.Mutex
	procs        []*Process
}

// The lab's addresses: nodes .11+, hosts .21+, the blocked host .66 (the
// sample IPBlock names it), all in 198.18.0.0/24 and 2001:db8::/64.
var (
	lanPrefix4 = netip.MustParsePrefix("198.18.0.0/24")
	lanPrefix6 = netip.MustParsePrefix("2001:db8::/64")
)

// lanAddr gives host number last (decimal) 198.18.0.<last> and
// 2001:db8::<last>, the same digits in both (66 -> 2001:db8::66).
func lanAddr(last byte) (netip.Addr, netip.Addr) {
	bcd := uint16(last/100)<<8 | uint16(last/10%10)<<4 | uint16(last%10)
	return netip.AddrFrom4([4]byte{198, 18, 0, last}), netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(bcd >> 8), 15: byte(bcd)})
}

// Up brings the demo up; on error it tears down what it made.
func Up(ctx context.Context, o Options) (d *Demo, err error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(filepath.Join(o.StateDir, "logs"), 0o755); err != nil {
		return nil, err
	}
	d = &Demo{o: o, Hosts: map[string]*Host{}, pinRoot: "/sys/fs/bpf/" + strings.TrimSuffix(o.Prefix, "-")}
	defer func() {
		if err != nil {
			d.Down()
		}
	}()
	if err := lab.RootForwardingOff(); err != nil {
		return nil, fmt.Errorf("refusing to build a lab LAN: %w", err)
	}
	if err := d.controlPlane(ctx); err != nil {
		return nil, err
	}
	if err := d.installChart(ctx); err != nil {
		return nil, err
	}
	if err := d.buildLAN(); err != nil {
		return nil, err
	}
	if err := d.registerNodes(ctx); err != nil {
		return nil, err
	}
	if err := d.startProcesses(ctx); err != nil {
		return nil, err
	}
	if !o.NoSamples {
		if err := d.ApplyFile(ctx, filepath.Join(o.Repo, "config/samples/lanmonitor_v1alpha1_lanmonitor.yaml")); err != nil {
			return nil, err
		}
		if err := d.ApplyFile(ctx, filepath.Join(o.Repo, "config/samples/lanmonitor_v1alpha1_ipblock.yaml")); err != nil {
			return nil, err
		}
	}
	if !o.NoTraffic {
		if err := d.startTraffic(ctx); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// controlPlane starts etcd and kube-apiserver on loopback (envtest's
// certificates and flags) and writes the administrator's kubeconfig.
func (d *Demo) controlPlane(ctx context.Context) error {
	d.o.Logf("starting etcd and kube-apiserver from %s", d.o.Assets)
	d.env = &envtest.Environment{BinaryAssetsDirectory: d.o.Assets, ControlPlaneStartTimeout: 2 * time.Minute, ControlPlaneStopTimeout: time.Minute}
	cfg, err := d.env.Start()
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	d.Config = cfg
	if d.Client, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()}); err != nil {
		return err
	}
	d.Kubeconfig = filepath.Join(d.o.StateDir, "kubeconfig")
	return writeKubeconfig(d.Kubeconfig, cfg.Host, cfg.CAData, &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData})
}

func writeKubeconfig(path, server string, ca []byte, user *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lanmonitor-demo"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["user"] = user
	cfg.Contexts["lanmonitor-demo"] = &clientcmdapi.Context{Cluster: "lanmonitor-demo", AuthInfo: "user"}
	cfg.CurrentContext = "lanmonitor-demo"
	return clientcmd.WriteToFile(*cfg, path)
}

// installChart renders the Helm chart and applies what a cluster without
// kubelets can use: the CRDs, the namespace, the ServiceAccounts and the
// RBAC. The controller and the agents then run as the chart's service
// accounts, with exactly the chart's permissions.
func (d *Demo) installChart(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, d.o.Helm, "template", "lanmonitor", filepath.Join(d.o.Repo, "charts/lanmonitor"),
		"--namespace", Namespace, "--include-crds").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("helm template: %w: %s", err, ee.Stderr)
		}
		return fmt.Errorf("helm template: %w", err)
	}
	objs, err := decodeYAML(out)
	if err != nil {
		return err
	}
	if err := d.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	n := 0
	for _, kind := range []string{"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
		for _, o := range objs {
			if o.GetKind() != kind || o.GetAnnotations()["helm.sh/hook"] != "" {
				continue
			}
			if err := d.Client.Patch(ctx, o, client.Apply, client.FieldOwner("lanmonitor-demo"), client.ForceOwnership); err != nil {
				return fmt.Errorf("apply %s %s: %w", kind, o.GetName(), err)
			}
			n++
		}
	}
	d.o.Logf("applied the chart's CRDs, ServiceAccounts and RBAC (%d objects) from charts/lanmonitor", n)
	// The CRDs must be served before anything uses them.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var l v1alpha1.LanMonitorList
		err := d.Client.List(ctx, &l)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CRDs not served: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func decodeYAML(raw []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// buildLAN makes the lab: a hub (bridge with ageing 0) in a switch
// namespace, nodes and hosts each on a veth to it.
func (d *Demo) buildLAN() error {
	var err error
	if d.Lab, err = lab.NewNamed(d.o.Prefix); err != nil {
		return err
	}
	if d.Switch, err = d.Lab.AddNS("switch"); err != nil {
		return err
	}
	var ports []string
	attach := func(name string, last byte) (*lab.NS, netip.Addr, netip.Addr, error) {
		ns, err := d.Lab.AddNS(name)
		if err != nil {
			return nil, netip.Addr{}, netip.Addr{}, err
		}
		ifname := "lan0"
		if !strings.HasPrefix(name, "node") {
			ifname = "eth0"
		}
		port := "p-" + name
		if err := d.Lab.Veth(ns, ifname, d.Switch, port, lab.VethOptions{}); err != nil {
			return nil, netip.Addr{}, netip.Addr{}, err
		}
		ports = append(ports, port)
		a4, a6 := lanAddr(last)
		for _, p := range []netip.Prefix{netip.PrefixFrom(a4, lanPrefix4.Bits()), netip.PrefixFrom(a6, lanPrefix6.Bits())} {
			if err := ns.AddAddr(ifname, p); err != nil {
				return nil, netip.Addr{}, netip.Addr{}, err
			}
		}
		return ns, a4, a6, nil
	}
	for i := range d.o.Nodes {
		name := fmt.Sprintf("node%d", i+1)
		ns, a4, a6, err := attach(name, byte(11+i))
		if err != nil {
			return err
		}
		// A default route through lan0, so that a LanMonitor without an
		// interface picks lan0 (the gateway is never sent to).
		if err := addDefaultRoutes(ns, "lan0"); err != nil {
			return err
		}
		d.Nodes = append(d.Nodes, &Node{Name: name, NS: ns, IPv4: a4, IPv6: a6})
	}
	for _, h := range []struct {
		name string
		last byte
	}{{"heavy", 21}, {"light1", 22}, {"light2", 23}, {"talk1", 24}, {"talk2", 25}, {"blocked", 66}} {
		ns, a4, a6, err := attach(h.name, h.last)
		if err != nil {
			return err
		}
		d.Hosts[h.name] = &Host{Name: h.name, NS: ns, IPv4: a4, IPv6: a6}
	}
	if err := d.Switch.Bridge("br0", true, ports...); err != nil {
		return err
	}
	d.o.Logf("lab LAN up: %d nodes and %d hosts on a hub in namespaces %s*", len(d.Nodes), len(d.Hosts), d.Lab.Prefix())
	return nil
}

// Gateway addresses of the lab (no host has them; nothing is sent to them).
var (
	gateway4 = netip.MustParseAddr("198.18.0.254")
	gateway6 = netip.MustParseAddr("2001:db8::fe")
)

func addDefaultRoutes(ns *lab.NS, ifname string) error {
	l, err := ns.Link(ifname)
	if err != nil {
		return err
	}
	for _, gw := range []netip.Addr{gateway4, gateway6} {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}
		if err := ns.Netlink().RouteAdd(r); err != nil {
			return fmt.Errorf("default route via %s in %s: %w", gw, ns.Name, err)
		}
	}
	return nil
}

// registerNodes creates a Node object per lab node (there are no kubelets:
// the controller only needs the objects, their labels and addresses).
func (d *Demo) registerNodes(ctx context.Context) error {
	for _, n := range d.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
			"kubernetes.io/hostname": n.Name, "lanmonitor.io/lab": "true"}}}
		if err := d.Client.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IPv4.String()}, {Type: corev1.NodeInternalIP, Address: n.IPv6.String()}}
		if err := d.Client.Status().Update(ctx, node); err != nil {
			return err
		}
	}
	return nil
}

// tokenKubeconfig writes a kubeconfig for a service account of the chart,
// with a token from the TokenRequest API.
func (d *Demo) tokenKubeconfig(ctx context.Context, sa, file string) (string, error) {
	cs, err := kubernetes.NewForConfig(d.Config)
	if err != nil {
		return "", err
	}
	exp := int64(24 * 3600)
	tr, err := cs.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for service account %s: %w", sa, err)
	}
	path := filepath.Join(d.o.StateDir, file)
	return path, writeKubeconfig(path, d.Config.Host, d.Config.CAData, &clientcmdapi.AuthInfo{Token: tr.Status.Token})
}

// viewer creates the service account lanmonitor-viewer, binds it to the
// chart's dashboard-viewer and metrics-reader ClusterRoles, and keeps a
// 24-hour token of it in ViewerToken and StateDir/viewer.token.
func (d *Demo) viewer(ctx context.Context) error {
	const name = "lanmonitor-viewer"
	objs := []client.Object{&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace}}}
	for _, role := range []string{"lanmonitor-dashboard-viewer", "lanmonitor-metrics-reader"} {
		objs = append(objs, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-" + strings.TrimPrefix(role, "lanmonitor-")},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: Namespace}},
		})
	}
	for _, o := range objs {
		if err := d.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", o.GetName(), err)
		}
	}
	cs, err := kubernetes.NewForConfig(d.Config)
	if err != nil {
		return err
	}
	exp := int64(24 * 3600)
	tr, err := cs.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for service account %s: %w", name, err)
	}
	d.ViewerToken = tr.Status.Token
	d.ViewerTokenFile = filepath.Join(d.o.StateDir, "viewer.token")
	return os.WriteFile(d.ViewerTokenFile, []byte(d.ViewerToken+"\n"), 0o600)
}

// Get sends GET url (an agent's or the cluster dashboard's) with the
// viewer's token, trusting their self-signed certificates (the demo's
// processes make them at start).
func (d *Demo) Get(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.ViewerToken)
	return insecureClient.Do(req)
}

// insecureClient trusts any certificate: the demo's are self-signed, and
// reached on loopback only.
var insecureClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

// startProcesses runs the controller and one agent per node with the
// arguments the chart gives them, as the chart's service accounts. The
// listen addresses move to loopback ports, since every process shares the
// machine's network namespace here.
func (d *Demo) startProcesses(ctx context.Context) error {
	ckc, err := d.tokenKubeconfig(ctx, "lanmonitor-controller", "controller.kubeconfig")
	if err != nil {
		return err
	}
	akc, err := d.tokenKubeconfig(ctx, "lanmonitor-agent", "agent.kubeconfig")
	if err != nil {
		return err
	}
	d.Controller, err = d.start("controller", filepath.Join(d.o.Bin, "lanmonitor-controller"), nil,
		"--kubeconfig", ckc, "--leader-elect=true", "--leader-election-namespace", Namespace,
		"--metrics-bind-address", "127.0.0.1:18080", "--health-probe-bind-address", "127.0.0.1:18081",
		"--dashboard-bind-address", "127.0.0.1:19480", "--dashboard-interval", "2s")
	if err != nil {
		return err
	}
	d.ClusterDashboard = "https://127.0.0.1:19480"
	if err := d.viewer(ctx); err != nil {
		return err
	}
	if err := os.MkdirAll(d.pinRoot, 0o700); err != nil {
		return err
	}
	for i, n := range d.Nodes {
		listen := fmt.Sprintf("127.0.0.1:%d", 19471+i)
		n.API = "https://" + listen
		// One bpffs serves every lab node here, so each agent gets its
		// own pin root (on a real node it is /sys/fs/bpf/lanmonitor).
		n.Agent, err = d.start("agent-"+n.Name, filepath.Join(d.o.Bin, "lanmonitor-agent"), []string{"NODE_NAME=" + n.Name},
			"kubernetes", "--kubeconfig", akc, "--listen", listen, "--log-format", "json",
			"--netns", n.NS.Path, "--pin-root", filepath.Join(d.pinRoot, n.Name))
		if err != nil {
			return err
		}
	}
	d.o.Logf("controller and %d agents running (logs in %s)", len(d.Nodes), filepath.Join(d.o.StateDir, "logs"))
	return nil
}

// Process is a child process of the demo, restarted when it exits, as a
// kubelet restarts a pod's container (the controller exits when it loses
// its leader lease, for one).
type Process struct {
	Name string
	Log  string

	bin  string
	args []string
	env  []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	running  chan struct{} // closed when the current run exits
	restarts int
	stopped  bool
	final    chan struct{} // closed when Stop has ended the process for good
}

// restartDelay is how long an exited process waits before it starts again.
const restartDelay = 2 * time.Second

func (d *Demo) start(name, bin string, env []string, args ...string) (*Process, error) {
	p := &Process{Name: name, Log: filepath.Join(d.o.StateDir, "logs", name+".log"), bin: bin, args: args, env: env, final: make(chan struct{})}
	if err := p.run(); err != nil {
		return nil, err
	}
	go p.supervise()
	d.mu.Lock()
	d.procs = append(d.procs, p)
	d.mu.Unlock()
	return p, nil
}

// run starts one run of the process, its output appended to the log.
func (p *Process) run() error {
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if p.env != nil {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := lab.Start(cmd); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	running := make(chan struct{})
	go func() {
		cmd.Wait()
		f.Close()
		close(running)
	}()
	p.mu.Lock()
	p.cmd, p.running = cmd, running
	p.mu.Unlock()
	return nil
}

func (p *Process) supervise() {
	for {
		p.mu.Lock()
		running := p.running
		p.mu.Unlock()
		<-running
		time.Sleep(restartDelay)
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			close(p.final)
			return
		}
		p.restarts++
		p.mu.Unlock()
		if err := p.run(); err != nil {
			fmt.Fprintf(os.Stderr, "demo: restart %s: %v\n", p.Name, err)
			close(p.final)
			return
		}
	}
}

// Kill sends sig to the running process; it is restarted after it exits.
func (p *Process) Kill(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Signal(sig)
}

// Restarts is how many times the process was started again.
func (p *Process) Restarts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restarts
}

// Stop ends the process for good: SIGTERM, and SIGKILL after wait.
func (p *Process) Stop(wait time.Duration) error {
	p.mu.Lock()
	p.stopped = true
	cmd, running := p.cmd, p.running
	p.mu.Unlock()
	cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case <-running:
	case <-time.After(wait):
		cmd.Process.Kill()
		<-running
		err = fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.Name, wait)
	}
	<-p.final
	return err
}

// The demo's traffic: rates in frames per second, payloads in bytes.
const (
	SinkPort     = 5001
	HeavyPPS     = 1000 // about 8.3 Mbit/s of 1042-byte frames
	HeavyPayload = 1000
)

// startTraffic starts sinks on every node and host and the demo's flows:
// a heavy host and two light ones (one over IPv6) talking to nodes, the
// blocked host (198.18.0.66) talking to node2, and two hosts talking to each
// other, which the nodes see only because they are promiscuous.
func (d *Demo) startTraffic(ctx context.Context) error {
	if err := d.startSinks(); err != nil {
		return err
	}
	node := func(i int) *Node { return d.Nodes[i%len(d.Nodes)] }
	h := d.Hosts
	flows := []Flow{
		{Name: "heavy", From: h["heavy"].NS, Src: h["heavy"].IPv4, Dst: node(0).IPv4, Payload: HeavyPayload, PPS: HeavyPPS},
		{Name: "light1", From: h["light1"].NS, Src: h["light1"].IPv4, Dst: node(1).IPv4, Payload: 200, PPS: 100},
		{Name: "light2-ipv6", From: h["light2"].NS, Src: h["light2"].IPv6, Dst: node(2).IPv6, Payload: 400, PPS: 150},
		{Name: "blocked", From: h["blocked"].NS, Src: h["blocked"].IPv4, Dst: node(1).IPv4, Payload: 100, PPS: 50},
		{Name: "talk1-to-talk2", From: h["talk1"].NS, Src: h["talk1"].IPv4, Dst: h["talk2"].IPv4, Payload: 600, PPS: 200},
		{Name: "talk2-to-talk1", From: h["talk2"].NS, Src: h["talk2"].IPv4, Dst: h["talk1"].IPv4, Payload: 300, PPS: 200},
	}
	for _, f := range flows {
		if _, err := d.StartFlow(ctx, f); err != nil {
			return err
		}
	}
	d.o.Logf("traffic: heavy %s at %.1f Mbit/s, light hosts, IPv6, blocked %s, and a conversation %s <-> %s",
		h["heavy"].IPv4, float64(flows[0].BitsPerSecond())/1e6, h["blocked"].IPv4, h["talk1"].IPv4, h["talk2"].IPv4)
	return nil
}

// startSinks listens on SinkPort in every node and host, once.
func (d *Demo) startSinks() error {
	if d.Sinks != nil {
		return nil
	}
	d.Sinks = map[string]*Sink{}
	add := func(name string, ns *lab.NS) error {
		k, err := StartSink(ns, SinkPort)
		if err != nil {
			return err
		}
		d.Sinks[name] = k
		return nil
	}
	for _, n := range d.Nodes {
		if err := add(n.Name, n.NS); err != nil {
			return err
		}
	}
	for _, h := range d.Hosts {
		if err := add(h.Name, h.NS); err != nil {
			return err
		}
	}
	return nil
}

// StartFlow starts one more flow (sinks are started if needed).
func (d *Demo) StartFlow(ctx context.Context, f Flow) (*Sender, error) {
	if err := d.startSinks(); err != nil {
		return nil, err
	}
	if f.Port == 0 {
		f.Port = SinkPort
	}
	s, err := StartFlow(ctx, f)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.Flows = append(d.Flows, s)
	d.mu.Unlock()
	return s, nil
}

// ApplyFile applies the objects of a YAML file (server-side apply, as
// `kubectl apply --server-side` would).
func (d *Demo) ApplyFile(ctx context.Context, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	objs, err := decodeYAML(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, o := range objs {
		if err := d.Client.Patch(ctx, o, client.Apply, client.FieldOwner("lanmonitor-demo"), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// Down stops everything Up started and removes the lab, the pins and the
// control plane's data. It first deletes the LanMonitors so that the
// agents release their interfaces as in a cluster, then stops the
// processes. Safe to call on a half-built demo.
func (d *Demo) Down() error {
	var errs []error
	for _, f := range d.Flows {
		f.Stop()
	}
	for _, k := range d.Sinks {
		k.Close()
	}
	if d.Client != nil && len(d.Nodes) > 0 && d.Controller != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if err := d.Client.DeleteAllOf(ctx, &v1alpha1.LanMonitor{}); err == nil {
			d.waitReleased(ctx)
		}
		cancel()
	}
	d.mu.Lock()
	procs := d.procs
	d.mu.Unlock()
	for _, p := range procs {
		if err := p.Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if d.env != nil {
		if err := d.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop control plane: %w", err))
		}
	}
	if d.Lab != nil {
		if err := d.Lab.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(d.pinRoot); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitReleased waits until no node's XDP program is attached any more.
func (d *Demo) waitReleased(ctx context.Context) {
	for ctx.Err() == nil {
		attached := false
		for _, n := range d.Nodes {
			if l, err := n.NS.Link("lan0"); err == nil && l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
				attached = true
			}
		}
		if !attached {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// StopAPIServer stops kube-apiserver (etcd keeps running) as an outage
// would: the process is terminated, and StartAPIServer starts the same
// command line again (same port, certificates and keys, so every client's
// kubeconfig stays valid).
func (d *Demo) StopAPIServer() error {
	if d.restartedAPI != nil {
		err := d.restartedAPI.Stop(30 * time.Second)
		d.restartedAPI = nil
		return err
	}
	pid, argv, err := testenv.APIServerProcess(d.Config.Host)
	if err != nil {
		return err
	}
	d.apiArgv = argv
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	for deadline := time.Now().Add(30 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return nil
}

// StartAPIServer starts kube-apiserver again after StopAPIServer and waits
// until it serves.
func (d *Demo) StartAPIServer(ctx context.Context) error {
	if d.apiArgv == nil {
		return errors.New("kube-apiserver was not stopped by StopAPIServer")
	}
	p, err := d.start("kube-apiserver", d.apiArgv[0], nil, d.apiArgv[1:]...)
	if err != nil {
		return err
	}
	d.restartedAPI = p
	cs, err := kubernetes.NewForConfig(d.Config)
	if err != nil {
		return err
	}
	for {
		if _, err := cs.Discovery().ServerVersion(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
