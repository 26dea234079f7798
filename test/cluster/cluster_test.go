// Package cluster tests lanmonitor installed with `helm install` into a real
// single-node Kubernetes cluster on this machine (hack/cluster: containerd,
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubelet),
// the agent running as a kubelet-run DaemonSet pod from a locally built
// image and attaching XDP to the lab interface lmlan0 from inside that pod.
//
// `make e2e-cluster` runs it against the cluster `make cluster-up` started
// (LANMONITOR_CLUSTER=existing); otherwise (`make test`, or `go test
// ./test/cluster` as root) it brings the cluster up itself, tears it down
// at the end and checks that the host is as it was. Root only: without root
// it skips (fails with LANMONITOR_REQUIRE_PRIVILEGED=1).
package cluster

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	corev1 "k8s.io/api/core/v1"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/hack/cluster/localcluster"
	"github.com/lanmonitor/lanmonitor/internal/frames"
	"github.com/lanmonitor/lanmonitor/internal/kubetable"
	"github.com/lanmonitor/lanmonitor/internal/lab"
	"github.com/lanmonitor/lanmonitor/internal/privileged"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

// useDrainHook switches the uninstall step between relying on the chart's
// pre-delete drain hook (drain.enabled: `helm uninstall` alone must leave
// the lab interface clean) and releasing the nodes by hand first (delete
// every LanMonitor, wait for the LanMonitorNodes to go), as was needed
// before the hook existed.
const useDrainHook = true

// EnvMode selects the cluster: "existing" tests the running cluster of
// `make cluster-up` and leaves it up; unset, the test runs hack/cluster/up.sh
// and down.sh itself.
const EnvMode = "LANMONITOR_CLUSTER"

const (
	release   = "lanmonitor"
	namespace = "lanmonitor-system"
	// Image tags: A is installed, B is the upgrade (another build: its
	// binaries carry another version string).
	tagA = "e2e-a"
	tagB = "e2e-b"
	// previousRelease is the commit whose chart and images are installed
	// first and upgraded to this tree's: chart 0.2.0, whose controller
	// listed every IPBlock in each node's LanMonitorNode spec (with
	// controller-assigned rule IDs) for agents that enforced that list.
	previousRelease = testenv.PreviousRelease
	tagPrevious     = "e2e-previous"
	// The LanMonitor's report interval: short, so the test is quick.
	reportInterval = 2 * time.Second
	monitorName    = "lab"
	blockName      = "blocked-hosts"
)

// Lab addresses: talkers and the blocked host (one IPv4, one IPv6).
var (
	talker4  = netip.MustParseAddr("198.18.0.21")
	talker6  = netip.MustParseAddr("2001:db8::22")
	blocked4 = netip.MustParseAddr("198.18.0.66")
	blocked6 = netip.MustParseAddr("2001:db8::66")
	dst4     = netip.MustParseAddr("198.18.0.1")
	dst6     = netip.MustParseAddr("2001:db8::1")
)

type suite struct {
	t       *testing.T // the current subtest
	top     *testing.T // TestCluster itself, for cleanups that outlive a subtest
	repo    string
	kubectl string
	helm    string
	env     *localcluster.Env
	lmimg   string
	sender  *localcluster.Sender
	// blockedSent counts every blocked frame sent, for the exact DROPPED.
	blockedSent atomic.Int64
	dstMAC      net.HardwareAddr
	srcMAC      net.HardwareAddr
	timings     []string
	// viewer is a token of a service account bound to the chart's
	// dashboard-viewer and metrics-reader ClusterRoles (viewerToken).
	viewer string
	// previousChart is the chart of previousRelease, its images imported
	// as tagPrevious ("" in a shallow clone: see buildPrevious).
	previousChart string
}

