package localcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrAlreadyUp is returned by Up when a cluster is running.
var ErrAlreadyUp = errors.New("a cluster is already up")

// UpOptions configure Up.
type UpOptions struct {
	// KubeDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet and kubectl (hack/tools.sh cluster).
	KubeDir string
	// PauseImageTar is the sandbox image tarball (hack/images -pause).
	PauseImageTar string
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// lockFile takes an exclusive flock on LockFile, so that two ups, or an up
// and a down, never interleave. The returned function releases it.
func lockFile(logf func(string, ...any)) (func(), error) {
	f, err := os.OpenFile(LockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		logf("waiting for %s (another cluster-up or cluster-down runs)", LockFile)
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() {
		// Without a cluster the lock file goes too: nothing of the cluster
		// stays on the host.
		if !exists(Dir) && !exists(RunDir) {
			os.Remove(LockFile)
		}
		f.Close()
	}, nil
}

// Running reports whether the recorded cluster runs: its state says up
// finished and every recorded process is alive.
func Running() (*State, bool) {
	st, err := LoadState()
	if err != nil {
		return nil, false
	}
	if !st.Complete {
		return st, false
	}
	for _, p := range st.Processes {
		if !p.Alive() {
			return st, false
		}
	}
	return st, true
}

// Up starts the cluster. On failure it tears down what it started (Down)
// and returns the error. With a cluster running it returns ErrAlreadyUp.
func Up(ctx context.Context, o UpOptions) (err error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	unlock, err := lockFile(logf)
	if err != nil {
		return err
	}
	defer unlock()
	t0 := time.Now()
	if st, ok := Running(); ok {
		return fmt.Errorf("%w (started %s, node %s; KUBECONFIG=%s): make cluster-down first to start a new one",
			ErrAlreadyUp, st.Started.Format(time.RFC3339), st.NodeName, AdminKubeconfig)
	} else if st != nil || exists(Dir) || exists(RunDir) {
		return fmt.Errorf("%s holds a cluster that is not running (crashed or half started): run make cluster-down first", Dir)
	}
	if err := preflight(o); err != nil {
		return err
	}
	nodeName, nodeIP, err := nodeIdentity(logf)
	if err != nil {
		return err
	}

	// Record the host before anything changes it.
	before, err := TakeSnapshot()
	if err != nil {
		return fmt.Errorf("recording the host: %w", err)
	}
	for _, d := range []string{Dir, RunDir, LogDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := SaveSnapshot(HostBeforeFile, before); err != nil {
		return err
	}
	st := &State{Started: time.Now(), NodeName: nodeName, NodeIP: nodeIP, KubeDir: o.KubeDir}
	if err := st.save(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			logf("cluster-up failed: %v", err)
			logf("tearing down what was started (logs kept in %s until then)", LogDir)
			if derr := downLocked(DownOptions{Logf: logf}); derr != nil {
				err = errors.Join(err, fmt.Errorf("tear down: %w", derr))
			}
		}
	}()
	logf("host recorded in %s (%d sysctls, %d mounts)", HostBeforeFile, len(before.Sysctls), len(before.Mounts))

	if err := writeConfigs(nodeName, nodeIP); err != nil {
		return err
	}

	// containerd refuses HostToContainer mount propagation (the agent's
	// bpffs volume) from a private mount.
	prop, err := MountPropagation("/sys/fs/bpf")
	if err != nil {
		return err
	}
	if !strings.Contains(prop, "shared:") && !strings.Contains(prop, "master:") {
		if err := unix.Mount("", "/sys/fs/bpf", "", unix.MS_SHARED, ""); err != nil {
			return fmt.Errorf("make /sys/fs/bpf shared: %w", err)
		}
		st.BPFFSMadeShared = true
		if err := st.save(); err != nil {
			return err
		}
		logf("made /sys/fs/bpf a shared mount (was private; restored by cluster-down)")
	}

	bin := func(name string) string { return filepath.Join(o.KubeDir, name) }
	cd, err := st.startDetached("containerd", "/usr/bin/containerd", "--config", ContainerdConfig)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, cd, time.Minute, "containerd", func() error {
		return exec.Command("ctr", "--address", ContainerdSocket, "version").Run()
	}); err != nil {
		return err
	}
	if out, err := exec.Command("ctr", "--address", ContainerdSocket, "-n", ContainerdNamespace, "images", "import", o.PauseImageTar).CombinedOutput(); err != nil {
		return fmt.Errorf("import %s: %v\n%s", o.PauseImageTar, err, out)
	}
	logf("containerd up, %s imported (%.1fs)", PauseImage, time.Since(t0).Seconds())

	etcd, err := st.startDetached("etcd", bin("etcd"),
		"--name=lanmonitor-cluster", "--data-dir="+EtcdDataDir,
		fmt.Sprintf("--listen-client-urls=http://127.0.0.1:%d", EtcdPort),
		fmt.Sprintf("--advertise-client-urls=http://127.0.0.1:%d", EtcdPort),
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", EtcdPeerPort),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", EtcdPeerPort),
		fmt.Sprintf("--initial-cluster=lanmonitor-cluster=http://127.0.0.1:%d", EtcdPeerPort),
		"--unsafe-no-fsync=true", "--log-level=warn")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, etcd, time.Minute, "etcd", func() error {
		return httpOK(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/health", EtcdPort))
	}); err != nil {
		return err
	}
	pki := func(n string) string { return filepath.Join(PKIDir, n) }
	api, err := st.startDetached("kube-apiserver", bin("kube-apiserver"),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", APIServerPort), "--advertise-address="+nodeIP,
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", EtcdPort),
		"--tls-cert-file="+pki("apiserver.crt"), "--tls-private-key-file="+pki("apiserver.key"),
		"--client-ca-file="+pki("ca.crt"),
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"), "--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+pki("ca.crt"), "--kubelet-preferred-address-types=Hostname,InternalIP",
		"--service-account-key-file="+pki("sa.pub"), "--service-account-signing-key-file="+pki("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--authorization-mode=Node,RBAC", "--allow-privileged=true", "--enable-admission-plugins=NodeRestriction",
		"--profiling=false", "--v=0")
	if err != nil {
		return err
	}
	admin, err := adminClient()
	if err != nil {
		return err
	}
	if err := waitFor(ctx, api, 2*time.Minute, "kube-apiserver", func() error {
		return httpOK(admin, APIServerURL+"/readyz")
	}); err != nil {
		return err
	}
	logf("etcd and kube-apiserver up on 127.0.0.1:%d (%.1fs)", APIServerPort, time.Since(t0).Seconds())

	kcm, err := st.startDetached("kube-controller-manager", bin("kube-controller-manager"),
		"--kubeconfig="+filepath.Join(Dir, "controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(Dir, "controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(Dir, "controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ControllerManagerPort),
		"--leader-elect=false", "--use-service-account-credentials=true",
		"--service-account-private-key-file="+pki("sa.key"), "--root-ca-file="+pki("ca.crt"),
		"--cluster-signing-cert-file="+pki("ca.crt"), "--cluster-signing-key-file="+pki("ca.key"),
		"--service-cluster-ip-range="+ServiceCIDR, "--profiling=false", "--v=0")
	if err != nil {
		return err
	}
	sched, err := st.startDetached("kube-scheduler", bin("kube-scheduler"),
		"--kubeconfig="+filepath.Join(Dir, "scheduler.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(Dir, "scheduler.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(Dir, "scheduler.kubeconfig"),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", SchedulerPort),
		"--leader-elect=false", "--profiling=false", "--v=0")
	if err != nil {
		return err
	}

	if err := CreateLab(); err != nil {
		return err
	}
	st.LabCreated = true
	if err := st.save(); err != nil {
		return err
	}
	logf("lab interface: %s", LabDescription())

	kubelet, err := st.startDetached("kubelet", bin("kubelet"),
		"--config="+KubeletConfig, "--kubeconfig="+filepath.Join(Dir, "kubelet.kubeconfig"),
		"--root-dir="+KubeletRootDir, "--node-ip="+nodeIP, "--hostname-override="+nodeName, "--v=0")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, kubelet, 3*time.Minute, "node "+nodeName+" Ready", func() error {
		for _, p := range []*Proc{kcm, sched, api, etcd, cd} {
			if err := p.exitedEarly(); err != nil {
				return backoffStop{err}
			}
		}
		return nodeReady(admin, nodeName)
	}); err != nil {
		return err
	}
	if err := writeEnv(&Env{
		Kubeconfig: AdminKubeconfig, APIServerHost: "127.0.0.1", APIServerPort: strconv.Itoa(APIServerPort),
		NodeName: nodeName, NodeIP: nodeIP, LabInterface: LabInterface, LabNamespace: LabNamespace,
		ContainerdSocket: ContainerdSocket,
	}); err != nil {
		return err
	}
	st.Complete = true
	if err := st.save(); err != nil {
		return err
	}
	logf("node %s Ready: cluster up in %.1fs", nodeName, time.Since(t0).Seconds())
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// preflight checks the binaries, the ports and the namespace.
func preflight(o UpOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("cluster-up needs root")
	}
	if _, err := rootHandle(); err != nil {
		return err
	}
	var missing []string
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"} {
		if _, err := os.Stat(filepath.Join(o.KubeDir, b)); err != nil {
			missing = append(missing, filepath.Join(o.KubeDir, b))
		}
	}
	for _, b := range []string{"/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2", "/usr/bin/ctr", "/usr/sbin/runc", "/usr/lib/cni/loopback"} {
		if _, err := os.Stat(b); err != nil {
			if b == "/usr/sbin/runc" {
				if _, err := exec.LookPath("runc"); err == nil {
					continue
				}
			}
			missing = append(missing, b)
		}
	}
	if _, err := os.Stat(o.PauseImageTar); err != nil {
		missing = append(missing, o.PauseImageTar)
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing: %s (hack/cluster/up.sh installs and builds them)", strings.Join(missing, ", "))
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		return errors.New("/sys/fs/bpf is not a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)")
	}
	for _, port := range []int{APIServerPort, EtcdPort, EtcdPeerPort, KubeletPort, KubeletHealthzPort, ControllerManagerPort, SchedulerPort} {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return fmt.Errorf("port %d on 127.0.0.1 is taken: %w", port, err)
		}
		ln.Close()
	}
	if procs := ClusterProcesses(); len(procs) > 0 {
		return fmt.Errorf("processes of an earlier cluster still run (make cluster-down):\n%s", strings.Join(procs, "\n"))
	}
	if _, err := LabLink(); err == nil {
		return fmt.Errorf("interface %s exists already (make cluster-down)", LabInterface)
	}
	return nil
}

// nodeIdentity returns the node name (the host name, which must resolve
// to a loopback address for kubectl logs/exec, since kubelet listens on
// 127.0.0.1 only) and the node IP: the source address of the machine's
// default route, on which nothing of the cluster listens.
func nodeIdentity(logf func(string, ...any)) (string, string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", "", err
	}
	name := strings.ToLower(host)
	addrs, err := net.LookupHost(name)
	loop := false
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip != nil && ip.IsLoopback() {
			loop = true
		}
	}
	if err != nil || !loop {
		logf("warning: host name %s does not resolve to a loopback address (%v %v): kubectl logs/exec will not reach kubelet", name, addrs, err)
	}
	h, err := rootHandle()
	if err != nil {
		return "", "", err
	}
	defer h.Close()
	ip, err := primaryIPv4(h)
	if err != nil {
		return "", "", fmt.Errorf("cannot find the machine's primary IPv4 address for --node-ip: %w", err)
	}
	return name, ip.String(), nil
}

