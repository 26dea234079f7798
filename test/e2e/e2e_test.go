// Package e2e runs lanmonitor end to end on one machine: a real
// kube-apiserver and etcd, the CRDs and RBAC of the Helm chart, the
// controller and one agent per lab node (the real binaries, as the chart's
// service accounts), and a lab LAN of network namespaces with real traffic
// (package internal/demo, which `make demo` uses too). Expectations are
// exact or bounded.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/internal/browsertest"
	"github.com/lanmonitor/lanmonitor/internal/demo"
	"github.com/lanmonitor/lanmonitor/internal/kubetable"
	"github.com/lanmonitor/lanmonitor/internal/lab"
	"github.com/lanmonitor/lanmonitor/internal/privileged"
)

// reportInterval of the e2e LanMonitors: short, so the suite is quick.
const reportInterval = 2 * time.Second

// repoRoot is the repository's root (the tests run in test/e2e).
func repoRoot(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(filepath.Dir(wd))
}

// tool runs hack/tools.sh target and returns the path it prints.
func tool(t *testing.T, repo, env, target string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	out, err := exec.Command(filepath.Join(repo, "hack/tools.sh"), target).Output()
	if err != nil {
		t.Fatalf("hack/tools.sh %s: %v", target, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// build compiles the binaries the demo runs into dir.
func build(t *testing.T, repo, dir string) {
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/lanmonitor-controller", "./cmd/lanmonitor-agent")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
}

type suite struct {
	t   *testing.T
	d   *demo.Demo
	ctx context.Context
	c   client.Client
}

func TestEndToEnd(t *testing.T) {
	privileged.Require(t)
	repo := repoRoot(t)
	bin := t.TempDir()
	build(t, repo, bin)
	stateDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d, err := demo.Up(ctx, demo.Options{
		Repo: repo, Bin: bin, StateDir: stateDir, Prefix: "lme2e-", NoSamples: true, NoTraffic: true,
		Assets: tool(t, repo, "KUBEBUILDER_ASSETS", "controlplane"), Helm: tool(t, repo, "HELM", "helm"),
		Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"controller", "agent-node1", "agent-node2", "agent-node3"} {
				raw, _ := os.ReadFile(filepath.Join(stateDir, "logs", f+".log"))
				t.Logf("--- %s log (last 4 KiB):\n%s", f, tail(raw, 4096))
			}
		}
		if err := d.Down(); err != nil {
			t.Errorf("tear down: %v", err)
		}
	})
	s := &suite{t: t, d: d, ctx: ctx, c: d.Client}

	s.apply(monitor("e2e", true, nil))
	s.waitMonitorReady("e2e", 3)
	heavy := s.flow(demo.Flow{Name: "heavy", From: d.Hosts["heavy"].NS, Src: d.Hosts["heavy"].IPv4, Dst: d.Nodes[0].IPv4, Payload: demo.HeavyPayload, PPS: demo.HeavyPPS})
	s.flow(demo.Flow{Name: "light-ipv6", From: d.Hosts["light2"].NS, Src: d.Hosts["light2"].IPv6, Dst: d.Nodes[2].IPv6, Payload: 400, PPS: 100})
	s.flow(demo.Flow{Name: "talk", From: d.Hosts["talk1"].NS, Src: d.Hosts["talk1"].IPv4, Dst: d.Hosts["talk2"].IPv4, Payload: 300, PPS: 200})

	t.Run("top talker", func(t *testing.T) { s.t = t; s.topTalker(heavy) })
	t.Run("blocked frames are dropped, exactly counted", func(t *testing.T) { s.t = t; s.blockedExact() })
	t.Run("the dashboards show it live, behind sign-in", func(t *testing.T) { s.t = t; s.dashboards(heavy) })
	t.Run("deleting the IPBlock stops drops within 2s; Audit counts without dropping", func(t *testing.T) { s.t = t; s.deleteAndAudit() })
	t.Run("snooped traffic is counted only on promiscuous nodes", func(t *testing.T) { s.t = t; s.snoopedOnlyPromiscuous() })
	t.Run("kill -9 of an agent: blocking holds, the restart adopts", func(t *testing.T) { s.t = t; s.killAgent() })
	t.Run("kube-apiserver down for 30s: enforcement and counting go on", func(t *testing.T) { s.t = t; s.apiServerOutage() })
	t.Run("invalid objects are rejected naming the field", func(t *testing.T) { s.t = t; s.invalidObjects() })
	t.Run("deleting the LanMonitor releases every node", func(t *testing.T) { s.t = t; s.deleteMonitor() })
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// monitor is the e2e LanMonitor: lan0 (the nodes' default route) on the
// nodes the selector picks.
func monitor(name string, promiscuous bool, sel *metav1.LabelSelector) *v1alpha1.LanMonitor {
	return &v1alpha1.LanMonitor{
		TypeMeta:   metav1.TypeMeta{APIVersion: "lanmonitor.io/v1alpha1", Kind: "LanMonitor"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.LanMonitorSpec{
			NodeSelector: sel, Promiscuous: &promiscuous, TopN: 10,
			ReportInterval: &metav1.Duration{Duration: reportInterval},
			InternalCIDRs:  []string{"198.18.0.0/15", "2001:db8::/32"},
		},
	}
}

func ipblock(name string, mode v1alpha1.BlockMode, cidrs ...string) *v1alpha1.IPBlock {
	return &v1alpha1.IPBlock{
		TypeMeta:   metav1.TypeMeta{APIVersion: "lanmonitor.io/v1alpha1", Kind: "IPBlock"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.IPBlockSpec{CIDRs: cidrs, Mode: mode},
	}
}

// apply creates or updates obj with server-side apply.
func (s *suite) apply(obj client.Object) {
	s.t.Helper()
	obj.SetManagedFields(nil)
	obj.SetResourceVersion("")
	if err := s.c.Patch(s.ctx, obj, client.Apply, client.FieldOwner("e2e"), client.ForceOwnership); err != nil {
		s.t.Fatalf("apply %s: %v", obj.GetName(), err)
	}
}

func (s *suite) flow(f demo.Flow) *demo.Sender {
	s.t.Helper()
	snd, err := s.d.StartFlow(s.ctx, f)
	if err != nil {
		s.t.Fatal(err)
	}
	return snd
}

func (s *suite) waitFor(timeout time.Duration, what string, cond func() bool) time.Duration {
	s.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			s.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func (s *suite) monitorStatus(name string) v1alpha1.LanMonitor {
	var m v1alpha1.LanMonitor
	if err := s.c.Get(s.ctx, client.ObjectKey{Name: name}, &m); err != nil {
		s.t.Fatal(err)
	}
	return m
}

func (s *suite) block(name string) v1alpha1.IPBlock {
	var b v1alpha1.IPBlock
	if err := s.c.Get(s.ctx, client.ObjectKey{Name: name}, &b); err != nil {
		s.t.Fatal(err)
	}
	return b
}

func (s *suite) node(name string) v1alpha1.LanMonitorNode {
	var n v1alpha1.LanMonitorNode
	if err := s.c.Get(s.ctx, client.ObjectKey{Name: name}, &n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

func (s *suite) waitMonitorReady(name string, nodes int32) {
	s.t.Helper()
	s.waitFor(time.Minute, fmt.Sprintf("LanMonitor %s ready on %d nodes", name, nodes), func() bool {
		st := s.monitorStatus(name).Status
		return st.Nodes.Desired == nodes && st.Nodes.Ready == nodes
	})
}

func (s *suite) waitEnforced(name string) {
	s.t.Helper()
	s.waitFor(time.Minute, "IPBlock "+name+" enforced", func() bool {
		b := s.block(name)
		c := findCondition(b.Status.Conditions, v1alpha1.ConditionEnforced)
		return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == b.Generation
	})
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// kubectl runs kubectl get with the demo's kubeconfig and returns the rows
// as maps from column header to cell.
func (s *suite) kubectl(resource string) []map[string]string {
	s.t.Helper()
	cmd := exec.Command("kubectl", "get", resource)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.d.Kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("kubectl get %s: %v\n%s", resource, err, out)
	}
	s.t.Logf("kubectl get %s:\n%s", resource, out)
	return kubetable.Parse(string(out))
}

// parseRate reads "8.3 Mbit/s" into bits per second.
func parseRate(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, fmt.Errorf("rate %q", s)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]float64{"bit/s": 1, "kbit/s": 1e3, "Mbit/s": 1e6, "Gbit/s": 1e9, "Tbit/s": 1e12}[f[1]]
	if mult == 0 {
		return 0, fmt.Errorf("rate unit %q", f[1])
	}
	return v * mult, nil
}

func (s *suite) topTalker(heavy *demo.Sender) {
	want := float64(heavy.BitsPerSecond())
	var row map[string]string
	var bps float64
	// The first report after the flow started covers part of an interval.
	s.waitFor(time.Minute, "the heavy host as TOP TALKER at its rate", func() bool {
		rows := s.kubectl("lanmonitors")
		if len(rows) != 1 || rows[0]["TOP TALKER"] != heavy.Src.String() {
			return false
		}
		row = rows[0]
		got, err := parseRate(row["RATE"])
		if err != nil || got < 0.9*want || got > 1.1*want {
			return false
		}
		st := s.monitorStatus("e2e").Status
		bps = float64(st.TopTalkers[0].BitsPerSecond)
		return st.TopTalkers[0].Address == heavy.Src.String() && bps > 0.9*want && bps < 1.1*want
	})
	s.t.Logf("TOP TALKER %s RATE %s; generated %.0f bit/s, status %.0f bit/s (%.1f%%)", row["TOP TALKER"], row["RATE"], want, bps, 100*(bps-want)/want)
}

// dashboards: the cluster dashboard and node2's agent dashboard, in
// Chromium, signed in with the viewer's token: the heavy host is the top
// talker, the blocked host's drops equal the IPBlock status (exact), every
// node is attached. Without a token both answer 401.
func (s *suite) dashboards(heavy *demo.Sender) {
	for _, u := range []string{s.d.ClusterDashboard + "/api/v1/history", s.d.Nodes[1].API + "/api/v1/history"} {
		plain := "http://" + strings.TrimPrefix(u, "https://")
		resp, err := http.Get(plain)
		if err != nil {
			s.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			s.t.Errorf("GET %s (plain HTTP to the HTTPS port): %s, want 400", plain, resp.Status)
		}
		resp, err = (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}).Get(u)
		if err != nil {
			s.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			s.t.Errorf("GET %s without a token: %s, want 401", u, resp.Status)
		}
	}
	dropped := s.block("blocked-host").Status.DroppedPackets
	b := browsertest.New(s.t)
	b.SignIn(s.d.ClusterDashboard, s.d.ViewerToken)
	b.WaitText("#conn", "live", 10*time.Second)
	b.WaitText("#talkers tbody tr:first-child th", heavy.Src.String(), 15*time.Second)
	b.Wait(fmt.Sprintf(`document.querySelector('#blocks tbody tr[data-block="blocked-host"] td[data-col="droppedPackets"]')?.dataset.value === "%d"`, dropped), 15*time.Second)
	b.WaitText("#nodes-ready", "3 of 3", 15*time.Second)

	b.Navigate(s.d.Nodes[1].API + "/")
	b.WaitText("#conn", "live", 10*time.Second)
	b.Wait(fmt.Sprintf(`document.querySelector('#blocks tbody tr[data-block="blocked-host"] td[data-col="dropped"]')?.dataset.value === "%d"`,
		s.node("node2").Status.IPBlocks[0].DroppedPackets), 15*time.Second)
}

// blockedExact: once the IPBlock is enforced, a burst from the blocked host
// to node2 is dropped frame for frame: DROPPED equals what was sent, and
// node2's stack received none of it.
func (s *suite) blockedExact() {
	s.apply(ipblock("blocked-host", v1alpha1.BlockModeEnforce, "198.18.0.66"))
	s.waitEnforced("blocked-host")
	h := s.d.Hosts["blocked"]
	const n = 500
	burst := s.flow(demo.Flow{Name: "blocked-burst", From: h.NS, Src: h.IPv4, Dst: s.d.Nodes[1].IPv4, Payload: 100, PPS: 250, Count: n})
	if err := burst.Wait(); err != nil {
		s.t.Fatal(err)
	}
	if burst.Sent() != n {
		s.t.Fatalf("sent %d, want %d", burst.Sent(), n)
	}
	s.waitFor(30*time.Second, fmt.Sprintf("DROPPED %d", n), func() bool {
		rows := s.kubectl("ipblocks")
		return len(rows) == 1 && rows[0]["DROPPED"] == strconv.Itoa(n)
	})
	if got := s.block("blocked-host").Status.DroppedPackets; got != n {
		s.t.Fatalf("status droppedPackets %d, want %d", got, n)
	}
	if got := s.d.Sinks["node2"].From(h.IPv4); got != 0 {
		s.t.Fatalf("%d blocked datagrams reached node2", got)
	}
	// A few more reports: the count stays exact (no double counting by
	// the nodes that saw the frames snooped).
	time.Sleep(2 * reportInterval)
	if got := s.block("blocked-host").Status.DroppedPackets; got != n {
		s.t.Fatalf("droppedPackets moved to %d, want %d", got, n)
	}
}

func (s *suite) deleteAndAudit() {
	h := s.d.Hosts["blocked"]
	flow := s.flow(demo.Flow{Name: "blocked-steady", From: h.NS, Src: h.IPv4, Dst: s.d.Nodes[1].IPv4, Payload: 100, PPS: 200})
	defer flow.Stop()
	time.Sleep(500 * time.Millisecond)
	if got := s.d.Sinks["node2"].From(h.IPv4); got != 0 {
		s.t.Fatalf("%d blocked datagrams reached node2 before the delete", got)
	}
	var b v1alpha1.IPBlock
	b.Name = "blocked-host"
	if err := s.c.Delete(s.ctx, &b); err != nil {
		s.t.Fatal(err)
	}
	took := s.waitFor(2*time.Second, "datagrams of the unblocked host at node2", func() bool { return s.d.Sinks["node2"].From(h.IPv4) > 0 })
	s.t.Logf("drops stopped %v after the IPBlock was deleted", took.Round(time.Millisecond))

	s.apply(ipblock("audit-host", v1alpha1.BlockModeAudit, "198.18.0.66"))
	s.waitEnforced("audit-host")
	before := s.d.Sinks["node2"].From(h.IPv4)
	s.waitFor(30*time.Second, "audit matches reported", func() bool {
		st := s.block("audit-host").Status
		return st.MatchedPackets > 100
	})
	st := s.block("audit-host").Status
	if st.DroppedPackets != 0 {
		s.t.Fatalf("Audit IPBlock dropped %d packets", st.DroppedPackets)
	}
	if after := s.d.Sinks["node2"].From(h.IPv4); after <= before {
		s.t.Fatalf("audited datagrams stopped reaching node2 (%d then %d)", before, after)
	}
	var a v1alpha1.IPBlock
	a.Name = "audit-host"
	if err := s.c.Delete(s.ctx, &a); err != nil {
		s.t.Fatal(err)
	}
}

// snoopedOnlyPromiscuous: node3 moves to a non-promiscuous LanMonitor; the
// conversation between two hosts keeps flowing through the hub, and only
// the promiscuous nodes count it.
func (s *suite) snoopedOnlyPromiscuous() {
	notNode3 := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"node3"}}}}
	onlyNode3 := &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/hostname": "node3"}}
	s.apply(monitor("e2e", true, notNode3))
	s.apply(monitor("quiet", false, onlyNode3))
	s.waitMonitorReady("e2e", 2)
	s.waitMonitorReady("quiet", 1)
	s.waitFor(30*time.Second, "node3 reporting its quiet interface", func() bool {
		st := s.node("node3").Status
		return len(st.Interfaces) == 1 && st.Interfaces[0].Monitor == "quiet" && st.Interfaces[0].Attached && !st.Interfaces[0].Promiscuous
	})
	time.Sleep(reportInterval + time.Second)
	q0, p0 := s.node("node3").Status.Interfaces[0].Totals.Snooped, s.node("node1").Status.Interfaces[0].Totals.Snooped
	time.Sleep(3 * reportInterval)
	q1, p1 := s.node("node3").Status.Interfaces[0].Totals.Snooped, s.node("node1").Status.Interfaces[0].Totals.Snooped
	if q1 != q0 {
		s.t.Fatalf("non-promiscuous node3 counted %d snooped frames", q1-q0)
	}
	if p1-p0 < 200 {
		s.t.Fatalf("promiscuous node1 counted %d snooped frames in %v of a 400 frames/s conversation", p1-p0, 3*reportInterval)
	}
	if flag, _ := promiscFlag(s.t, s.d.Nodes[2].NS); flag {
		s.t.Fatal("node3's lan0 still promiscuous")
	}
	// Back to one monitor on every node.
	var q v1alpha1.LanMonitor
	q.Name = "quiet"
	if err := s.c.Delete(s.ctx, &q); err != nil {
		s.t.Fatal(err)
	}
	s.apply(monitor("e2e", true, nil))
	s.waitMonitorReady("e2e", 3)
}

func promiscFlag(t *testing.T, ns *lab.NS) (bool, uint32) {
	l, err := ns.Link("lan0")
	if err != nil {
		t.Fatal(err)
	}
	var prog uint32
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		prog = x.ProgId
	}
	return l.Attrs().RawFlags&syscall.IFF_PROMISC != 0, prog
}