func TestCluster(t *testing.T) {
	privileged.Require(t)
	start := time.Now()
	s := &suite{t: t, top: t, repo: repoRoot(t)}
	s.dstMAC, _ = net.ParseMAC(localcluster.LabInterfaceMAC)
	s.srcMAC, _ = net.ParseMAC(localcluster.LabPeerInterfaceMAC)
	kubeDir := s.tool("", "cluster")
	s.kubectl = filepath.Join(kubeDir, "kubectl")
	s.helm = s.tool("HELM", "helm")

	var before *localcluster.Snapshot
	managed := os.Getenv(EnvMode) != "existing"
	downDone := false
	if managed {
		if st, ok := localcluster.Running(); ok || st != nil {
			t.Fatalf("a cluster of hack/cluster is up (or half up) already: test it with %s=existing (make e2e-cluster), or make cluster-down", EnvMode)
		}
		// The cluster's Debian packages first: they stay installed, and
		// the record must be read with the tools the comparison after
		// cluster-down reads it with (nft for the ruleset).
		s.step("cluster packages", func() { s.script("hack/cluster/deps.sh") })
		var err error
		if before, err = localcluster.TakeSnapshot(); err != nil {
			t.Fatalf("recording the host: %v", err)
		}
		s.step("cluster-up", func() { s.script("hack/cluster/up.sh") })
		t.Cleanup(func() {
			if downDone {
				return
			}
			if out, err := s.run(exec.Command(filepath.Join(s.repo, "hack/cluster/down.sh"))); err != nil {
				t.Errorf("hack/cluster/down.sh: %v\n%s", err, out)
			}
		})
	} else if _, ok := localcluster.Running(); !ok {
		t.Fatalf("%s=existing but no cluster is up: make cluster-up first", EnvMode)
	}
	env, err := localcluster.ReadEnv()
	if err != nil {
		t.Fatal(err)
	}
	s.env = env
	// What helps to understand a failure, while the cluster is still up.
	dumped := false
	dump := func() {
		if t.Failed() && !dumped {
			dumped = true
			s.t = t
			s.dumpState()
		}
	}
	t.Cleanup(dump)

	if err := forwardingOff(); err != nil {
		t.Fatal(err)
	}
	s.step("build and import images", s.buildImages)
	s.step("build and import the previous release's images", s.buildPrevious)
	sender, err := localcluster.LabSender()
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	s.sender = sender
	promiscBefore, err := localcluster.Promiscuous()
	if err != nil {
		t.Fatal(err)
	}
	pinRootBefore := exists(localcluster.AgentPinRoot)
	if id, _ := localcluster.XDPProgID(); id != 0 || exists(localcluster.LabInterfacePins) {
		t.Fatalf("the lab interface has XDP program %d or pins in %s before the install", id, localcluster.LabInterfacePins)
	}
	// On failure in the middle, leave the cluster clean for the next run.
	installed := false
	t.Cleanup(func() {
		if installed && !managed {
			s.uninstallQuietly()
		}
	})

	// Each step needs the previous one: the first failure ends the chain
	// (the cluster is still torn down and checked).
	upgraded := false
	ok := t.Run("helm install of the previous release, helm upgrade to this chart: CRDs upgraded, blocking holds", func(t *testing.T) {
		s.t = t
		if s.previousChart == "" {
			t.Skip("a shallow clone has no previous release to install (git fetch --unshallow): this chart is installed fresh")
		}
		installed = true
		s.step("helm install of the previous release", func() {
			args := append([]string{"install", release, s.previousChart, "-n", namespace, "--create-namespace",
				"--wait", "--timeout", "3m"}, s.installValues(tagPrevious)...)
			s.t.Logf("helm install %s:\n%s", previousRelease, firstLines(s.helmRun(args...), 8))
		})
		s.applyObjects()
		s.blockedBurst()
		// The 0.2 controller gave the block a rule ID, listed it in the
		// node's spec, and the 0.2 agent counts under that ID.
		var before struct {
			Status struct {
				RuleID int32 `json:"ruleID"`
			} `json:"status"`
		}
		s.getJSON(&before, "ipblocks.lanmonitor.io", blockName)
		if before.Status.RuleID == 0 || len(s.lanMonitorNode().Spec.IPBlocks) != 1 {
			t.Fatalf("before the upgrade: rule ID %d, node spec.ipBlocks %v; want an ID and the block listed", before.Status.RuleID, s.lanMonitorNode().Spec.IPBlocks)
		}
		s.step("helm upgrade from the previous release", func() {
			s.acrossRollover("helm upgrade from the previous release", tagA, func() {
				s.underNewCRDs()
				args := append([]string{"upgrade", release, filepath.Join(s.repo, "charts/lanmonitor"), "-n", namespace,
					"--wait", "--timeout", "3m"}, s.installValues(tagA)...)
				s.t.Logf("helm upgrade:\n%s", firstLines(s.helmRun(args...), 8))
			})
			// helm --wait counts a Deployment ready at replicas -
			// maxUnavailable (0 on the host network): wait for the new
			// controller itself.
			s.kubectlRun("-n", namespace, "rollout", "status", "deployment/"+release+"-controller", "--timeout=2m")
		})
		// The pre-upgrade hook applied this chart's CRDs: the new agent's
		// status.agentVersion is stored, and then the controller drops the
		// legacy spec.ipBlocks. The agent kept the block's rule ID (its
		// counters; acrossRollover checked DROPPED exact).
		var lmn v1alpha1.LanMonitorNode
		s.waitFor(30*time.Second, "the agent's version in the status, the legacy spec.ipBlocks gone", func() bool {
			lmn = s.lanMonitorNode()
			return lmn.Status.AgentVersion != "" && len(lmn.Spec.IPBlocks) == 0
		})
		if len(lmn.Status.IPBlocks) != 1 || lmn.Status.IPBlocks[0].RuleID != before.Status.RuleID {
			t.Errorf("after the upgrade the node reports %+v, want %s under rule ID %d", lmn.Status.IPBlocks, blockName, before.Status.RuleID)
		}
		s.t.Logf("after the upgrade: agent %s, %s under rule ID %d", lmn.Status.AgentVersion, blockName, before.Status.RuleID)
		upgraded = !t.Failed()
	})
	ok = ok && t.Run("helm install: pods Ready with least privilege", func(t *testing.T) {
		s.t = t
		installed = true
		if !upgraded {
			s.step("helm install", s.install)
		}
		s.checkPods()
	})
	ok = ok && t.Run("LanMonitor and IPBlock: exact talkers and drops", func(t *testing.T) {
		s.t = t
		s.applyObjects()
		s.countedBurst()
		s.blockedBurst()
	})
	ok = ok && t.Run("dashboards: the node's and the cluster's, authenticated, exact", func(t *testing.T) {
		s.t = t
		s.dashboards()
	})
	ok = ok && t.Run("idle agent pod: CPU without traffic", func(t *testing.T) {
		s.t = t
		s.idleCPU()
	})
	ok = ok && t.Run("kubectl delete pod: blocking holds, the new pod adopts", func(t *testing.T) {
		s.t = t
		s.step("agent pod restart", func() {
			s.acrossRollover("delete the agent pod", "", func() {
				s.kubectlRun("-n", namespace, "delete", "pod", s.agentPod().Name, "--wait=false")
			})
		})
	})
	ok = ok && t.Run("helm upgrade to another agent image: atomic replace, blocking holds", func(t *testing.T) {
		s.t = t
		s.step("helm upgrade", func() {
			s.acrossRollover("helm upgrade", tagB, func() {
				s.helmRun("upgrade", release, filepath.Join(s.repo, "charts/lanmonitor"), "-n", namespace, "--reuse-values",
					"--set", "agent.image.tag="+tagB, "--wait", "--timeout", "3m")
			})
		})
		out := s.kubectlRun("-n", namespace, "exec", "ds/lanmonitor-agent", "--", "/lanmonitor-agent", "--version")
		if !strings.Contains(out, tagB) {
			s.t.Fatalf("the upgraded agent reports %q, want version %s", strings.TrimSpace(out), tagB)
		}
		s.t.Logf("upgraded agent: %s", strings.TrimSpace(out))
	})
	_ = ok && t.Run("helm uninstall, delete the CRDs: the lab interface is left clean", func(t *testing.T) {
		s.t = t
		s.step("uninstall", s.uninstall)
		installed = false
		if id, err := localcluster.XDPProgID(); err != nil || id != 0 {
			t.Errorf("XDP program %d (%v) still attached to %s", id, err, localcluster.LabInterface)
		}
		if p, err := localcluster.Promiscuous(); err != nil || p != promiscBefore {
			t.Errorf("%s promiscuous=%v (%v), was %v before the install", localcluster.LabInterface, p, err, promiscBefore)
		}
		if exists(localcluster.LabInterfacePins) {
			t.Errorf("pin directory %s left", localcluster.LabInterfacePins)
		}
		if !pinRootBefore && exists(localcluster.AgentPinRoot) {
			t.Errorf("pin root %s left", localcluster.AgentPinRoot)
		}
		if procs := agentProcesses(); len(procs) > 0 {
			t.Errorf("agent or controller processes left: %v", procs)
		}
	})

	dump()
	if managed {
		s.t = t
		var out string
		s.step("cluster-down", func() {
			var err error
			out, err = s.run(exec.Command(filepath.Join(s.repo, "hack/cluster/down.sh")))
			downDone = true
			if err != nil {
				t.Errorf("hack/cluster/down.sh: %v\n%s", err, out)
			}
		})
		t.Run("cluster-down leaves the host as it was", func(t *testing.T) {
			after, err := localcluster.TakeSnapshot()
			if err != nil {
				t.Fatal(err)
			}
			d := localcluster.Diff(before, after)
			for _, cat := range []string{"sysctls", "mounts", "nft", "iptables-legacy", "processes", "cgroups", "paths", "links", "netns"} {
				if len(d[cat]) > 0 {
					t.Errorf("%s differ:\n  %s", cat, strings.Join(d[cat], "\n  "))
				}
				delete(d, cat)
			}
			if len(d) > 0 {
				t.Errorf("other differences:\n%s", localcluster.FormatDiff(d))
			}
			for _, k := range localcluster.KubeletSysctls {
				t.Logf("%s = %s (before: %s)", strings.ReplaceAll(k, "/", "."), after.Sysctls[k], before.Sysctls[k])
			}
			if p, err := localcluster.MountPropagation("/sys/fs/bpf"); err != nil || p != propagationOf(before, "/sys/fs/bpf") {
				t.Errorf("/sys/fs/bpf propagation %q (%v), want %q", p, err, propagationOf(before, "/sys/fs/bpf"))
			}
		})
	}
	t.Logf("timings: %s; total %.1fs", strings.Join(s.timings, ", "), time.Since(start).Seconds())
}

