package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lanmonitor/lanmonitor/internal/frames"
	"github.com/lanmonitor/lanmonitor/internal/privileged"
)

const (
	waitFor = 5 * time.Second
	settle  = 150 * time.Millisecond
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func addNS(t *testing.T, l *Lab, name string) *NS {
	t.Helper()
	n, err := l.AddNS(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func veth(t *testing.T, l *Lab, a *NS, an string, b *NS, bn string, opt VethOptions) {
	t.Helper()
	if err := l.Veth(a, an, b, bn, opt); err != nil {
		t.Fatal(err)
	}
}

func receiver(t *testing.T, n *NS, ifname string) *Receiver {
	t.Helper()
	r, err := n.Receiver(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func sender(t *testing.T, n *NS, ifname string) *Sender {
	t.Helper()
	s, err := n.Sender(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// oneOf matches frames of type typ whose bytes are one of want.
func oneOf(typ PacketType, want ...[]byte) func(Frame) bool {
	set := map[string]bool{}
	for _, w := range want {
		set[string(w)] = true
	}
	return func(f Frame) bool { return f.Type == typ && set[string(f.Data)] }
}

// rootLinks lists the interfaces of the process's (root) namespace, read
// only, as "index:name".
func rootLinks(t *testing.T) []string {
	t.Helper()
	self, err := netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	h, err := netlink.NewHandleAt(self)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		out = append(out, fmt.Sprintf("%d:%s", l.Attrs().Index, l.Attrs().Name))
	}
	slices.Sort(out)
	return out
}

// netnsEntries lists NetnsDir entries starting with prefix.
func netnsEntries(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// checkRootUnchanged fails t if the root namespace's forwarding is on or
// its interfaces differ from before, at the end of the test.
func checkRootUnchanged(t *testing.T) {
	t.Helper()
	if err := RootForwardingOff(); err != nil {
		t.Fatal(err)
	}
	before, sysBefore := rootLinks(t), rootSysctls()
	t.Cleanup(func() {
		if after := rootLinks(t); !slices.Equal(before, after) {
			t.Errorf("root namespace interfaces changed: before %v, after %v", before, after)
		}
		if after := rootSysctls(); after != sysBefore {
			t.Errorf("root namespace sysctls changed: before %s, after %s", sysBefore, after)
		}
	})
}

// rootSysctls reads (only) sysctls of the root namespace that the lab sets
// in its own namespaces.
func rootSysctls() string {
	var b strings.Builder
	for _, k := range []string{"ipv4/ip_forward", "ipv4/conf/all/forwarding", "ipv4/conf/default/forwarding",
		"ipv6/conf/all/forwarding", "ipv6/conf/default/forwarding", "ipv4/conf/default/rp_filter",
		"bridge/bridge-nf-call-arptables", "bridge/bridge-nf-call-iptables", "bridge/bridge-nf-call-ip6tables"} {
		v, err := os.ReadFile("/proc/sys/net/" + k)
		fmt.Fprintf(&b, "%s=%q(%v) ", k, bytes.TrimSpace(v), err)
	}
	return b.String()
}

func TestLAN(t *testing.T) {
	privileged.Require(t)
	checkRootUnchanged(t)
	l := New(t)
	node, host := addNS(t, l, "node"), addNS(t, l, "host")
	nodeMAC, hostMAC := mac("02:4c:4d:00:00:01"), mac("02:4c:4d:00:00:02")
	veth(t, l, node, "lan0", host, "eth0", VethOptions{MTU: 1400, MACA: nodeMAC, MACB: hostMAC})

	for _, c := range []struct {
		n      *NS
		ifname string
		mac    net.HardwareAddr
	}{{node, "lan0", nodeMAC}, {host, "eth0", hostMAC}} {
		link, err := c.n.Link(c.ifname)
		if err != nil {
			t.Fatal(err)
		}
		a := link.Attrs()
		if link.Type() != "veth" || a.MTU != 1400 || !bytes.Equal(a.HardwareAddr, c.mac) || a.OperState != netlink.OperUp {
			t.Errorf("%s in %s: type %s mtu %d mac %v oper %v, want veth 1400 %v up", c.ifname, c.n.Name, link.Type(), a.MTU, a.HardwareAddr, a.OperState, c.mac)
		}
	}

	nodeRecv, hostRecv := receiver(t, node, "lan0"), receiver(t, host, "eth0")
	var sent [][]byte
	for i := range 10 {
		sent = append(sent, frames.MustBuild(frames.Spec{
			SrcMAC: hostMAC, DstMAC: nodeMAC,
			Src: netip.MustParseAddr("198.18.0.2"), Dst: netip.MustParseAddr("198.18.0.1"),
			Protocol: layers.IPProtocolUDP, SrcPort: uint16(40000 + i), DstPort: 9999, Payload: 32,
		}))
	}
	atNode := nodeRecv.Count(oneOf(Host, sent...))
	atHost := hostRecv.Count(oneOf(Host, sent...)) // must stay 0: no outgoing copies
	s := sender(t, host, "eth0")
	for _, f := range sent {
		if err := s.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := atNode.Expect(10, waitFor, settle); err != nil {
		t.Fatal(err)
	}
	got := atNode.Frames()
	for i := range sent {
		if !bytes.Equal(got[i].Data, sent[i]) {
			t.Errorf("frame %d: got % x, want % x", i, got[i].Data, sent[i])
		}
	}
	if n := atHost.N(); n != 0 {
		t.Errorf("sending side's receiver saw %d of its own frames, want 0", n)
	}
	if st := nodeRecv.Stats(); st.Dropped != 0 || st.Received < 10 {
		t.Errorf("node receiver stats %+v, want >= 10 received, 0 dropped", st)
	}

	t.Run("vlan", func(t *testing.T) {
		// The kernel strips the outer tag on receive; the receiver puts it
		// back, so every frame arrives as sent.
		var tagged [][]byte
		for _, tags := range [][]layers.EthernetType{{layers.EthernetTypeDot1Q}, {layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q}} {
			tagged = append(tagged, frames.MustBuild(frames.Spec{
				SrcMAC: hostMAC, DstMAC: nodeMAC, Tags: tags,
				Src: netip.MustParseAddr("2001:db8::2"), Dst: netip.MustParseAddr("2001:db8::1"),
				Protocol: layers.IPProtocolUDP, SrcPort: 1, DstPort: 2, Payload: 8,
			}))
		}
		c := nodeRecv.Count(oneOf(Host, tagged...))
		for _, f := range tagged {
			if err := s.Send(f); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Expect(len(tagged), waitFor, settle); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("addresses", func(t *testing.T) {
		for _, p := range []string{"198.18.0.1/24", "2001:db8::1/64"} {
			if err := node.AddAddr("lan0", netip.MustParsePrefix(p)); err != nil {
				t.Fatal(err)
			}
		}
		link, _ := node.Link("lan0")
		addrs, err := node.Netlink().AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, a := range addrs {
			seen[a.IPNet.String()] = a.Flags
		}
		if _, ok := seen["198.18.0.1/24"]; !ok {
			t.Errorf("addresses %v lack 198.18.0.1/24", seen)
		}
		if f, ok := seen["2001:db8::1/64"]; !ok || f&unix.IFA_F_NODAD == 0 || f&unix.IFA_F_TENTATIVE != 0 {
			t.Errorf("2001:db8::1/64: present %v flags %#x, want nodad and not tentative", ok, f)
		}
		for _, p := range []string{"10.0.0.1/24", "198.20.0.1/24", "198.18.0.1/14", "2001:db9::1/64", "2001:db8::1/16", "::ffff:198.18.0.1/120"} {
			if err := node.AddAddr("lan0", netip.MustParsePrefix(p)); err == nil {
				t.Errorf("AddAddr(%s) succeeded, want refused", p)
			}
		}
	})
}

// switchLAN builds node, h1 and h2, each with one veth to the bridge br0
// of the namespace "switch".
func switchLAN(t *testing.T, hub bool) (l *Lab, sw, node, h1, h2 *NS) {
	l = New(t)
	sw, node, h1, h2 = addNS(t, l, "switch"), addNS(t, l, "node"), addNS(t, l, "h1"), addNS(t, l, "h2")
	veth(t, l, sw, "sw-node", node, "lan0", VethOptions{MACB: mac("02:4c:4d:00:01:01")})
	veth(t, l, sw, "sw-h1", h1, "eth0", VethOptions{MACB: mac("02:4c:4d:00:01:11")})
	veth(t, l, sw, "sw-h2", h2, "eth0", VethOptions{MACB: mac("02:4c:4d:00:01:12")})
	if err := sw.Bridge("br0", hub, "sw-node", "sw-h1", "sw-h2"); err != nil {
		t.Fatal(err)
	}
	return l, sw, node, h1, h2
}

func TestHub(t *testing.T) {
	privileged.Require(t)
	checkRootUnchanged(t)
	h1MAC, h2MAC := mac("02:4c:4d:00:01:11"), mac("02:4c:4d:00:01:12")
	unicast := frames.MustBuild(frames.Spec{
		SrcMAC: h1MAC, DstMAC: h2MAC,
		Src: netip.MustParseAddr("198.18.1.11"), Dst: netip.MustParseAddr("198.18.1.12"),
		Protocol: layers.IPProtocolUDP, SrcPort: 1111, DstPort: 2222, Payload: 16,
	})

	t.Run("hub", func(t *testing.T) {
		_, sw, node, h1, h2 := switchLAN(t, true)
		br, err := sw.Link("br0")
		if err != nil {
			t.Fatal(err)
		}
		if b, ok := br.(*netlink.Bridge); !ok || b.AgeingTime == nil || *b.AgeingTime != 0 {
			t.Fatalf("br0 is %T %+v, want a bridge with ageing time 0", br, br)
		}
		if _, err := os.Stat("/proc/sys/net/bridge"); err == nil {
			for _, k := range []string{"arptables", "iptables", "ip6tables"} {
				if v, err := sw.Sysctl("net.bridge.bridge-nf-call-" + k); err != nil || v != "0" {
					t.Errorf("bridge-nf-call-%s in the switch = %q (%v), want 0", k, v, err)
				}
			}
		}
		// unicast has a zero IPv4 header checksum: br_netfilter would drop it.
		snooped := receiver(t, node, "lan0").Count(oneOf(OtherHost, unicast))
		atH2 := receiver(t, h2, "eth0").Count(oneOf(Host, unicast))
		atH1 := receiver(t, h1, "eth0").Count(func(f Frame) bool { return bytes.Equal(f.Data, unicast) })
		if err := sender(t, h1, "eth0").Send(unicast); err != nil {
			t.Fatal(err)
		}
		if err := atH2.Expect(1, waitFor, 0); err != nil {
			t.Fatal(err)
		}
		if err := snooped.Expect(1, waitFor, settle); err != nil {
			t.Fatal(err)
		}
		if n := atH1.N(); n != 0 {
			t.Errorf("h1 saw its own frame %d times, want 0", n)
		}
	})

	// Control: a learning bridge that knows h2's port sends h1's unicast to
	// h2 only.
	t.Run("learning", func(t *testing.T) {
		_, _, node, h1, h2 := switchLAN(t, false)
		hello := frames.MustBuild(frames.Spec{
			SrcMAC: h2MAC, DstMAC: frames.BroadcastMAC,
			Src: netip.MustParseAddr("198.18.1.12"), Dst: netip.MustParseAddr("198.18.1.255"),
			Protocol: layers.IPProtocolUDP, SrcPort: 2222, DstPort: 2222,
		})
		nodeRecv := receiver(t, node, "lan0")
		learned := nodeRecv.Count(oneOf(Broadcast, hello))
		snooped := nodeRecv.Count(func(f Frame) bool { return bytes.Equal(f.Data, unicast) })
		atH2 := receiver(t, h2, "eth0").Count(oneOf(Host, unicast))
		if err := sender(t, h2, "eth0").Send(hello); err != nil {
			t.Fatal(err)
		}
		if err := learned.Expect(1, waitFor, 0); err != nil {
			t.Fatal(err)
		}
		if err := sender(t, h1, "eth0").Send(unicast); err != nil {
			t.Fatal(err)
		}
		if err := atH2.Expect(1, waitFor, settle); err != nil {
			t.Fatal(err)
		}
		if n := snooped.N(); n != 0 {
			t.Errorf("node saw h1->h2 unicast %d times through a learning bridge, want 0", n)
		}
	})
}

func TestHoldPromisc(t *testing.T) {
	privileged.Require(t)
	checkRootUnchanged(t)
	l := New(t)
	node, host := addNS(t, l, "node"), addNS(t, l, "host")
	veth(t, l, node, "lan0", host, "eth0", VethOptions{})
	state := func() (int, uint32) {
		t.Helper()
		link, err := node.Link("lan0")
		if err != nil {
			t.Fatal(err)
		}
		return link.Attrs().Promisc, link.Attrs().RawFlags
	}
	before, flags := state()
	if before != 0 || flags&unix.IFF_PROMISC != 0 {
		t.Fatalf("new veth: promiscuity %d flags %#x, want 0 and IFF_PROMISC clear", before, flags)
	}
	release, err := node.HoldPromisc("lan0")
	if err != nil {
		t.Fatal(err)
	}
	if p, flags := state(); p != before+1 || flags&unix.IFF_PROMISC != 0 {
		t.Errorf("held: promiscuity %d flags %#x, want %d and IFF_PROMISC clear", p, flags, before+1)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := release(); err != nil {
		t.Errorf("second release: %v", err)
	}
	if p, flags := state(); p != before || flags&unix.IFF_PROMISC != 0 {
		t.Errorf("released: promiscuity %d flags %#x, want %d and IFF_PROMISC clear", p, flags, before)
	}
	if _, err := node.HoldPromisc("nosuch0"); err == nil {
		t.Error("HoldPromisc(nosuch0) succeeded")
	}
}

func TestForwardingAndClose(t *testing.T) {
	privileged.Require(t)
	if err := RootForwardingOff(); err != nil { // before anything else
		t.Fatal(err)
	}
	checkRootUnchanged(t)
	l := New(t)
	sw, a, b := addNS(t, l, "switch"), addNS(t, l, "a"), addNS(t, l, "b")
	veth(t, l, sw, "sw-a", a, "eth0", VethOptions{})
	veth(t, l, sw, "sw-b", b, "eth0", VethOptions{})
	if err := sw.Bridge("br0", true, "sw-a", "sw-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Receiver("eth0"); err != nil { // closed by Close
		t.Fatal(err)
	}
	if _, err := a.HoldPromisc("eth0"); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Namespaces() {
		if err := n.ForwardingOff(); err != nil {
			t.Error(err)
		}
		keys := append([]string(nil), forwardingKeys...)
		for _, ifname := range []string{"lo", "eth0", "sw-a", "br0"} {
			if _, err := n.Link(ifname); err == nil {
				keys = append(keys, "net.ipv4.conf."+ifname+".forwarding", "net.ipv6.conf."+ifname+".forwarding")
			}
		}
		for _, k := range keys {
			if v, err := n.Sysctl(k); err != nil || v != "0" {
				t.Errorf("%s in %s = %q (%v), want 0", k, n.Name, v, err)
			}
		}
	}
	if got := netnsEntries(t, l.Prefix()); len(got) != 3 {
		t.Errorf("%s entries %v, want 3", NetnsDir, got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := netnsEntries(t, l.Prefix()); len(got) != 0 {
		t.Errorf("after Close, %s still has %v", NetnsDir, got)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.AddNS("late"); err == nil {
		t.Error("AddNS after Close succeeded")
	}
	// After Close nothing reaches another namespace: methods fail, and the
	// netlink handle still works in the emptied lab namespace (a closed
	// netlink.Handle would fall back to the root namespace).
	if err := a.Do(func() error { return nil }); err == nil {
		t.Error("Do after Close succeeded")
	}
	if _, err := a.Link("eth0"); err == nil {
		t.Error("Link after Close succeeded")
	}
	if err := a.AddAddr("eth0", netip.MustParsePrefix("198.18.0.1/24")); err == nil {
		t.Error("AddAddr after Close succeeded")
	}
	if err := l.Veth(a, "x", b, "y", VethOptions{}); err == nil {
		t.Error("Veth after Close succeeded")
	}
	if _, err := a.Sender("eth0"); err == nil {
		t.Error("Sender after Close succeeded")
	}
	links, err := a.Netlink().LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 || links[0].Attrs().Name != "lo" {
		var names []string
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		t.Errorf("closed namespace's netlink handle lists %v, want [lo]", names)
	}
}

func TestCommand(t *testing.T) {
	privileged.Require(t)
	if err := privileged.EnsureBPFFS(); err != nil {
		t.Fatal(err)
	}
	checkRootUnchanged(t)
	l := New(t)
	node, host := addNS(t, l, "node"), addNS(t, l, "host")
	veth(t, l, node, "lan0", host, "eth0", VethOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	run := func(name string, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		cmd := node.Command(ctx, name, args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := Run(cmd); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	if out := run("ip", "-o", "link", "show", "lan0"); !strings.Contains(out, ": lan0@") {
		t.Errorf("ip link show lan0: %q", out)
	}
	if out := run("stat", "-f", "-c", "%T", privileged.BPFFS); out != "bpf_fs" {
		t.Errorf("file system at %s in the namespace: %q, want bpf_fs", privileged.BPFFS, out)
	}
	ourMnt, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	if out := run("readlink", "/proc/self/ns/mnt"); out != ourMnt {
		t.Errorf("child mount namespace %s, want ours %s", out, ourMnt)
	}
	var st unix.Stat_t
	if err := unix.Stat(node.Path, &st); err != nil {
		t.Fatal(err)
	}
	if out, want := run("readlink", "/proc/self/ns/net"), fmt.Sprintf("net:[%d]", st.Ino); out != want {
		t.Errorf("child network namespace %s, want %s", out, want)
	}
	if _, err := netlink.LinkByName("lan0"); err == nil {
		t.Error("lan0 exists in the root namespace")
	}
	// A failing command reports its exit status.
	if err := Run(node.Command(ctx, "ip", "link", "show", "nosuch0")); err == nil {
		t.Error("ip link show nosuch0 succeeded")
	}
}

func TestDoAndSysctl(t *testing.T) {
	privileged.Require(t)
	checkRootUnchanged(t)
	l := New(t)
	n := addNS(t, l, "node")
	var st unix.Stat_t
	if err := unix.Stat(n.Path, &st); err != nil {
		t.Fatal(err)
	}
	var inside unix.Stat_t
	if err := n.Do(func() error { return unix.Stat("/proc/thread-self/ns/net", &inside) }); err != nil {
		t.Fatal(err)
	}
	if inside.Ino != st.Ino {
		t.Errorf("Do ran in namespace inode %d, want %d", inside.Ino, st.Ino)
	}
	if err := n.Do(func() error { return errors.New("boom") }); err == nil || err.Error() != "boom" {
		t.Errorf("Do error %v, want boom", err)
	}
	func() {
		defer func() {
			if p := recover(); p != "oops" {
				t.Errorf("recovered %v, want oops", p)
			}
		}()
		_ = n.Do(func() error { panic("oops") })
	}()
	if err := inProcessNS(func() error { return nil }); err != nil {
		t.Errorf("after Do: %v", err)
	}

	const key = "net.ipv4.conf.default.rp_filter"
	rootBefore, err := os.ReadFile("/proc/sys/net/ipv4/conf/default/rp_filter")
	if err != nil {
		t.Fatal(err)
	}
	want := "2"
	if strings.TrimSpace(string(rootBefore)) == "2" {
		want = "1"
	}
	if err := n.SetSysctl(key, want); err != nil {
		t.Fatal(err)
	}
	if v, err := n.Sysctl(key); err != nil || v != want {
		t.Errorf("%s in %s = %q (%v), want %s", key, n.Name, v, err, want)
	}
	if rootAfter, _ := os.ReadFile("/proc/sys/net/ipv4/conf/default/rp_filter"); !bytes.Equal(rootBefore, rootAfter) {
		t.Errorf("root %s changed from %q to %q", key, rootBefore, rootAfter)
	}
	for _, k := range []string{"kernel.hostname", "vm.swappiness", "net", "net..ipv4", "net/../kernel/hostname"} {
		if err := n.SetSysctl(k, "1"); err == nil {
			t.Errorf("SetSysctl(%s) succeeded, want refused", k)
		}
	}
	// The shared-file guard refuses a write to the file the root side
	// opened.
	tmp := filepath.Join(t.TempDir(), "shared")
	if err := os.WriteFile(tmp, []byte("0"), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(tmp, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := writeSysctl(tmp, "1", fd); err == nil || !strings.Contains(err.Error(), "shared") {
		t.Errorf("writeSysctl to the root's file: %v, want refused", err)
	}
	if b, _ := os.ReadFile(tmp); string(b) != "0" {
		t.Errorf("guarded file now %q", b)
	}
}

const crashEnv = "LANMONITOR_LAB_CRASH_PREFIX"

// TestCrashHelper is not a test: run by TestRemoveStale as a child process
// (crashEnv set), it creates namespaces and dies by SIGKILL without Close.
func TestCrashHelper(t *testing.T) {
	prefix, ok := os.LookupEnv(crashEnv)
	if !ok {
		t.Skip("helper process for TestRemoveStale")
	}
	l, err := NewNamed(prefix)
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.AddNS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.AddNS("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Veth(a, "eth0", b, "eth0", VethOptions{}); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("PREFIX=%s\n", l.Prefix())
	os.Stdout.Sync()
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

// crash runs TestCrashHelper with prefix ("" = random) and returns the
// prefix of the namespaces it left behind.
func crash(t *testing.T, prefix string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+prefix)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper: %v, want killed; output %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if p, ok := strings.CutPrefix(line, "PREFIX="); ok {
			return p
		}
	}
	t.Fatalf("helper printed no prefix: %s", out)
	return ""
}

func TestRemoveStale(t *testing.T) {
	privileged.Require(t)
	checkRootUnchanged(t)
	live := New(t)
	liveNS := addNS(t, live, "live")
	// Prefixes unique to this process: other processes' New sweep only the
	// random pattern, so concurrent test runs do not race for them.
	crashed := fmt.Sprintf("lmlabtest%d-", os.Getpid())
	reclaim := fmt.Sprintf("lmlabtest%dr-", os.Getpid())
	if !randomPrefix.MatchString(live.Prefix()) || randomPrefix.MatchString(crashed) || randomPrefix.MatchString(reclaim) {
		t.Fatalf("pattern %v: matches %q %v, %q %v, %q %v", randomPrefix, live.Prefix(), randomPrefix.MatchString(live.Prefix()),
			crashed, randomPrefix.MatchString(crashed), reclaim, randomPrefix.MatchString(reclaim))
	}
	if _, err := RemoveStale("x"); err == nil {
		t.Error("RemoveStale(x) succeeded, want refused")
	}

	if got := crash(t, crashed); got != crashed {
		t.Fatalf("helper prefix %q, want %q", got, crashed)
	}
	if got := netnsEntries(t, crashed); len(got) != 2 {
		t.Fatalf("crashed run left %v, want 2 namespaces", got)
	}
	removed, err := RemoveStale("") // New's pattern: neither ours nor the live lab's
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(removed, liveNS.Name) || slices.Contains(removed, crashed+"a") {
		t.Errorf("RemoveStale(\"\") removed %v", removed)
	}
	removed, err = RemoveStale(crashed)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{crashed + "a", crashed + "b"}; !slices.Equal(removed, want) {
		t.Errorf("RemoveStale(%s) = %v, want %v", crashed, removed, want)
	}
	if got := netnsEntries(t, crashed); len(got) != 0 {
		t.Errorf("stale entries %v remain", got)
	}
	if removed, err := RemoveStale(live.Prefix()); err != nil || len(removed) != 0 {
		t.Errorf("RemoveStale(live prefix) = %v, %v; want nothing", removed, err)
	}
	if err := liveNS.ForwardingOff(); err != nil {
		t.Errorf("live namespace after RemoveStale: %v", err)
	}

	// A fixed prefix (the demo's): a crashed run's namespace is replaced,
	// a running lab's is not.
	if got := crash(t, reclaim); got != reclaim {
		t.Fatalf("helper prefix %q, want %q", got, reclaim)
	}
	l1, err := NewNamed(reclaim)
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	if _, err := l1.AddNS("a"); err != nil {
		t.Fatalf("replacing the crashed run's %sa: %v", reclaim, err)
	}
	l2, err := NewNamed(reclaim)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if _, err := l2.AddNS("a"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second lab's AddNS(a): %v, want in use", err)
	}
	if err := errors.Join(l1.Close(), l2.Close()); err != nil {
		t.Fatal(err)
	}
	if removed, err := RemoveStale(reclaim); err != nil || len(removed) != 1 || removed[0] != reclaim+"b" {
		t.Errorf("RemoveStale(%s) = %v, %v; want [%sb]", reclaim, removed, err, reclaim)
	}
	if got := netnsEntries(t, reclaim); len(got) != 0 {
		t.Errorf("entries %v remain", got)
	}
}

func TestValidation(t *testing.T) {
	privileged.Require(t)
	l := New(t)
	other := New(t)
	a := addNS(t, l, "a")
	o := addNS(t, other, "o")
	if _, err := l.AddNS("a"); err == nil {
		t.Error("duplicate AddNS succeeded")
	}
	for _, name := range []string{"", "a/b", "../x", strings.Repeat("x", 33)} {
		if _, err := l.AddNS(name); err == nil {
			t.Errorf("AddNS(%q) succeeded", name)
		}
	}
	for _, c := range []struct {
		an, bn string
		opt    VethOptions
		b      *NS
	}{
		{"toolonginterface", "x", VethOptions{}, a},
		{"x", "x", VethOptions{}, a},
		{"x", "y", VethOptions{MACA: mac("01:00:5e:00:00:01")}, a},
		{"x", "y", VethOptions{}, o},
	} {
		if err := l.Veth(a, c.an, c.b, c.bn, c.opt); err == nil {
			t.Errorf("Veth(%s, %s, %+v) succeeded", c.an, c.bn, c.opt)
		}
	}
	for _, p := range []string{"demo-", "lm/x", "lm x"} {
		if _, err := NewNamed(p); err == nil {
			t.Errorf("NewNamed(%q) succeeded", p)
		}
	}
	if err := l.Veth(a, "x", a, "y", VethOptions{Queues: 2}); err != nil {
		t.Fatalf("veth inside one namespace: %v", err)
	}
	for _, name := range []string{"x", "y"} {
		link, err := a.Link(name)
		if err != nil {
			t.Fatal(err)
		}
		if at := link.Attrs(); at.NumTxQueues != 2 || at.NumRxQueues != 2 || at.OperState != netlink.OperUp {
			t.Errorf("%s: %d tx %d rx queues, %v; want 2, 2, up", name, at.NumTxQueues, at.NumRxQueues, at.OperState)
		}
	}
}