func (s *suite) killAgent() {
	s.apply(ipblock("blocked-host", v1alpha1.BlockModeEnforce, "198.18.0.66"))
	s.waitEnforced("blocked-host")
	h := s.d.Hosts["blocked"]
	before := s.d.Sinks["node2"].From(h.IPv4)
	flow := s.flow(demo.Flow{Name: "blocked-during-kill", From: h.NS, Src: h.IPv4, Dst: s.d.Nodes[1].IPv4, Payload: 100, PPS: 200})
	defer flow.Stop()
	node2 := s.d.Nodes[1]
	_, oldProg := promiscFlag(s.t, node2.NS)
	restarts := node2.Agent.Restarts()
	if err := node2.Agent.Kill(syscall.SIGKILL); err != nil {
		s.t.Fatal(err)
	}
	// The agent is restarted after a delay, as a DaemonSet's pod would be.
	time.Sleep(time.Second)
	if got := s.d.Sinks["node2"].From(h.IPv4); got != before {
		s.t.Fatalf("%d blocked datagrams reached node2 while its agent was dead", got-before)
	}
	s.waitFor(30*time.Second, "the restarted agent attached", func() bool {
		if node2.Agent.Restarts() == restarts {
			return false
		}
		_, prog := promiscFlag(s.t, node2.NS)
		return prog != 0 && prog != oldProg && s.agentReady(node2.API)
	})
	raw, _ := os.ReadFile(node2.Agent.Log)
	if !bytes.Contains(raw, []byte(`"adopted":true`)) {
		s.t.Fatalf("the restarted agent did not adopt the pinned link:\n%s", tail(raw, 2048))
	}
	time.Sleep(time.Second)
	if got := s.d.Sinks["node2"].From(h.IPv4); got != before {
		s.t.Fatalf("%d blocked datagrams reached node2 across the restart", got-before)
	}
}