// forwardingOff re-checks, before any lab frame is sent, that the root
// namespace does not forward (the lab interface is in it): globally
// (internal/lab's check) and on the lab interface.
func forwardingOff() error {
	if err := lab.RootForwardingOff(); err != nil {
		return err
	}
	k := "net/ipv4/conf/" + localcluster.LabInterface + "/forwarding"
	b, err := os.ReadFile("/proc/sys/" + k)
	if err != nil {
		return err
	}
	if v := strings.TrimSpace(string(b)); v != "0" {
		return fmt.Errorf("%s is %s in the root namespace: refusing to send lab traffic", k, v)
	}
	return nil
}

func propagationOf(s *localcluster.Snapshot, mp string) string {
	for _, m := range s.Mounts {
		if strings.HasPrefix(m, mp+" ") {
			i := strings.LastIndex(m, "[")
			return strings.Trim(m[i:], "[]")
		}
	}
	return "?"
}

func repoRoot(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(filepath.Dir(wd))
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// step runs fn and records how long it took.
func (s *suite) step(name string, fn func()) {
	t0 := time.Now()
	fn()
	d := time.Since(t0)
	s.timings = append(s.timings, fmt.Sprintf("%s %.1fs", name, d.Seconds()))
	s.t.Logf("%s took %.1fs", name, d.Seconds())
}

// tool returns $env or the path hack/tools.sh target prints.
func (s *suite) tool(env, target string) string {
	if v := os.Getenv(env); env != "" && v != "" {
		return v
	}
	out, err := exec.Command(filepath.Join(s.repo, "hack/tools.sh"), target).Output()
	if err != nil {
		s.t.Fatalf("hack/tools.sh %s: %v", target, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// run runs cmd in the repository and returns its combined output.
func (s *suite) run(cmd *exec.Cmd) (string, error) {
	if cmd.Dir == "" {
		cmd.Dir = s.repo
	}
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

func (s *suite) script(path string) {
	s.t.Helper()
	out, err := s.run(exec.Command(filepath.Join(s.repo, path)))
	s.t.Logf("%s:\n%s", path, out)
	if err != nil {
		s.t.Fatalf("%s: %v", path, err)
	}
}

func (s *suite) kubectlCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(s.kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.env.Kubeconfig)
	return cmd
}

func (s *suite) kubectlRun(args ...string) string {
	s.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := s.kubectlCmd(args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func (s *suite) kubectlApply(yaml string) {
	s.t.Helper()
	cmd := s.kubectlCmd("apply", "-f", "-")
	cmd.Stdin = strings.NewReader(yaml)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("kubectl apply: %v\n%s", err, out)
	} else {
		s.t.Logf("kubectl apply:\n%s", out)
	}
}

func (s *suite) helmRun(args ...string) string {
	s.t.Helper()
	cmd := exec.Command(s.helm, args...)
	// A helm home of its own: nothing of the user's helm configuration.
	home := filepath.Join(s.t.TempDir(), "helm")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.env.Kubeconfig, "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
	out, err := s.run(cmd)
	if err != nil {
		s.t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// getJSON runs kubectl get -o json into v.
func (s *suite) getJSON(v any, args ...string) {
	s.t.Helper()
	out := s.kubectlRun(append([]string{"get", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		s.t.Fatalf("kubectl get %v: %v", args, err)
	}
}

// waitFor polls cond every 100 ms until it is true or timeout passes.
func (s *suite) waitFor(timeout time.Duration, what string, cond func() bool) time.Duration {
	s.t.Helper()
	t0 := time.Now()
	for !cond() {
		if time.Since(t0) > timeout {
			s.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(t0)
}

// table runs kubectl get and returns its rows as maps from column header
// to cell (the printer columns of the CRDs), with the raw output.
func (s *suite) table(args ...string) ([]map[string]string, string) {
	s.t.Helper()
	out := s.kubectlRun(append([]string{"get"}, args...)...)
	return kubetable.Parse(out), out
}

// buildImages builds the controller and agent images with tag A and the
// agent with tag B, and imports them into the cluster's containerd.
func (s *suite) buildImages() {
	bin := filepath.Join(s.t.TempDir(), "lmimages")
	if out, err := s.run(exec.Command("go", "build", "-o", bin, "./hack/images")); err != nil {
		s.t.Fatalf("build hack/images: %v\n%s", err, out)
	}
	out := s.t.TempDir()
	for _, args := range [][]string{
		{"-tag", tagA, "-import", "always", "-out", out},
		{"-tag", tagB, "-only", "agent", "-import", "always", "-out", out},
	} {
		if o, err := s.run(exec.Command(bin, args...)); err != nil {
			s.t.Fatalf("lmimages %v: %v\n%s", args, err, o)
		} else {
			s.t.Logf("lmimages %v:\n%s", args, o)
		}
	}
}

// buildPrevious checks out previousRelease from this clone's history,
// builds its images with its own hack/images (tag tagPrevious, imported
// into the cluster's containerd) and sets s.previousChart. In a shallow
// clone it leaves s.previousChart empty and says so.
func (s *suite) buildPrevious() {
	if out, _ := s.run(exec.Command("git", "rev-parse", "--is-shallow-repository")); strings.TrimSpace(out) == "true" {
		s.t.Logf("a shallow clone: the previous release %s cannot be built", previousRelease)
		return
	}
	dir := s.t.TempDir()
	if out, err := s.run(exec.Command("sh", "-c", "git archive --format=tar "+previousRelease+" | tar -x -C "+dir)); err != nil {
		s.t.Fatalf("check out the previous release %s: %v\n%s", previousRelease, err, out)
	}
	cmd := exec.Command("go", "run", "./hack/images", "-tag", tagPrevious, "-import", "always", "-out", s.t.TempDir())
	cmd.Dir = dir
	if out, err := s.run(cmd); err != nil {
		s.t.Fatalf("build the images of %s: %v\n%s", previousRelease, err, out)
	}
	s.previousChart = filepath.Join(dir, "charts/lanmonitor")
}

// lanMonitorNode reads the node's LanMonitorNode.
func (s *suite) lanMonitorNode() v1alpha1.LanMonitorNode {
	s.t.Helper()
	var n v1alpha1.LanMonitorNode
	s.getJSON(&n, "lanmonitornodes.lanmonitor.io", s.env.NodeName)
	return n
}

// installValues are the only changes to the chart: the local images, and
// for a cluster without kube-proxy or a pod network, the controller on the
// host network and both components told where the API server is.
func (s *suite) installValues(tag string) []string {
	port := s.env.APIServerPort
	return []string{
		"--set", "controller.image.repository=docker.io/library/lanmonitor-controller",
		"--set", "controller.image.tag=" + tag,
		"--set", "controller.image.pullPolicy=Never",
		"--set", "agent.image.repository=docker.io/library/lanmonitor-agent",
		"--set", "agent.image.tag=" + tag,
		"--set", "agent.image.pullPolicy=Never",
		"--set", "controller.hostNetwork=true",
		"--set", "controller.extraEnv[0].name=KUBERNETES_SERVICE_HOST",
		"--set-string", "controller.extraEnv[0].value=" + s.env.APIServerHost,
		"--set", "controller.extraEnv[1].name=KUBERNETES_SERVICE_PORT",
		"--set-string", "controller.extraEnv[1].value=" + port,
		"--set", "agent.extraEnv[0].name=KUBERNETES_SERVICE_HOST",
		"--set-string", "agent.extraEnv[0].value=" + s.env.APIServerHost,
		"--set", "agent.extraEnv[1].name=KUBERNETES_SERVICE_PORT",
		"--set-string", "agent.extraEnv[1].value=" + port,
	}
}

func (s *suite) install() {
	args := append([]string{"install", release, filepath.Join(s.repo, "charts/lanmonitor"), "-n", namespace, "--create-namespace",
		"--wait", "--timeout", "3m"}, s.installValues(tagA)...)
	out := s.helmRun(args...)
	s.t.Logf("helm install:\n%s", firstLines(out, 8))
	_, pods := s.table("nodes,pods", "-A", "-o", "wide")
	s.t.Logf("kubectl get nodes,pods -A -o wide:\n%s", pods)
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func (s *suite) pods(component string) []corev1.Pod {
	var l corev1.PodList
	s.getJSON(&l, "-n", namespace, "pods", "-l", "app.kubernetes.io/component="+component)
	var live []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (s *suite) agentPod() corev1.Pod {
	s.t.Helper()
	ps := s.pods("agent")
	if len(ps) != 1 {
		s.t.Fatalf("%d agent pods, want 1", len(ps))
	}
	return ps[0]
}

// Capability bits (linux/capability.h).
const (
	capNetAdmin = 12
	capPerfmon  = 38
	capBPF      = 39
)

// checkPods checks that the controller and agent pods are Ready with the
// chart's least-privilege settings, in the pod specs and in the agent
// process's effective capabilities.
func (s *suite) checkPods() {
	for _, comp := range []string{"controller", "agent"} {
		ps := s.pods(comp)
		if len(ps) != 1 || !podReady(ps[0]) {
			s.t.Fatalf("%s pods: %d, want 1 Ready", comp, len(ps))
		}
		p := ps[0]
		for _, c := range p.Spec.Containers {
			sc := c.SecurityContext
			if sc == nil {
				s.t.Fatalf("%s container %s has no securityContext", comp, c.Name)
			}
			if sc.Privileged != nil && *sc.Privileged {
				s.t.Errorf("%s container %s is privileged", comp, c.Name)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				s.t.Errorf("%s container %s allows privilege escalation", comp, c.Name)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				s.t.Errorf("%s container %s has a writable root file system", comp, c.Name)
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				s.t.Errorf("%s container %s does not drop ALL capabilities: %+v", comp, c.Name, sc.Capabilities)
			}
			var add []string
			if sc.Capabilities != nil {
				for _, a := range sc.Capabilities.Add {
					add = append(add, string(a))
				}
			}
			slices.Sort(add)
			want := []string(nil)
			if comp == "agent" {
				want = []string{"BPF", "NET_ADMIN", "PERFMON"}
			}
			if !slices.Equal(add, want) {
				s.t.Errorf("%s container %s adds capabilities %v, want %v", comp, c.Name, add, want)
			}
			s.t.Logf("%s pod %s: image %s, hostNetwork %v, capabilities add %v drop %v, privileged %v",
				comp, p.Name, c.Image, p.Spec.HostNetwork, add, sc.Capabilities.Drop, sc.Privileged != nil && *sc.Privileged)
		}
		if comp == "controller" {
			psc := p.Spec.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
				s.t.Errorf("controller pod does not run as non-root")
			}
		}
	}
	// The agent process: exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN.
	pid := agentPID(s.t)
	eff, bnd := capabilities(s.t, pid)
	want := uint64(1)<<capNetAdmin | uint64(1)<<capPerfmon | uint64(1)<<capBPF
	if eff != want || bnd != want {
		s.t.Errorf("agent process %d: CapEff %#x CapBnd %#x, want %#x (BPF, PERFMON, NET_ADMIN)", pid, eff, bnd, want)
	} else {
		s.t.Logf("agent process %d runs with CapEff=CapBnd=%#x: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN only", pid, eff)
	}
}

// agentProcesses lists processes running the lanmonitor binaries.
func agentProcesses() []string {
	var out []string
	for _, p := range localcluster.ClusterProcesses() {
		if strings.Contains(p, "/lanmonitor-agent") || strings.Contains(p, "/lanmonitor-controller") {
			out = append(out, p)
		}
	}
	return out
}

func agentPID(t *testing.T) int {
	t.Helper()
	for _, p := range localcluster.ClusterProcesses() {
		f := strings.Fields(p)
		if len(f) >= 3 && f[1] == "/lanmonitor-agent" && f[2] == "kubernetes" {
			pid, _ := strconv.Atoi(f[0])
			return pid
		}
	}
	t.Fatal("no agent process found")
	return 0
}

func capabilities(t *testing.T, pid int) (eff, bnd uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		switch k {
		case "CapEff":
			eff = n
		case "CapBnd":
			bnd = n
		}
	}
	return eff, bnd
}

// idleCPU measures the agent process's CPU over idleWindow without
// traffic (its reports every reportInterval go on). The target (issue 11:
// under 1% of a core) is measured at scale by agent's BenchmarkAgentIdleCPU;
// here a busy loop or a per-second rebuild would show, so above 5% fails.
func (s *suite) idleCPU() {
	const idleWindow = 20 * time.Second
	pid := agentPID(s.t)
	cpu0, err := testenv.ProcessCPU(pid)
	if err != nil {
		s.t.Fatal(err)
	}
	t0 := time.Now()
	time.Sleep(idleWindow)
	cpu1, err := testenv.ProcessCPU(pid)
	if err != nil {
		s.t.Fatal(err)
	}
	share := 100 * (cpu1 - cpu0) / time.Since(t0).Seconds()
	s.t.Logf("idle agent process %d: %.2f%% of a core over %v (%.2f s CPU), reports every %v", pid, share, idleWindow, cpu1-cpu0, reportInterval)
	if share > 5 {
		s.t.Errorf("the idle agent used %.2f%% of a core, more than 5%%", share)
	}
}

func (s *suite) applyObjects() {
	s.kubectlApply(fmt.Sprintf(`apiVersion: lanmonitor.io/v1alpha1
kind: LanMonitor
metadata:
  name: %s
spec:
  interface: %s
  promiscuous: true
  reportInterval: %s
  topN: 10
  internalCIDRs: ["198.18.0.0/15", "2001:db8::/32"]
---
apiVersion: lanmonitor.io/v1alpha1
kind: IPBlock
metadata:
  name: %s
spec:
  cidrs: ["%s", "%s"]
  mode: Enforce
  reason: cluster e2e
`, monitorName, s.env.LabInterface, reportInterval, blockName, blocked4, blocked6))
	s.waitFor(time.Minute, "LanMonitor ready on the node", func() bool {
		var m v1alpha1.LanMonitor
		s.getJSON(&m, "lanmonitors.lanmonitor.io", monitorName)
		return m.Status.Nodes.Desired == 1 && m.Status.Nodes.Ready == 1
	})
	s.waitFor(time.Minute, "IPBlock enforced", func() bool {
		var b v1alpha1.IPBlock
		s.getJSON(&b, "ipblocks.lanmonitor.io", blockName)
		for _, c := range b.Status.Conditions {
			if c.Type == v1alpha1.ConditionEnforced {
				return c.Status == "True" && c.ObservedGeneration == b.Generation
			}
		}
		return false
	})
	_, out := s.table("lanmonitors,ipblocks,lanmonitornodes")
	s.t.Logf("kubectl get lanmonitors,ipblocks,lanmonitornodes:\n%s", out)
	// The program is on the lab interface and on no interface of the
	// machine's own.
	snap, err := localcluster.TakeSnapshot()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, l := range snap.Links {
		name := strings.Fields(l)[0]
		if strings.HasSuffix(l, " xdp") != (name == s.env.LabInterface) {
			s.t.Errorf("root namespace interface %s: want XDP only on %s", l, s.env.LabInterface)
		}
	}
	s.t.Logf("root namespace interfaces: %v", snap.Links)
}

// frame builds a UDP frame from src to the lab destination of its family,
// addressed to the root end's MAC (so the node counts it as local).
func (s *suite) frame(src netip.Addr, payload int, seq int) []byte {
	dst := dst4
	if src.Is6() {
		dst = dst6
	}
	return frames.MustBuild(frames.Spec{SrcMAC: s.srcMAC, DstMAC: s.dstMAC, Src: src, Dst: dst,
		Protocol: layers.IPProtocolUDP, SrcPort: uint16(40000 + seq%1000), DstPort: 9999, Payload: payload})
}

// srcOf returns the source address of an IPv4 or IPv6 Ethernet frame.
func srcOf(f []byte) netip.Addr {
	if len(f) < 14 {
		return netip.Addr{}
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800:
		if len(f) >= 14+20 {
			return netip.AddrFrom4([4]byte(f[26:30]))
		}
	case 0x86dd:
		if len(f) >= 14+40 {
			return netip.AddrFrom16([16]byte(f[22:38]))
		}
	}
	return netip.Addr{}
}

// send sends n frames from src, paced (32 frames per millisecond) so that
// no frame is lost before XDP in the veth's receive ring: every one must
// be counted.
func (s *suite) send(src netip.Addr, n, payload int) {
	s.t.Helper()
	for i := range n {
		if err := s.sender.Send(s.frame(src, payload, i)); err != nil {
			s.t.Fatalf("send: %v", err)
		}
		if i%32 == 31 {
			time.Sleep(time.Millisecond)
		}
	}
}

func (s *suite) receiver(srcs ...netip.Addr) *localcluster.Receiver {
	s.t.Helper()
	r, err := localcluster.RootReceiver(func(f []byte) bool { return slices.Contains(srcs, srcOf(f)) })
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { r.Close() })
	return r
}

type agentTalker struct {
	Address string `json:"address"`
	Packets int64  `json:"packets"`
	Bytes   int64  `json:"bytes"`
}

// insecure trusts the agents' and the controller's self-signed certificates.
var insecure = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

// viewerToken creates (once) the service account lanmonitor-test-viewer,
// binds it to the chart's dashboard-viewer and metrics-reader ClusterRoles
// and returns a token of it from `kubectl create token`.
func (s *suite) viewerToken() string {
	if s.viewer == "" {
		s.kubectlRun("-n", namespace, "create", "serviceaccount", "lanmonitor-test-viewer")
		for _, role := range []string{"dashboard-viewer", "metrics-reader"} {
			s.kubectlRun("create", "clusterrolebinding", "lanmonitor-test-"+role, "--clusterrole", release+"-"+role,
				"--serviceaccount", namespace+":lanmonitor-test-viewer")
			s.top.Cleanup(func() {
				s.kubectlCmd("delete", "clusterrolebinding", "lanmonitor-test-"+role, "--ignore-not-found").Run()
			})
		}
		s.viewer = strings.TrimSpace(s.kubectlRun("-n", namespace, "create", "token", "lanmonitor-test-viewer"))
	}
	return s.viewer
}

// get sends GET url with token ("" none) and returns the status and body.
func (s *suite) get(url, token string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := insecure.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// agentTalkers reads the agent's /api/v1/talkers on its host-network
// port (127.0.0.1, HTTPS, the viewer's token).
func (s *suite) agentTalkers() map[string]agentTalker {
	code, raw, err := s.get("https://127.0.0.1:9470/api/v1/talkers?interface="+s.env.LabInterface, s.viewerToken())
	if err != nil || code != http.StatusOK {
		return nil
	}
	var body struct {
		Interface string        `json:"interface"`
		Talkers   []agentTalker `json:"talkers"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Interface != s.env.LabInterface {
		return nil
	}
	m := map[string]agentTalker{}
	for _, t := range body.Talkers {
		m[t.Address] = t
	}
	return m
}

// dashboards: the agent (on the node's loopback) and the controller's
// cluster dashboard (through kubectl port-forward of its Service) answer
// 401 without a token and 403 with one without the role; with the viewer's
// token the agent's latest report event and the cluster roll-up carry the
// exact drops of the blocked bursts, both pages are served, and the
// agent's /metrics (metrics-reader) has the block's exact drop counter.
func (s *suite) dashboards() {
	want := s.blockedSent.Load()
	// A free local port: other tests (the e2e demo) may hold fixed ones.
	pf := s.kubectlCmd("-n", namespace, "port-forward", "--address", "127.0.0.1", "svc/"+release+"-dashboard", ":9480")
	out, err := pf.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := pf.Start(); err != nil {
		s.t.Fatal(err)
	}
	defer func() { pf.Process.Kill(); pf.Wait() }()
	// "Forwarding from 127.0.0.1:PORT -> 9480"
	line, err := bufio.NewReader(out).ReadString('\n')
	m := regexp.MustCompile(`127\.0\.0\.1:(\d+) -> 9480`).FindStringSubmatch(line)
	if err != nil || m == nil {
		s.t.Fatalf("kubectl port-forward: %q, %v", line, err)
	}
	go io.Copy(io.Discard, out)
	cluster := "https://127.0.0.1:" + m[1]
	s.kubectlRun("-n", namespace, "create", "serviceaccount", "lanmonitor-test-nobody")
	nobody := strings.TrimSpace(s.kubectlRun("-n", namespace, "create", "token", "lanmonitor-test-nobody"))
	viewer := s.viewerToken()
	for _, base := range []string{"https://127.0.0.1:9470", cluster} {
		var code int
		s.waitFor(30*time.Second, base+" to answer", func() bool {
			var err error
			code, _, err = s.get(base+"/api/v1/history?limit=1", "")
			return err == nil
		})
		if code != http.StatusUnauthorized {
			s.t.Errorf("GET %s/api/v1/history without a token: %d, want 401", base, code)
		}
		if code, body, _ := s.get(base+"/api/v1/history?limit=1", nobody); code != http.StatusForbidden {
			s.t.Errorf("GET %s/api/v1/history with a token without the role: %d %s, want 403", base, code, body)
		}
		if code, body, _ := s.get(base+"/", viewer); code != http.StatusOK || !strings.Contains(string(body), "<title>") {
			s.t.Errorf("GET %s/: %d %.200s", base, code, body)
		}
	}
	// The agent's /metrics: the metrics-reader role (the viewer has it, as
	// the chart's Prometheus binding gives it), not another account.
	if code, body, _ := s.get("https://127.0.0.1:9470/metrics", nobody); code != http.StatusForbidden {
		s.t.Errorf("GET the agent's /metrics with a token without the role: %d %.200s, want 403", code, body)
	}
	dropped := fmt.Sprintf("lanmonitor_rule_dropped_packets_total{interface=%q,ipblock=%q} %d\n", s.env.LabInterface, blockName, want)
	s.waitFor(30*time.Second, "the agent's /metrics with "+strings.TrimSpace(dropped), func() bool {
		code, body, err := s.get("https://127.0.0.1:9470/metrics", viewer)
		return err == nil && code == http.StatusOK && strings.Contains(string(body), dropped)
	})
	latest := func(base string, v any) bool {
		code, body, err := s.get(base+"/api/v1/history?limit=1", viewer)
		var h struct {
			Events []struct {
				Data json.RawMessage `json:"data"`
			} `json:"events"`
		}
		return err == nil && code == http.StatusOK && json.Unmarshal(body, &h) == nil && len(h.Events) == 1 && json.Unmarshal(h.Events[0].Data, v) == nil
	}
	s.waitFor(30*time.Second, fmt.Sprintf("the agent's report event with %d dropped by %s", want, blockName), func() bool {
		var ev struct {
			Rules []struct {
				Name           string `json:"name"`
				DroppedPackets int64  `json:"droppedPackets"`
			} `json:"rules"`
		}
		return latest("https://127.0.0.1:9470", &ev) && len(ev.Rules) == 1 && ev.Rules[0].Name == blockName && ev.Rules[0].DroppedPackets == want
	})
	node := s.agentPod().Spec.NodeName
	s.waitFor(30*time.Second, fmt.Sprintf("the cluster roll-up with %s attached and %d dropped", node, want), func() bool {
		var ev struct {
			Nodes []struct {
				Node     string `json:"node"`
				Attached bool   `json:"attached"`
			} `json:"nodes"`
			Totals struct {
				DroppedPackets int64 `json:"droppedPackets"`
			} `json:"totals"`
			IPBlocks []struct {
				Name     string `json:"name"`
				Enforced int    `json:"enforced"`
				PerNode  []struct {
					Node           string `json:"node"`
					DroppedPackets int64  `json:"droppedPackets"`
				} `json:"perNode"`
			} `json:"ipBlocks"`
		}
		return latest(cluster, &ev) && len(ev.Nodes) == 1 && ev.Nodes[0].Node == node && ev.Nodes[0].Attached &&
			ev.Totals.DroppedPackets == want && len(ev.IPBlocks) == 1 && ev.IPBlocks[0].Enforced == 1 &&
			len(ev.IPBlocks[0].PerNode) == 1 && ev.IPBlocks[0].PerNode[0].DroppedPackets == want
	})
}

// countedBurst sends counted bursts from two lab hosts; the LanMonitor
// shows the bigger one as TOP TALKER and both with their exact packet
// counts, as do the node's report and the agent's API.
func (s *suite) countedBurst() {
	const n4, n6 = 300, 200
	r := s.receiver(talker4, talker6)
	s.send(talker4, n4, 200)
	s.send(talker6, n6, 100)
	want := map[string]int64{talker4.String(): n4, talker6.String(): n6}
	var row map[string]string
	var out string
	took := s.waitFor(30*time.Second, "TOP TALKER "+talker4.String()+" with exact counts", func() bool {
		rows, o := s.table("lanmonitors")
		if len(rows) != 1 || rows[0]["TOP TALKER"] != talker4.String() {
			return false
		}
		row, out = rows[0], o
		var m v1alpha1.LanMonitor
		s.getJSON(&m, "lanmonitors.lanmonitor.io", monitorName)
		got := map[string]int64{}
		for _, tk := range m.Status.TopTalkers {
			got[tk.Address] = tk.Packets
		}
		return got[talker4.String()] == n4 && got[talker6.String()] == n6
	})
	s.t.Logf("kubectl get lanmonitors (%.1fs after the bursts):\n%s", took.Seconds(), out)
	_ = row
	var node v1alpha1.LanMonitorNode
	s.getJSON(&node, "lanmonitornodes.lanmonitor.io", s.env.NodeName)
	if len(node.Status.Interfaces) != 1 {
		s.t.Fatalf("LanMonitorNode %s reports %d interfaces", s.env.NodeName, len(node.Status.Interfaces))
	}
	for _, tk := range node.Status.Interfaces[0].TopTalkers {
		if w, ok := want[tk.Address]; ok && tk.Packets != w {
			s.t.Errorf("LanMonitorNode talker %s: %d packets, want %d", tk.Address, tk.Packets, w)
		}
	}
	api := s.agentTalkers()
	for a, w := range want {
		if got := api[a].Packets; got != w {
			s.t.Errorf("agent /api/v1/talkers %s: %d packets, want %d", a, got, w)
		}
	}
	s.t.Logf("agent /api/v1/talkers: %+v", api)
	if got, drops := r.N(), r.Drops(); got != n4+n6 || drops != 0 {
		s.t.Errorf("root end of %s received %d of the %d allowed frames (socket drops %d)", s.env.LabInterface, got, n4+n6, drops)
	}
}

// dropped returns the IPBlock's DROPPED column and status.
func (s *suite) dropped() (string, int64) {
	rows, _ := s.table("ipblocks")
	var b v1alpha1.IPBlock
	s.getJSON(&b, "ipblocks.lanmonitor.io", blockName)
	if len(rows) != 1 {
		return "", b.Status.DroppedPackets
	}
	return rows[0]["DROPPED"], b.Status.DroppedPackets
}

// blockedBurst: a counted burst from the blocked hosts is dropped frame
// for frame: DROPPED equals what was sent, and none reached the root end.
func (s *suite) blockedBurst() {
	const n4, n6 = 250, 50
	r := s.receiver(blocked4, blocked6)
	s.send(blocked4, n4, 10)
	s.send(blocked6, n6, 10)
	s.blockedSent.Add(n4 + n6)
	want := s.blockedSent.Load()
	s.waitFor(30*time.Second, fmt.Sprintf("DROPPED %d", want), func() bool {
		col, st := s.dropped()
		return col == strconv.FormatInt(want, 10) && st == want
	})
	_, out := s.table("ipblocks")
	s.t.Logf("kubectl get ipblocks:\n%s", out)
	time.Sleep(reportInterval + 500*time.Millisecond)
	if _, st := s.dropped(); st != want {
		s.t.Errorf("droppedPackets moved to %d, want %d", st, want)
	}
	if got := r.N(); got != 0 {
		s.t.Errorf("%d blocked frames reached the root end of %s", got, s.env.LabInterface)
	}
	_, out = s.table("lanmonitors,ipblocks,lanmonitornodes")
	s.t.Logf("kubectl get lanmonitors,ipblocks,lanmonitornodes:\n%s", out)
}

// flow sends blocked frames at about pps until stopped.
type flow struct {
	stop chan struct{}
	done chan struct{}
	sent atomic.Int64
	err  error
}

func (s *suite) startFlow(src netip.Addr, pps int) *flow {
	f := &flow{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(time.Second / time.Duration(pps))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			if err := s.sender.Send(s.frame(src, 10, i)); err != nil {
				f.err = err
				return
			}
			f.sent.Add(1)
		}
	}()
	return f
}

func (f *flow) Stop() error {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
	return f.err
}

// attachWatch polls the lab interface's XDP attachment and pin directory
// every 5 ms and records every program ID seen and any moment without a
// program or without the pinned link.
type attachWatch struct {
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	ids      []uint32
	gaps     int
	pinGaps  int
	polls    int
	firstErr error
}

func watchAttach() *attachWatch {
	w := &attachWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			id, err := localcluster.XDPProgID()
			pinned := exists(filepath.Join(localcluster.LabInterfacePins, "link"))
			w.mu.Lock()
			w.polls++
			if err != nil && w.firstErr == nil {
				w.firstErr = err
			}
			if id == 0 {
				w.gaps++
			} else if len(w.ids) == 0 || w.ids[len(w.ids)-1] != id {
				w.ids = append(w.ids, id)
			}
			if !pinned {
				w.pinGaps++
			}
			w.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return w
}

func (w *attachWatch) Stop() {
	close(w.stop)
	<-w.done
}

// underNewCRDs applies this chart's CRDs as its pre-upgrade hook does
// (server-side apply, field manager lanmonitor-crds) and holds the window
// that follows open: the previous release's controller and agent run
// under the new schema until helm replaces them, on a large cluster for
// minutes. It returns once the node's LanMonitorNode has been written
// three times under it (the old agent reports every interval while the
// blocked flow runs; the old controller's writes count too), with the
// old agent enforcing whatever that led to.
func (s *suite) underNewCRDs() {
	s.t.Helper()
	s.kubectlRun("apply", "--server-side", "--force-conflicts", "--field-manager=lanmonitor-crds", "-f", filepath.Join(s.repo, "charts/lanmonitor/crds/"))
	s.kubectlRun("wait", "--for=condition=Established", "--timeout=1m",
		"crd/lanmonitors.lanmonitor.io", "crd/ipblocks.lanmonitor.io", "crd/lanmonitornodes.lanmonitor.io")
	t0 := time.Now()
	last, writes := s.lanMonitorNode().ResourceVersion, 0
	s.waitFor(30*time.Second, "three LanMonitorNode writes of the previous release under this chart's CRDs", func() bool {
		if rv := s.lanMonitorNode().ResourceVersion; rv != last {
			last, writes = rv, writes+1
		}
		return writes >= 3
	})
	s.t.Logf("the previous release ran under this chart's CRDs for %.1fs (3 LanMonitorNode writes)", time.Since(t0).Seconds())
}

// acrossRollover runs action (which replaces the agent pod) while a
// blocked flow runs and the attachment is watched: no blocked frame may
// reach the root end, the interface never lacks a program or its pinned
// link, the new pod logs that it adopted the pinned link and swapped in
// its own program (a new program ID), and DROPPED stays exact.
func (s *suite) acrossRollover(what, wantTag string, action func()) {
	old := s.agentPod()
	oldID, err := localcluster.XDPProgID()
	if err != nil || oldID == 0 {
		s.t.Fatalf("no XDP program on %s before %s (%v)", s.env.LabInterface, what, err)
	}
	r := s.receiver(blocked4, blocked6)
	w := watchAttach()
	f := s.startFlow(blocked4, 200)
	t0 := time.Now()
	action()
	var newPod corev1.Pod
	took := s.waitFor(2*time.Minute, "a new Ready agent pod", func() bool {
		ps := s.pods("agent")
		if len(ps) == 1 && ps[0].UID != old.UID && podReady(ps[0]) {
			newPod = ps[0]
			return true
		}
		return false
	})
	var logs string
	s.waitFor(30*time.Second, "the new agent's attach log line", func() bool {
		out, err := s.kubectlCmd("-n", namespace, "logs", newPod.Name).CombinedOutput()
		logs = string(out)
		return err == nil && strings.Contains(logs, `"msg":"attached"`)
	})
	time.Sleep(time.Second) // blocked frames keep coming after the swap
	if err := f.Stop(); err != nil {
		s.t.Fatalf("blocked flow: %v", err)
	}
	w.Stop()
	s.blockedSent.Add(f.sent.Load())
	var attached string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"msg":"attached"`) {
			attached = l
		}
	}
	s.t.Logf("%s: new pod %s Ready after %.1fs; it logged: %s", what, newPod.Name, took.Seconds(), attached)
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
			s.t.Logf("the new agent logged: %s", l)
		}
	}
	if !strings.Contains(attached, `"adopted":true`) {
		s.t.Errorf("the new agent did not adopt the pinned link: %s", attached)
	}
	newID, _ := localcluster.XDPProgID()
	w.mu.Lock()
	s.t.Logf("XDP program IDs seen on %s across %s (%d polls in %.1fs): %v; polls without a program: %d, without the pinned link: %d",
		s.env.LabInterface, what, w.polls, time.Since(t0).Seconds(), w.ids, w.gaps, w.pinGaps)
	if w.gaps != 0 || w.pinGaps != 0 || w.firstErr != nil {
		s.t.Errorf("the program or its pinned link was missing in %d/%d polls (err %v)", w.gaps, w.pinGaps, w.firstErr)
	}
	if newID == oldID || newID == 0 || !strings.Contains(attached, fmt.Sprintf(`"programID":%d`, newID)) {
		s.t.Errorf("program %d before, %d after (want a new program, the one the new agent logged)", oldID, newID)
	}
	w.mu.Unlock()
	if got := r.N(); got != 0 {
		s.t.Errorf("%d of %d blocked frames reached the root end of %s across %s", got, f.sent.Load(), s.env.LabInterface, what)
	} else {
		s.t.Logf("0 of %d blocked frames (200/s) reached the root end across %s", f.sent.Load(), what)
	}
	if wantTag != "" && !strings.HasSuffix(newPod.Spec.Containers[0].Image, ":"+wantTag) {
		s.t.Errorf("new agent pod runs %s, want tag %s", newPod.Spec.Containers[0].Image, wantTag)
	}
	want := s.blockedSent.Load()
	s.waitFor(30*time.Second, fmt.Sprintf("DROPPED %d after %s", want, what), func() bool {
		col, st := s.dropped()
		return col == strconv.FormatInt(want, 10) && st == want
	})
}

// uninstall releases the nodes (by hand until the drain hook is used),
// uninstalls the release and deletes the CRDs.
func (s *suite) uninstall() {
	if !useDrainHook {
		s.kubectlRun("delete", "lanmonitors", "--all", "--wait=true")
		s.kubectlRun("wait", "--for=delete", "lanmonitornodes", "--all", "--timeout=2m")
		s.waitFor(30*time.Second, "the agent to release "+s.env.LabInterface, func() bool {
			id, _ := localcluster.XDPProgID()
			return id == 0 && !exists(localcluster.LabInterfacePins)
		})
	}
	out := s.helmRun("uninstall", release, "-n", namespace, "--wait", "--timeout", "3m")
	s.t.Logf("helm uninstall: %s", strings.TrimSpace(out))
	s.kubectlRun("delete", "-f", filepath.Join(s.repo, "charts/lanmonitor/crds/"), "--wait=true")
	s.waitFor(time.Minute, "the release's pods to go", func() bool {
		var l corev1.PodList
		s.getJSON(&l, "-n", namespace, "pods")
		return len(l.Items) == 0
	})
	s.kubectlRun("delete", "namespace", namespace, "--wait=true")
}

// uninstallQuietly cleans up after a failure on an existing cluster.
func (s *suite) uninstallQuietly() {
	for _, args := range [][]string{
		{"delete", "lanmonitors", "--all", "--wait=true", "--timeout=60s"},
		{"wait", "--for=delete", "lanmonitornodes", "--all", "--timeout=60s"},
	} {
		s.kubectlCmd(args...).Run()
	}
	cmd := exec.Command(s.helm, "uninstall", release, "-n", namespace, "--wait", "--timeout", "2m")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.env.Kubeconfig)
	cmd.Run()
	s.kubectlCmd("delete", "-f", filepath.Join(s.repo, "charts/lanmonitor/crds/"), "--ignore-not-found", "--wait=true").Run()
	s.kubectlCmd("delete", "namespace", namespace, "--ignore-not-found", "--wait=true").Run()
}

// dumpState logs what helps to understand a failure.
func (s *suite) dumpState() {
	for _, args := range [][]string{
		{"get", "nodes,pods", "-A", "-o", "wide"},
		{"get", "lanmonitors,ipblocks,lanmonitornodes", "-o", "yaml"},
		{"-n", namespace, "logs", "-l", "app.kubernetes.io/component=agent", "--tail=40", "--prefix"},
		{"-n", namespace, "logs", "-l", "app.kubernetes.io/component=controller", "--tail=40", "--prefix"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
	} {
		out, err := s.kubectlCmd(args...).CombinedOutput()
		s.t.Logf("kubectl %s (%v):\n%s", strings.Join(args, " "), err, out)
	}
	for _, l := range []string{"kubelet", "containerd"} {
		b, _ := os.ReadFile(filepath.Join(localcluster.LogDir, l+".log"))
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		s.t.Logf("--- %s.log (tail):\n%s", l, b)
	}
}