// primaryIPv4 returns the preferred source address of the IPv4 default
// route, else the first global IPv4 address of an interface that is up
// (never loopback, never the lab interface).
func primaryIPv4(h *netlink.Handle) (net.IP, error) {
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue // not a default route
			}
		}
		if r.Src != nil && !r.Src.IsLoopback() {
			return r.Src, nil
		}
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().Name != LabInterface {
			if ip := globalIPv4(h, l); ip != nil {
				return ip, nil
			}
		}
	}
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().Flags&net.FlagLoopback != 0 || l.Attrs().Name == LabInterface {
			continue
		}
		if ip := globalIPv4(h, l); ip != nil {
			return ip, nil
		}
	}
	return nil, errors.New("no default route and no global IPv4 address")
}

func globalIPv4(h *netlink.Handle, l netlink.Link) net.IP {
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if a.IP.IsGlobalUnicast() {
			return a.IP
		}
	}
	return nil
}

// backoffStop ends waitFor at once with its error.
type backoffStop struct{ error }

// waitFor polls check until it succeeds, p exits, or timeout.
func waitFor(ctx context.Context, p *Proc, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if err := p.exitedEarly(); err != nil {
			return err
		}
		last = check()
		if last == nil {
			return nil
		}
		var stop backoffStop
		if errors.As(last, &stop) {
			return stop.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v; last lines of %s:\n%s", what, timeout, last, p.Log, tailFile(p.Log, 30))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// adminClient is an HTTP client with the administrator's certificate.
func adminClient() (*http.Client, error) {
	ca, err := os.ReadFile(filepath.Join(PKIDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(PKIDir, "admin.crt"), filepath.Join(PKIDir, "admin.key"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}

func httpOK(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func nodeReady(c *http.Client, name string) error {
	resp, err := c.Get(APIServerURL + "/api/v1/nodes/" + name)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("node %s: %s", name, resp.Status)
	}
	var n struct {
		Status struct {
			Conditions []struct{ Type, Status, Reason, Message string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&n); err != nil {
		return err
	}
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			if c.Status == "True" {
				return nil
			}
			return fmt.Errorf("node %s Ready=%s: %s %s", name, c.Status, c.Reason, c.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", name)
}

// writeConfigs writes the PKI, kubeconfigs, containerd's, CNI's and
// kubelet's configuration.
func writeConfigs(nodeName, nodeIP string) error {
	p, err := newPKI(PKIDir)
	if err != nil {
		return err
	}
	ip := net.ParseIP(nodeIP)
	_, svcNet, _ := net.ParseCIDR(ServiceCIDR)
	svcIP := make(net.IP, 4)
	copy(svcIP, svcNet.IP.To4())
	svcIP[3]++
	if _, _, err := p.issue(certSpec{file: "apiserver", cn: "kube-apiserver", server: true,
		dns: []string{"localhost", nodeName, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		ips: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, svcIP, ip}}); err != nil {
		return err
	}
	if _, _, err := p.issue(certSpec{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true}); err != nil {
		return err
	}
	if _, _, err := p.issue(certSpec{file: "kubelet-serving", cn: nodeName, server: true,
		dns: []string{nodeName, "localhost"}, ips: []net.IP{net.IPv4(127, 0, 0, 1), ip}}); err != nil {
		return err
	}
	if err := p.serviceAccountKeys(); err != nil {
		return err
	}
	for _, k := range []struct{ path, file, cn, org string }{
		{AdminKubeconfig, "admin", "lanmonitor-cluster-admin", "system:masters"},
		{filepath.Join(Dir, "controller-manager.kubeconfig"), "controller-manager", "system:kube-controller-manager", ""},
		{filepath.Join(Dir, "scheduler.kubeconfig"), "scheduler", "system:kube-scheduler", ""},
		{filepath.Join(Dir, "kubelet.kubeconfig"), "kubelet-client", "system:node:" + nodeName, "system:nodes"},
	} {
		var orgs []string
		if k.org != "" {
			orgs = []string{k.org}
		}
		if err := p.clientKubeconfig(k.path, k.file, k.cn, orgs...); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(CNIConfDir, 0o755); err != nil {
		return err
	}
	// Loopback only: the cluster runs hostNetwork pods alone, but kubelet
	// reports the node NotReady without any CNI configuration.
	if err := os.WriteFile(filepath.Join(CNIConfDir, "10-loopback.conflist"), []byte(`{
  "cniVersion": "1.0.0",
  "name": "lanmonitor-cluster-loopback",
  "plugins": [{"type": "loopback"}]
}
`), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(ContainerdConfig, []byte(containerdConfig()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(KubeletConfig, []byte(kubeletConfig()), 0o644)
}

// containerdConfig is containerd's configuration (format version 2):
// everything under Dir and RunDir, cgroupfs, the local pause image, and
// restrict_oom_score_adj (root here lacks CAP_SYS_RESOURCE, so runc cannot
// lower oom_score_adj to kubelet's -998: every sandbox would fail).
func containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = %q

[ttrpc]
  address = ""

[debug]
  level = "warn"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, ContainerdRoot, ContainerdState, ContainerdSocket, filepath.Join(Dir, "opt"), PauseImage, RuncRoot, CNIConfDir)
}

// kubeletConfig is kubelet's configuration: cgroupfs on cgroup v1,
// loopback-only listeners, webhook authentication and authorization, no
// iptables chains, no image garbage collection of the locally imported
// images, loose eviction thresholds (a busy shared test machine), and
// every directory under Dir but the hard-coded /var/log/containers.
func kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
makeIPTablesUtilChains: false
podLogsDir: %s
volumePluginDir: %s
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
maxPods: 30
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
evictionPressureTransitionPeriod: 5s
serializeImagePulls: false
shutdownGracePeriod: 0s
`, KubeletPort, KubeletHealthzPort, filepath.Join(PKIDir, "kubelet-serving.crt"), filepath.Join(PKIDir, "kubelet-serving.key"),
		filepath.Join(PKIDir, "ca.crt"), ContainerdSocket, PodLogsDir, KubeletPluginDir)
}