func (s *suite) agentReady(api string) bool {
	resp, err := s.d.Get(context.Background(), api+"/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (s *suite) agentStats(api string) map[string]int64 {
	t := s.t
	resp, err := s.d.Get(context.Background(), api+"/api/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s/api/v1/stats: %s %s", api, resp.Status, b)
	}
	var m map[string]int64
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (s *suite) apiServerOutage() {
	h := s.d.Hosts["blocked"]
	node1 := s.d.Nodes[0]
	flow := s.flow(demo.Flow{Name: "blocked-during-outage", From: h.NS, Src: h.IPv4, Dst: s.d.Nodes[1].IPv4, Payload: 100, PPS: 100})
	defer flow.Stop()
	blockedBefore := s.d.Sinks["node2"].From(h.IPv4)
	droppedBefore := s.block("blocked-host").Status.DroppedPackets
	packetsBefore := s.agentStats(node1.API)["packets"]
	if err := s.d.StopAPIServer(); err != nil {
		s.t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted { // a failed check must not leave the later tests without an API server
			s.d.StartAPIServer(s.ctx)
		}
	}()
	time.Sleep(30 * time.Second)
	if got := s.d.Sinks["node2"].From(h.IPv4); got != blockedBefore {
		s.t.Fatalf("%d blocked datagrams passed while the API server was down", got-blockedBefore)
	}
	if err := s.d.StartAPIServer(s.ctx); err != nil {
		s.t.Fatal(err)
	}
	restarted = true
	// The agent's API authenticates tokens with the API server (reviews
	// are cached for a minute only), so read the counters once it is
	// back: at the heavy flow's rate they can only have grown by
	// 25 s worth if the agent counted through the outage.
	var packetsDuring int64
	s.waitFor(time.Minute, "the agent's API to answer again", func() bool {
		resp, err := s.d.Get(s.ctx, node1.API+"/api/v1/stats")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var m map[string]int64
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&m) != nil {
			return false
		}
		packetsDuring = m["packets"]
		return true
	})
	if packetsDuring-packetsBefore < 25*demo.HeavyPPS {
		s.t.Fatalf("node1 counted %d frames in the 30 s outage and after, want >= %d", packetsDuring-packetsBefore, 25*demo.HeavyPPS)
	}
	took := s.waitFor(time.Minute, "the status to catch up", func() bool {
		st := s.node("node1").Status
		return len(st.Interfaces) == 1 && st.Interfaces[0].Totals.Packets >= packetsDuring &&
			s.block("blocked-host").Status.DroppedPackets >= droppedBefore+3000
	})
	s.t.Logf("status caught up %v after the API server came back", took.Round(time.Millisecond))
}

