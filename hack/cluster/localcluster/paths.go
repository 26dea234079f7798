// Package localcluster runs a real single-node Kubernetes cluster on this
// machine for lanmonitor's cluster tests: containerd (Debian's package),
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubelet
// on loopback, plus one lab interface for the node's agent to watch. It is
// driven by hack/cluster/up.sh and down.sh (make cluster-up, make
// cluster-down) through the lmcluster helper (hack/cluster), and used by the
// test/cluster package.
//
// Rules it keeps:
//
//   - Everything it runs is started detached and recorded by PID (with the
//     process start time, so a reused PID is never signalled); Down stops
//     only those, plus the containerd shims and container processes that
//     the recorded containerd started (found by its private socket path in
//     the shims' command lines and by the kubepods cgroups).
//   - The host is snapshotted (sysctls, mounts, nft ruleset, cgroups,
//     well-known Kubernetes and containerd directories, root network
//     interfaces, bpffs) before anything starts. Down restores what kubelet
//     and containerd are known to change and then compares a new snapshot
//     with the recorded one, failing with the differences.
//   - All of the cluster's files live under Dir and RunDir. containerd,
//     runc, CNI and kubelet are pointed there instead of /var/lib/containerd,
//     /run/containerd, /etc/cni/net.d and /var/lib/kubelet; the few paths
//     that are hard-coded elsewhere (containerd's shim sockets in
//     /run/containerd/s, kubelet's /var/log/containers) are recorded and
//     removed again if they did not exist.
//   - Nothing listens on the machine's own address: every component binds
//     127.0.0.1; the node IP is the machine's primary address only as a
//     label (kubelet --node-ip), as LOCAL-CLUSTER.md prescribes.
//   - The lab interface is a veth whose root-namespace end (LabInterface)
//     has no address and IPv6 disabled before it comes up, and whose other
//     end sits in a lab namespace made by internal/lab; it is created only
//     when forwarding is off in the root namespace.
package localcluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Locations and ports of the cluster. They are fixed so that down.sh finds
// a cluster that up.sh started from another process (or another clone).
const (
	// Dir holds the cluster's state: PKI, kubeconfigs, configs, etcd's
	// data, containerd's root, kubelet's root directory, logs and the
	// records of processes and of the host before the cluster.
	Dir = "/var/lib/lanmonitor-cluster"
	// RunDir holds runtime state: containerd's state directory and socket
	// and runc's root.
	RunDir = "/run/lanmonitor-cluster"

	// APIServerPort is kube-apiserver's secure port on 127.0.0.1.
	APIServerPort = 16443
	// EtcdPort and EtcdPeerPort are etcd's client and peer ports on 127.0.0.1.
	EtcdPort     = 12379
	EtcdPeerPort = 12380
	// KubeletPort and KubeletHealthzPort are kubelet's ports on 127.0.0.1.
	KubeletPort        = 10250
	KubeletHealthzPort = 10248
	// ControllerManagerPort and SchedulerPort are the secure ports of
	// kube-controller-manager and kube-scheduler on 127.0.0.1.
	ControllerManagerPort = 10257
	SchedulerPort         = 10259
	// ServiceCIDR is the service IP range. Nothing routes it: the cluster
	// has no kube-proxy and no pod network (hostNetwork pods only).
	ServiceCIDR = "10.96.0.0/24"

	// LabInterface is the root-namespace end of the lab veth, the one
	// interface a LanMonitor of the cluster tests selects. It has no
	// address and IPv6 is disabled on it.
	LabInterface = "lmlan0"
	// LabPeerInterface is the other end, in the lab namespace.
	LabPeerInterface = "lan0"
	// LabPrefix and LabNSName make the lab namespace's name (internal/lab
	// naming): /run/netns/lmcluster-lan.
	LabPrefix = "lmcluster-"
	LabNSName = "lan"

	// PauseImage is the sandbox image, built by hack/images from a tiny
	// static Go program and imported at cluster-up.
	PauseImage = "docker.io/library/lanmonitor-pause:v1"
	// ContainerdNamespace is the containerd namespace of the CRI plugin.
	ContainerdNamespace = "k8s.io"
)

// MACs of the lab veth's ends (locally administered).
const (
	LabInterfaceMAC     = "02:4c:4d:6c:00:01"
	LabPeerInterfaceMAC = "02:4c:4d:6c:00:02"
)

