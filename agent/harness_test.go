package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
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
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lanmonitor/lanmonitor/agent"
	"github.com/lanmonitor/lanmonitor/internal/frames"
	"github.com/lanmonitor/lanmonitor/internal/lab"
	"github.com/lanmonitor/lanmonitor/internal/privileged"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

// The lab LAN of the agent tests: a "node" namespace whose lan0 the agent
// watches, and a "host" namespace whose eth0 sends frames to it.
var (
	nodeMAC  = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01}
	hostMAC  = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x02}
	otherMAC = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x99}
	nodeIP4  = netip.MustParseAddr("198.18.0.1")
	nodeIP6  = netip.MustParseAddr("2001:db8::1")
)

type lan struct {
	lab        *lab.Lab
	node, host *lab.NS
	tx         *lab.Sender
	pinRoot    string
}

type lanOptions struct {
	mtu int
}

// newLAN builds the lab LAN. IPv6 is off on both ends so that the kernels
// send nothing of their own (neighbour discovery, MLD): every frame the
// agent counts is one the test sent.
func newLAN(t *testing.T, o lanOptions) *lan {
	t.Helper()
	l := lab.New(t)
	node, err := l.AddNS("node")
	if err != nil {
		t.Fatal(err)
	}
	host, err := l.AddNS("host")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*lab.NS{node, host} {
		for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
			if err := ns.SetSysctl(k, "1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Veth(node, "lan0", host, "eth0", lab.VethOptions{MACA: nodeMAC, MACB: hostMAC, MTU: o.mtu}); err != nil {
		t.Fatal(err)
	}
	tx, err := host.Sender("eth0")
	if err != nil {
		t.Fatal(err)
	}
	pinRoot, err := os.MkdirTemp(privileged.BPFFS, "lmtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pinRoot) })
	return &lan{lab: l, node: node, host: host, tx: tx, pinRoot: pinRoot}
}

// link returns the node's interface.
func (l *lan) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	lk, err := l.node.Link(name)
	if err != nil {
		t.Fatal(err)
	}
	return lk
}

// send sends frames from the host, failing the test on error.
func (l *lan) send(t *testing.T, fs ...[]byte) {
	t.Helper()
	for _, f := range fs {
		if err := l.tx.Send(f); err != nil {
			t.Fatal(err)
		}
	}
}

// sendOnOneCPU sends frames from an OS thread bound to CPU 0: a veth
// receives a frame on the CPU that sent it, so XDP runs there too. The
// thread stays locked, and ends with its goroutine, so the binding goes
// with it.
func (l *lan) sendOnOneCPU(t *testing.T, fs ...[]byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(0)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errc <- fmt.Errorf("bind to CPU 0: %w", err)
			return
		}
		for _, f := range fs {
			if err := l.tx.Send(f); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// udp builds a UDP frame from src to the node (local unless dst MAC given).
func udp(src string, payload int) []byte {
	s := netip.MustParseAddr(src)
	dst := nodeIP4
	if s.Is6() {
		dst = nodeIP6
	}
	return frames.MustBuild(frames.Spec{SrcMAC: hostMAC, DstMAC: nodeMAC, Src: s, Dst: dst, Protocol: layers.IPProtocolUDP, SrcPort: 4000, DstPort: 5000, Payload: payload})
}

func withSpec(src string, f func(*frames.Spec)) []byte {
	s := netip.MustParseAddr(src)
	dst := nodeIP4
	if s.Is6() {
		dst = nodeIP6
	}
	spec := frames.Spec{SrcMAC: hostMAC, DstMAC: nodeMAC, Src: s, Dst: dst, Protocol: layers.IPProtocolUDP, SrcPort: 4000, DstPort: 5000, Payload: 10}
	f(&spec)
	return frames.MustBuild(spec)
}

// The agent binaries under test, built once per test process.
var builds struct {
	sync.Mutex
	dir  string
	bins map[string]string
}

// agentBinary builds cmd/lanmonitor-agent with the given version string.
func agentBinary(t *testing.T, ver string) string {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	if bin, ok := builds.bins[ver]; ok {
		return bin
	}
	if builds.dir == "" {
		d, err := os.MkdirTemp("", "lanmonitor-agent-test-")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o755) // TestBadInput runs it as an unprivileged user
		builds.dir, builds.bins = d, map[string]string{}
	}
	bin := filepath.Join(builds.dir, "lanmonitor-agent-"+ver)
	cmd := exec.Command("go", "build", "-o", bin, "-ldflags", "-X github.com/lanmonitor/lanmonitor/internal/version.Version="+ver, "../cmd/lanmonitor-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	builds.bins[ver] = bin
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	os.Exit(code)
}

// agentProc is a running lanmonitor-agent standalone.
type agentProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	api    string // http://ADDR, or https://ADDR with --auth-token-file
	token  string // the bearer token requests send ("" none)
	logs   *syncBuffer
	exited chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listenRE = regexp.MustCompile(`msg="standalone agent running".* listen=(\S+) scheme=(\S+)`)

// testClient trusts the agents' self-signed certificates.
var testClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

// do sends GET path to the agent with its token.
func (p *agentProc) do(path string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, p.api+path, nil)
	if err != nil {
		return nil, err
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	return testClient.Do(req)
}

// manifests writes a manifest file for the tests and returns its path.
func manifests(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "lanmonitor.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const monitor1s = `apiVersion: lanmonitor.io/v1alpha1
kind: LanMonitor
metadata: {name: lab}
spec:
  reportInterval: 1s
  internalCIDRs: ["198.18.0.0/24", "2001:db8::/48"]
`

func ipblock(name string, cidrs ...string) string {
	return fmt.Sprintf("---\napiVersion: lanmonitor.io/v1alpha1\nkind: IPBlock\nmetadata: {name: %s}\nspec:\n  cidrs: [%s]\n", name, strings.Join(cidrs, ", "))
}

// start runs `lanmonitor-agent standalone` on the node's lan0 and waits
// until it serves its API.
func (l *lan) start(t *testing.T, bin, file string, extra ...string) *agentProc {
	t.Helper()
	p := l.startNoWait(t, bin, file, extra...)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if m := listenRE.FindStringSubmatch(p.logs.String()); m != nil {
			p.api = m[2] + "://" + m[1]
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("agent exited: %v\n%s", p.err, p.logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("agent did not start in 15 s:\n%s", p.logs)
	return nil
}

func (l *lan) startNoWait(t *testing.T, bin, file string, extra ...string) *agentProc {
	t.Helper()
	args := []string{"standalone", "-i", "lan0", "-f", file, "--netns", l.node.Path, "--pin-root", l.pinRoot, "--log-level", "debug"}
	if !slices.Contains(extra, "--listen") {
		args = append(args, "--listen", "127.0.0.1:0")
	}
	args = append(args, extra...)
	return runAgent(t, exec.Command(bin, args...))
}

// apiServer starts a real kube-apiserver and etcd for the test.
func apiServer(t *testing.T) *testenv.Env {
	t.Helper()
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	return env
}

// runAgent starts cmd (an agent command line) with its output captured,
// killed with the test process (Pdeathsig), and stopped at the end of the
// test: SIGTERM, then SIGKILL after 10 s; its log is printed if the test
// failed.
func runAgent(t *testing.T, cmd *exec.Cmd) *agentProc {
	t.Helper()
	p := &agentProc{t: t, cmd: cmd, logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if p.cmd.SysProcAttr == nil {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := lab.Start(p.cmd); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(10 * time.Second):
				p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("agent log (pid %d):\n%s", p.cmd.Process.Pid, p.logs)
		}
	})
	return p
}

// stop sends sig and waits for the exit; it returns the exit code.
func (p *agentProc) stop(sig syscall.Signal) int {
	p.t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("agent did not exit on %v:\n%s", sig, p.logs)
	}
	return p.cmd.ProcessState.ExitCode()
}

// get decodes GET path of the agent's API into v.
func (p *agentProc) get(path string, v any) {
	p.t.Helper()
	resp, err := p.do(path)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		p.t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		p.t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

func (p *agentProc) status(path string) int {
	resp, err := p.do(path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (p *agentProc) stats() agent.StatsResponse {
	var s agent.StatsResponse
	p.get("/api/v1/stats", &s)
	return s
}

func (p *agentProc) talkers() map[string]agent.TalkerJSON {
	var r agent.TalkersResponse
	p.get("/api/v1/talkers?limit=0", &r)
	m := map[string]agent.TalkerJSON{}
	for _, t := range r.Talkers {
		m[t.Address] = t
	}
	return m
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logged reports whether the agent's log has a line containing all of parts.
func (p *agentProc) logged(parts ...string) bool {
	sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
	for sc.Scan() {
		ok := true
		for _, part := range parts {
			ok = ok && strings.Contains(sc.Text(), part)
		}
		if ok {
			return true
		}
	}
	return false
}

// xdpState is the XDP attachment of an interface as the kernel reports it.
func xdpState(t *testing.T, ns *lab.NS, ifname string) (attached bool, mode uint32, progID uint32) {
	t.Helper()
	l, err := ns.Link(ifname)
	if err != nil {
		t.Fatal(err)
	}
	x := l.Attrs().Xdp
	if x == nil {
		return false, 0, 0
	}
	return x.Attached, x.AttachMode, x.ProgId
}

// promisc returns the IFF_PROMISC flag and the promiscuity counter.
func promisc(t *testing.T, ns *lab.NS, ifname string) (flag bool, counter int) {
	t.Helper()
	l, err := ns.Link(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().RawFlags&syscall.IFF_PROMISC != 0, l.Attrs().Promisc
}

// ctx returns a context ending with the test.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return c
}

// foreignProgram is an XDP program that is not lanmonitor's (it passes
// everything), as another tool would attach.
func foreignProgram(t *testing.T) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "foreign_xdp", Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