func (s *suite) invalidObjects() {
	for _, c := range []struct {
		obj  client.Object
		want string
	}{
		{ipblock("bad-cidr", v1alpha1.BlockModeEnforce, "300.1.2.3"), `spec.cidrs[0]: Invalid value: "300.1.2.3": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`},
		{ipblock("bad-prefix", v1alpha1.BlockModeEnforce, "10.0.0.0/33"), `spec.cidrs[0]: Invalid value: "10.0.0.0/33"`},
		{func() client.Object { m := monitor("bad-topn", true, nil); m.Spec.TopN = 101; return m }(), "spec.topN: Invalid value: 101: spec.topN in body should be less than or equal to 100"},
		{func() client.Object {
			m := monitor("bad-interval", true, nil)
			m.Spec.ReportInterval = &metav1.Duration{Duration: 500 * time.Millisecond}
			return m
		}(), `spec.reportInterval: Invalid value: "500ms": must be at least 1s`},
	} {
		err := s.c.Create(s.ctx, c.obj)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			s.t.Errorf("%s: error %v, want it to contain %q", c.obj.GetName(), err, c.want)
		}
	}
}

func (s *suite) deleteMonitor() {
	var m v1alpha1.LanMonitor
	m.Name = "e2e"
	if err := s.c.Delete(s.ctx, &m); err != nil {
		s.t.Fatal(err)
	}
	s.waitFor(30*time.Second, "every node released and its LanMonitorNode gone", func() bool {
		var l v1alpha1.LanMonitorNodeList
		if err := s.c.List(s.ctx, &l); err != nil || len(l.Items) != 0 {
			return false
		}
		for _, n := range s.d.Nodes {
			if flag, prog := promiscFlag(s.t, n.NS); flag || prog != 0 {
				return false
			}
		}
		return true
	})
}