// Paths inside Dir and RunDir.
var (
	PKIDir            = filepath.Join(Dir, "pki")
	LogDir            = filepath.Join(Dir, "logs")
	EtcdDataDir       = filepath.Join(Dir, "etcd")
	ContainerdRoot    = filepath.Join(Dir, "containerd")
	ContainerdConfig  = filepath.Join(Dir, "containerd.toml")
	ContainerdState   = filepath.Join(RunDir, "containerd")
	ContainerdSocket  = filepath.Join(RunDir, "containerd.sock")
	RuncRoot          = filepath.Join(RunDir, "runc")
	CNIConfDir        = filepath.Join(Dir, "cni")
	KubeletRootDir    = filepath.Join(Dir, "kubelet")
	KubeletConfig     = filepath.Join(Dir, "kubelet-config.yaml")
	KubeletPluginDir  = filepath.Join(Dir, "kubelet-volume-plugins")
	PodLogsDir        = filepath.Join(Dir, "pod-logs")
	AdminKubeconfig   = filepath.Join(Dir, "admin.kubeconfig")
	StateFile         = filepath.Join(Dir, "state.json")
	HostBeforeFile    = filepath.Join(Dir, "host-before.json")
	EnvFile           = filepath.Join(Dir, "cluster.env")
	LockFile          = "/run/lanmonitor-cluster.lock"
	LabNamespace      = LabPrefix + LabNSName
	LabNamespacePath  = filepath.Join("/run/netns", LabNamespace)
	AgentPinRoot      = "/sys/fs/bpf/lanmonitor"
	LabInterfacePins  = filepath.Join(AgentPinRoot, LabInterface)
	APIServerURL      = fmt.Sprintf("https://127.0.0.1:%d", APIServerPort)
	apiserverCertFile = filepath.Join(PKIDir, "apiserver.crt")
)

// Env is what cluster.env records for users of a running cluster (the
// test/cluster package and people): KUBECONFIG and the cluster's facts.
type Env struct {
	Kubeconfig       string
	APIServerHost    string
	APIServerPort    string
	NodeName         string
	NodeIP           string
	LabInterface     string
	LabNamespace     string
	ContainerdSocket string
}

// ReadEnv reads EnvFile. Errors: no cluster is up (os.ErrNotExist), a
// malformed file.
func ReadEnv() (*Env, error) {
	f, err := os.Open(EnvFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: malformed line %q", EnvFile, line)
		}
		m[k] = strings.Trim(v, `'"`)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	e := &Env{
		Kubeconfig: m["KUBECONFIG"], APIServerHost: m["LANMONITOR_CLUSTER_APISERVER_HOST"],
		APIServerPort: m["LANMONITOR_CLUSTER_APISERVER_PORT"], NodeName: m["LANMONITOR_CLUSTER_NODE"],
		NodeIP: m["LANMONITOR_CLUSTER_NODE_IP"], LabInterface: m["LANMONITOR_CLUSTER_LAB_INTERFACE"],
		LabNamespace: m["LANMONITOR_CLUSTER_LAB_NAMESPACE"], ContainerdSocket: m["LANMONITOR_CLUSTER_CONTAINERD_SOCKET"],
	}
	if e.Kubeconfig == "" || e.NodeName == "" || e.LabInterface == "" {
		return nil, fmt.Errorf("%s: incomplete", EnvFile)
	}
	return e, nil
}

func writeEnv(e *Env) error {
	var b strings.Builder
	b.WriteString("# Written by hack/cluster (make cluster-up). Source it: . " + EnvFile + "\n")
	for _, kv := range [][2]string{
		{"KUBECONFIG", e.Kubeconfig},
		{"LANMONITOR_CLUSTER_APISERVER_HOST", e.APIServerHost},
		{"LANMONITOR_CLUSTER_APISERVER_PORT", e.APIServerPort},
		{"LANMONITOR_CLUSTER_NODE", e.NodeName},
		{"LANMONITOR_CLUSTER_NODE_IP", e.NodeIP},
		{"LANMONITOR_CLUSTER_LAB_INTERFACE", e.LabInterface},
		{"LANMONITOR_CLUSTER_LAB_NAMESPACE", e.LabNamespace},
		{"LANMONITOR_CLUSTER_CONTAINERD_SOCKET", e.ContainerdSocket},
	} {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], kv[1])
	}
	return os.WriteFile(EnvFile, []byte(b.String()), 0o644)
}
