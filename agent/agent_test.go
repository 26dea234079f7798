package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/lanmonitor/lanmonitor/agent"
	"github.com/lanmonitor/lanmonitor/internal/frames"
	"github.com/lanmonitor/lanmonitor/internal/lab"
)

// TestExactCounts: frames injected from the host namespace (IPv4 and IPv6
// sources, VLAN-tagged and QinQ frames, fragments) show up in
// /api/v1/talkers and /api/v1/stats with exact packets and bytes.
func TestExactCounts(t *testing.T) {
	l := newLAN(t, lanOptions{})
	a := l.start(t, agentBinary(t, "dev"), manifests(t, t.TempDir(), monitor1s))

	type want struct{ packets, bytes, snooped uint64 }
	talkers := map[string]*want{}
	var total want
	var ipv4, ipv6, frags, tagged, snooped uint64
	send := func(src string, f []byte, n int, kind ...string) {
		for range n {
			l.send(t, f)
		}
		w := talkers[src]
		if w == nil {
			w = &want{}
			talkers[src] = w
		}
		w.packets += uint64(n)
		w.bytes += uint64(n * len(f))
		total.packets += uint64(n)
		total.bytes += uint64(n * len(f))
		if strings.Contains(src, ":") {
			ipv6 += uint64(n)
		} else {
			ipv4 += uint64(n)
		}
		for _, k := range kind {
			switch k {
			case "frag":
				frags += uint64(n)
			case "tag":
				tagged += uint64(n)
			case "snooped":
				snooped += uint64(n)
				w.snooped += uint64(n)
			}
		}
	}
	send("198.18.0.10", udp("198.18.0.10", 100), 5)
	send("198.18.0.11", withSpec("198.18.0.11", func(s *frames.Spec) {
		s.Protocol = layers.IPProtocolTCP
		s.Tags = []layers.EthernetType{layers.EthernetTypeDot1Q}
	}), 3, "tag")
	send("2001:db8::10", udp("2001:db8::10", 60), 4)
	send("2001:db8::11", withSpec("2001:db8::11", func(s *frames.Spec) {
		s.Tags = []layers.EthernetType{layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q}
	}), 2, "tag")
	send("198.18.0.12", withSpec("198.18.0.12", func(s *frames.Spec) { s.MoreFragments = true; s.Payload = 1000 }), 1, "frag")
	send("198.18.0.12", withSpec("198.18.0.12", func(s *frames.Spec) { s.FragOffset = 126; s.MoreFragments = true; s.Payload = 1000 }), 1, "frag")
	send("198.18.0.12", withSpec("198.18.0.12", func(s *frames.Spec) { s.FragOffset = 252; s.Payload = 300 }), 1, "frag")
	send("2001:db8::12", withSpec("2001:db8::12", func(s *frames.Spec) {
		s.IPv6Ext = []frames.Ext{{Type: frames.ExtFragment, More: true}}
	}), 1, "frag")
	send("2001:db8::12", withSpec("2001:db8::12", func(s *frames.Spec) {
		s.IPv6Ext = []frames.Ext{{Type: frames.ExtFragment, FragOffset: 3}}
	}), 1, "frag")
	send("198.18.0.13", withSpec("198.18.0.13", func(s *frames.Spec) { s.DstMAC = otherMAC }), 2, "snooped")

	waitFor(t, 5*time.Second, "every frame counted", func() bool { return a.stats().Packets >= total.packets })
	time.Sleep(100 * time.Millisecond) // a surplus frame would show by now

	got := a.talkers()
	if len(got) != len(talkers) {
		t.Errorf("%d talkers %v, want %d", len(got), got, len(talkers))
	}
	for src, w := range talkers {
		g := got[src]
		internal := true
		if g.Packets != w.packets || g.Bytes != w.bytes || g.SnoopedPackets != w.snooped || g.LocalPackets != w.packets-w.snooped || g.Internal != internal {
			t.Errorf("talker %s: %+v, want %d packets, %d bytes, %d snooped, internal", src, g, w.packets, w.bytes, w.snooped)
		}
	}
	wantStats := agent.StatsResponse{
		Packets: total.packets, Bytes: total.bytes, Passed: total.packets, IPv4: ipv4, IPv6: ipv6,
		Fragments: frags, VLANTagged: tagged, Local: total.packets - snooped, Snooped: snooped,
		TalkerInserts: uint64(len(talkers)), TrackedSources: len(talkers), TrackedSourcesCapacity: 65536,
	}
	if s := a.stats(); s != wantStats {
		t.Errorf("stats\n got %+v\nwant %+v", s, wantStats)
	}
	// Rates appear after a report interval; the ranking is by rate, then bytes.
	var r agent.TalkersResponse
	a.get("/api/v1/talkers?limit=2", &r)
	if r.Interface != "lan0" || r.XDPMode != agent.XDPModeNative || !r.Promiscuous || len(r.Talkers) != 2 {
		t.Errorf("talkers header %+v: want lan0, Native, promiscuous, 2 talkers", r)
	}
}

// TestAttachModes covers Auto on a veth (native), a jumbo MTU veth (native
// refused by the driver for a program without multi-buffer support, so Auto
// falls back to generic and says why), and a foreign XDP program (busy:
// refused without touching it). Reported modes must match the kernel's.
func TestAttachModes(t *testing.T) {
	t.Run("auto is native on a veth", func(t *testing.T) {
		l := newLAN(t, lanOptions{})
		a := l.start(t, agentBinary(t, "dev"), manifests(t, t.TempDir(), monitor1s))
		attached, mode, _ := xdpState(t, l.node, "lan0")
		var r agent.TalkersResponse
		a.get("/api/v1/talkers", &r)
		if !attached || mode != nl.XDP_ATTACHED_DRV || r.XDPMode != agent.XDPModeNative {
			t.Fatalf("kernel: attached %v mode %d; agent: %s; want native (drv) both", attached, mode, r.XDPMode)
		}
	})
	t.Run("auto falls back to generic on a 9000-byte MTU", func(t *testing.T) {
		l := newLAN(t, lanOptions{mtu: 9000})
		a := l.start(t, agentBinary(t, "dev"), manifests(t, t.TempDir(), monitor1s))
		attached, mode, _ := xdpState(t, l.node, "lan0")
		var r agent.TalkersResponse
		a.get("/api/v1/talkers", &r)
		if !attached || mode != nl.XDP_ATTACHED_SKB || r.XDPMode != agent.XDPModeGeneric {
			t.Fatalf("kernel: attached %v mode %d; agent: %s; want generic (skb) both", attached, mode, r.XDPMode)
		}
		if !a.logged("attached", "xdpMode=Generic", "native mode refused") {
			t.Fatalf("the fallback reason is not reported:\n%s", a.logs)
		}
		// Counting works in generic mode, jumbo frames included.
		l.send(t, udp("198.18.0.20", 8000), udp("198.18.0.20", 8000))
		waitFor(t, 5*time.Second, "2 jumbo frames", func() bool { return a.talkers()["198.18.0.20"].Packets == 2 })
	})
	t.Run("a foreign program makes the interface busy and is left alone", func(t *testing.T) {
		l := newLAN(t, lanOptions{})
		// A second interface carrying a foreign program, never touched.
		if err := l.lab.Veth(l.node, "lan1", l.host, "eth1", lab.VethOptions{}); err != nil {
			t.Fatal(err)
		}
		foreign := foreignProgram(t)
		for _, ifn := range []string{"lan0", "lan1"} {
			setXDP(t, l, ifn, foreign.FD())
		}
		_, _, id0 := xdpState(t, l.node, "lan0")
		_, _, id1 := xdpState(t, l.node, "lan1")
		file := manifests(t, t.TempDir(), monitor1s)
		p := l.startNoWait(t, agentBinary(t, "dev"), file)
		<-p.exited
		if code := p.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.logs.String(), "another XDP program is attached to the interface") {
			t.Fatalf("exit %d, log:\n%s\nwant exit 1 and the busy message", code, p.logs)
		}
		if _, _, id := xdpState(t, l.node, "lan0"); id != id0 {
			t.Fatalf("foreign program on lan0 replaced: id %d, was %d", id, id0)
		}
		if entries, _ := os.ReadDir(l.pinRoot); len(entries) != 0 {
			t.Fatalf("pins left after the refused start: %v", entries)
		}
		// Free lan0; the agent attaches there and never touches lan1.
		setXDP(t, l, "lan0", -1)
		a := l.start(t, agentBinary(t, "dev"), file)
		if _, _, id := xdpState(t, l.node, "lan1"); id != id1 {
			t.Fatalf("lan1's program changed while the agent ran on lan0: %d, was %d", id, id1)
		}
		if code := a.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if _, _, id := xdpState(t, l.node, "lan1"); id != id1 {
			t.Fatalf("lan1's program changed by the agent's stop: %d, was %d", id, id1)
		}
	})
}

// setXDP attaches (or with fd -1 detaches) a program through netlink in
// driver mode, as tools other than lanmonitor do.
func setXDP(t *testing.T, l *lan, ifname string, fd int) {
	t.Helper()
	err := l.node.Do(func() error {
		lk, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(lk, fd, nl.XDP_FLAGS_DRV_MODE)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPromiscuity: the agent restores exactly the promiscuity it found, and
// never disturbs another holder (a packet socket, as tcpdump uses).
func TestPromiscuity(t *testing.T) {
	bin := agentBinary(t, "dev")
	t.Run("found on stays on", func(t *testing.T) {
		l := newLAN(t, lanOptions{})
		if err := l.node.Netlink().SetPromiscOn(l.link(t, "lan0")); err != nil {
			t.Fatal(err)
		}
		a := l.start(t, bin, manifests(t, t.TempDir(), monitor1s))
		a.stop(syscall.SIGTERM)
		if flag, n := promisc(t, l.node, "lan0"); !flag || n != 1 {
			t.Fatalf("after SIGTERM: IFF_PROMISC %v, promiscuity %d; want on, 1", flag, n)
		}
	})
	t.Run("found off: on while running, off after", func(t *testing.T) {
		l := newLAN(t, lanOptions{})
		a := l.start(t, bin, manifests(t, t.TempDir(), monitor1s))
		if flag, n := promisc(t, l.node, "lan0"); !flag || n != 1 {
			t.Fatalf("running: IFF_PROMISC %v, promiscuity %d; want on, 1", flag, n)
		}
		a.stop(syscall.SIGTERM)
		if flag, n := promisc(t, l.node, "lan0"); flag || n != 0 {
			t.Fatalf("after SIGTERM: IFF_PROMISC %v, promiscuity %d; want off, 0", flag, n)
		}
	})
	t.Run("a packet-socket holder keeps its promiscuity", func(t *testing.T) {
		l := newLAN(t, lanOptions{})
		release, err := l.node.HoldPromisc("lan0")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		a := l.start(t, bin, manifests(t, t.TempDir(), monitor1s))
		if flag, n := promisc(t, l.node, "lan0"); !flag || n != 2 {
			t.Fatalf("running: IFF_PROMISC %v, promiscuity %d; want on, 2", flag, n)
		}
		a.stop(syscall.SIGTERM)
		if flag, n := promisc(t, l.node, "lan0"); flag || n != 1 {
			t.Fatalf("after SIGTERM: IFF_PROMISC %v, promiscuity %d; want off, 1 (the holder's)", flag, n)
		}
	})
	t.Run("kill -9, restart, SIGTERM restores the original state", func(t *testing.T) {
		l := newLAN(t, lanOptions{})
		file := manifests(t, t.TempDir(), monitor1s)
		l.start(t, bin, file).stop(syscall.SIGKILL)
		if flag, _ := promisc(t, l.node, "lan0"); !flag {
			t.Fatal("promiscuity gone after kill -9 (the pinned program keeps working, and so must promiscuity)")
		}
		l.start(t, bin, file).stop(syscall.SIGTERM)
		if flag, n := promisc(t, l.node, "lan0"); flag || n != 0 {
			t.Fatalf("after restart and SIGTERM: IFF_PROMISC %v, promiscuity %d; want off, 0", flag, n)
		}
		if attached, _, _ := xdpState(t, l.node, "lan0"); attached {
			t.Fatal("program still attached after SIGTERM")
		}
		if entries, _ := os.ReadDir(l.pinRoot); len(entries) != 0 {
			t.Fatalf("pins left: %v", entries)
		}
	})
}

// traffic sends one frame from each source every 500 µs and counts, per
// source, what reaches the node's stack (a packet socket there sees only
// what XDP passed).
type traffic struct {
	stop          chan struct{}
	halted        sync.Once
	wg            sync.WaitGroup
	sent          []atomic.Int64 // per source
	rx            []*lab.Counter // per source
	blocked, okay *lab.Counter   // startTraffic's rx[0] and rx[1]
}

// startTraffic: frames from a blocked and an allowed source.
func startTraffic(t *testing.T, l *lan, blockedSrc, allowedSrc string) *traffic {
	t.Helper()
	tr := startTrafficFrom(t, l, blockedSrc, allowedSrc)
	tr.blocked, tr.okay = tr.rx[0], tr.rx[1]
	return tr
}

// startTrafficFrom: frames from each of srcs, until halt (or the test's end).
func startTrafficFrom(t *testing.T, l *lan, srcs ...string) *traffic {
	t.Helper()
	rx, err := l.node.Receiver("lan0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	tr := &traffic{stop: make(chan struct{}), sent: make([]atomic.Int64, len(srcs))}
	fs := make([][]byte, len(srcs))
	for i, src := range srcs {
		f := udp(src, 20)
		fs[i] = f
		tr.rx = append(tr.rx, rx.Count(func(fr lab.Frame) bool { return string(fr.Data) == string(f) }))
	}
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			for i, f := range fs {
				if l.tx.Send(f) == nil {
					tr.sent[i].Add(1)
				}
			}
		}
	}()
	t.Cleanup(tr.halt)
	return tr
}

func (tr *traffic) halt() { tr.halted.Do(func() { close(tr.stop); tr.wg.Wait() }) }

const blockedSrc, allowedSrc = "198.18.0.66", "198.18.0.77"

// ourPrograms counts the XDP programs attached to lan0 that are
// lanmonitor's (at most one can be attached per mode; this checks that it
// is ours and that the pin directory holds one link).
func onePinnedLink(t *testing.T, l *lan) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(l.pinRoot, "lan0"))
	if err != nil {
		t.Fatal(err)
	}
	links := 0
	for _, e := range entries {
		if e.Name() == "link" {
			links++
		}
	}
	if attached, _, _ := xdpState(t, l.node, "lan0"); !attached || links != 1 {
		t.Fatalf("attached %v, %d pinned links; want attached with exactly one link", attached, links)
	}
}

// TestRestartUnderTraffic: kill -9 while a blocked and an allowed source
// send continuously. The pinned link keeps enforcing while no agent runs;
// the restarted agent adopts it. The blocked source never reaches the
// node's stack, the allowed one loses nothing, and counters continue.
func TestRestartUnderTraffic(t *testing.T) {
	l := newLAN(t, lanOptions{})
	bin := agentBinary(t, "dev")
	file := manifests(t, t.TempDir(), monitor1s+ipblock("blocked", blockedSrc))
	a := l.start(t, bin, file)
	_, _, firstProg := xdpState(t, l.node, "lan0")
	tr := startTraffic(t, l, blockedSrc, allowedSrc)
	time.Sleep(300 * time.Millisecond)
	a.stop(syscall.SIGKILL)
	time.Sleep(300 * time.Millisecond) // no agent: the pinned link enforces
	b := l.start(t, bin, file)
	time.Sleep(300 * time.Millisecond)
	tr.halt()

	sentBlocked, sentAllowed := int(tr.sent[0].Load()), int(tr.sent[1].Load())
	if err := tr.okay.Expect(sentAllowed, 5*time.Second, 200*time.Millisecond); err != nil {
		t.Fatalf("allowed source lost frames across the restart: %v", err)
	}
	if n := tr.blocked.N(); n != 0 {
		t.Fatalf("%d of %d frames of the blocked source reached the node", n, sentBlocked)
	}
	_, _, prog := xdpState(t, l.node, "lan0")
	if prog == firstProg {
		t.Fatalf("program %d not replaced by the restarted agent", prog)
	}
	onePinnedLink(t, l)
	ts := b.talkers()
	if ts[blockedSrc].Packets != uint64(sentBlocked) || ts[allowedSrc].Packets != uint64(sentAllowed) {
		t.Fatalf("counters did not continue: blocked %d of %d, allowed %d of %d", ts[blockedSrc].Packets, sentBlocked, ts[allowedSrc].Packets, sentAllowed)
	}
	var blocks agent.BlocksResponse
	b.get("/api/v1/blocks", &blocks)
	if len(blocks.Rules) != 1 || blocks.Rules[0].DroppedPackets != uint64(sentBlocked) || blocks.Rules[0].MatchedPackets != uint64(sentBlocked) {
		t.Fatalf("blocks %+v, want %d matched and dropped", blocks, sentBlocked)
	}
}

// TestUpgrade: a different build of the agent (and of its program) takes
// over from the running one, which exits leaving its program attached: the
// new program replaces the old atomically through the pinned link, with no
// moment of unenforced blocking and no lost allowed frame.
func TestUpgrade(t *testing.T) {
	l := newLAN(t, lanOptions{})
	file := manifests(t, t.TempDir(), monitor1s+ipblock("blocked", blockedSrc))
	old := l.start(t, agentBinary(t, "v1"), file, "--keep-on-exit")
	_, _, oldProg := xdpState(t, l.node, "lan0")
	tr := startTraffic(t, l, blockedSrc, allowedSrc)
	time.Sleep(200 * time.Millisecond)
	if code := old.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("old agent exit %d", code)
	}
	if attached, _, prog := xdpState(t, l.node, "lan0"); !attached || prog != oldProg {
		t.Fatalf("--keep-on-exit: attached %v prog %d, want the old program %d still attached", attached, prog, oldProg)
	}
	l.start(t, agentBinary(t, "v2"), file)
	time.Sleep(200 * time.Millisecond)
	tr.halt()
	if err := tr.okay.Expect(int(tr.sent[1].Load()), 5*time.Second, 200*time.Millisecond); err != nil {
		t.Fatalf("allowed frames lost during the upgrade: %v", err)
	}
	if n := tr.blocked.N(); n != 0 {
		t.Fatalf("%d blocked frames passed during the upgrade", n)
	}
	if _, _, prog := xdpState(t, l.node, "lan0"); prog == oldProg {
		t.Fatalf("program not replaced: still %d", prog)
	}
	onePinnedLink(t, l)
}

// TestUpgradeFromPreviousLayout: like TestUpgrade, but the running agent
// is built from the commit before the last change of the maps' layout
// (bpf/types.h), so its pinned maps do not all match the new agent's. The
// new agent replaces the maps that differ (the rule maps filled before it
// takes over the link), adopts those that match: no blocked frame passes,
// no allowed frame is lost, the talker and rule counters continue exactly.
func TestUpgradeFromPreviousLayout(t *testing.T) {
	l := newLAN(t, lanOptions{})
	oldBin := previousLayoutAgent(t)
	file := manifests(t, t.TempDir(), monitor1s+ipblock("blocked", blockedSrc))
	old := l.start(t, oldBin, file, "--keep-on-exit")
	tr := startTraffic(t, l, blockedSrc, allowedSrc)
	time.Sleep(300 * time.Millisecond)
	if code := old.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("old agent exit %d", code)
	}
	b := l.start(t, agentBinary(t, "dev"), file)
	time.Sleep(300 * time.Millisecond)
	tr.halt()
	sentBlocked, sentAllowed := int(tr.sent[0].Load()), int(tr.sent[1].Load())
	if err := tr.okay.Expect(sentAllowed, 5*time.Second, 200*time.Millisecond); err != nil {
		t.Fatalf("allowed frames lost during the upgrade: %v", err)
	}
	if n := tr.blocked.N(); n != 0 {
		t.Fatalf("%d of %d blocked frames passed during the upgrade", n, sentBlocked)
	}
	onePinnedLink(t, l)
	if !strings.Contains(b.logs.String(), "pinned maps do not match this agent; replacing them") {
		t.Errorf("the new agent did not report replacing the old maps:\n%s", b.logs)
	}
	ts := b.talkers()
	if ts[blockedSrc].Packets != uint64(sentBlocked) || ts[allowedSrc].Packets != uint64(sentAllowed) {
		t.Fatalf("talker counters did not continue: blocked %d of %d, allowed %d of %d", ts[blockedSrc].Packets, sentBlocked, ts[allowedSrc].Packets, sentAllowed)
	}
	var blocks agent.BlocksResponse
	b.get("/api/v1/blocks", &blocks)
	if len(blocks.Rules) != 1 || blocks.Rules[0].DroppedPackets != uint64(sentBlocked) {
		t.Fatalf("blocks %+v, want %d dropped", blocks, sentBlocked)
	}
	t.Logf("%d blocked and %d allowed frames across the upgrade from the previous layout", sentBlocked, sentAllowed)
}

// previousLayoutAgent builds the agent of the commit before the last
// change of bpf/types.h, from this checkout's git history.
func previousLayoutAgent(t *testing.T) string {
	t.Helper()
	if out, _ := exec.Command("git", "rev-parse", "--is-shallow-repository").Output(); strings.TrimSpace(string(out)) == "true" {
		t.Skip("a shallow clone has no earlier commit to build the previous layout from (git fetch --unshallow)")
	}
	out, err := exec.Command("git", "log", "-n", "1", "--format=%H", "--", "../bpf/types.h").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Fatalf("find the last layout change in git history (the test needs a git checkout): %v", err)
	}
	rev := strings.TrimSpace(string(out)) + "^"
	dir := t.TempDir()
	if out, err := exec.Command("sh", "-c", "git -C .. archive --format=tar "+rev+" | tar -x -C "+dir).CombinedOutput(); err != nil {
		t.Fatalf("check out %s: %v\n%s", rev, err, out)
	}
	bin := filepath.Join(dir, "lanmonitor-agent-previous")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/lanmonitor-agent")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the agent of %s: %v\n%s", rev, err, out)
	}
	os.Chmod(dir, 0o755)
	return bin
}

// TestInterfaceRecreated: the interface is deleted (reported not attached)
// and recreated with a new ifindex: the agent re-attaches within a report
// interval and counts exactly what is sent after. A rename is followed, and
// cleanup still works through the held link.
func TestInterfaceRecreated(t *testing.T) {
	l := newLAN(t, lanOptions{})
	a := l.start(t, agentBinary(t, "dev"), manifests(t, t.TempDir(), monitor1s))
	oldIndex := l.link(t, "lan0").Attrs().Index
	if err := l.node.Netlink().LinkDel(l.link(t, "lan0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "readyz to report the interface gone", func() bool { return a.status("/readyz") == 503 })
	if err := l.lab.Veth(l.node, "lan0", l.host, "eth0", lab.VethOptions{MACA: nodeMAC, MACB: hostMAC}); err != nil {
		t.Fatal(err)
	}
	if l.link(t, "lan0").Attrs().Index == oldIndex {
		t.Fatal("the recreated interface kept its ifindex; the test needs a new one")
	}
	start := time.Now()
	waitFor(t, 1500*time.Millisecond, "re-attach within a report interval (1 s)", func() bool {
		attached, _, _ := xdpState(t, l.node, "lan0")
		return attached && a.status("/readyz") == 200
	})
	t.Logf("re-attached %v after the interface came back", time.Since(start).Round(time.Millisecond))
	if flag, _ := promisc(t, l.node, "lan0"); !flag {
		t.Fatal("promiscuity not re-applied to the recreated interface")
	}
	tx, err := l.host.Sender("eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	before := a.stats()
	f := udp("198.18.0.30", 50)
	for range 7 {
		if err := tx.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 3*time.Second, "7 frames", func() bool { return a.talkers()["198.18.0.30"].Packets == 7 })
	time.Sleep(100 * time.Millisecond)
	if after := a.stats(); after.Packets-before.Packets != 7 || after.Bytes-before.Bytes != uint64(7*len(f)) {
		t.Fatalf("after re-creation: %d packets, %d bytes; want 7, %d", after.Packets-before.Packets, after.Bytes-before.Bytes, 7*len(f))
	}

	// Renamed: the agent follows, and its SIGTERM still detaches and
	// restores through the link it holds.
	lk := l.link(t, "lan0")
	if err := l.node.Netlink().LinkSetDown(lk); err != nil {
		t.Fatal(err)
	}
	if err := l.node.Netlink().LinkSetName(lk, "lan0x"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the rename to be reported", func() bool { return a.logged("interface renamed", "to=lan0x") })
	if code := a.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if attached, _, _ := xdpState(t, l.node, "lan0x"); attached {
		t.Fatal("program still attached to the renamed interface")
	}
	if flag, _ := promisc(t, l.node, "lan0x"); flag {
		t.Fatal("promiscuity not restored on the renamed interface")
	}
}

// TestConfigReload: a changed IPBlock file takes effect without restart; an
// invalid one is refused with a message naming the problem, and the
// previous configuration stays in force.
func TestConfigReload(t *testing.T) {
	l := newLAN(t, lanOptions{})
	dir := t.TempDir()
	file := manifests(t, dir, monitor1s+ipblock("first", "198.18.0.40"))
	a := l.start(t, agentBinary(t, "dev"), file)
	rx, err := l.node.Receiver("lan0")
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	f41 := udp("198.18.0.41", 10)
	got41 := rx.Count(func(f lab.Frame) bool { return string(f.Data) == string(f41) })

	// Block .41 too, by editing the file (written to a temporary file and
	// renamed over it, as editors do).
	tmp := filepath.Join(dir, ".tmp")
	os.WriteFile(tmp, []byte(monitor1s+ipblock("first", "198.18.0.40")+ipblock("second", "198.18.0.41")), 0o600)
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "the reload", func() bool { return a.logged("configuration reloaded", "blocks=2") })
	l.send(t, f41)
	time.Sleep(200 * time.Millisecond)
	if got41.N() != 0 {
		t.Fatal("frame of the newly blocked source passed after the reload")
	}

	// An invalid edit is refused, the running blocks stay.
	os.WriteFile(file, []byte(monitor1s+ipblock("second", "198.18.0.41", "300.1.2.3")), 0o600)
	waitFor(t, 3*time.Second, "the refusal", func() bool {
		return a.logged("configuration not reloaded", "spec.cidrs[1]", "300.1.2.3")
	})
	l.send(t, f41)
	time.Sleep(200 * time.Millisecond)
	if got41.N() != 0 {
		t.Fatal("the previous configuration was not kept after an invalid edit")
	}
	var blocks agent.BlocksResponse
	a.get("/api/v1/blocks", &blocks)
	if len(blocks.Rules) != 2 || blocks.Rules[1].Name != "second" && blocks.Rules[0].Name != "second" {
		t.Fatalf("blocks after the refused edit: %+v", blocks)
	}
}

// TestBadInput: a missing interface, an invalid CIDR, a bad flag and
// missing privileges each give a clear message and exit 1, with nothing
// left on the interface.
func TestBadInput(t *testing.T) {
	l := newLAN(t, lanOptions{})
	bin := agentBinary(t, "dev")
	// Readable by the unprivileged user too.
	dir, err := os.MkdirTemp("", "lanmonitor-badinput-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	good := manifests(t, dir, monitor1s)
	os.Chmod(good, 0o644)
	bad := manifests(t, t.TempDir(), monitor1s+ipblock("bad", "10.0.0.0/33"))
	emptyToken := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(emptyToken, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		uid  uint32
		want string
	}{
		{"missing interface", []string{"standalone", "-i", "nosuch0", "-f", good}, 0, `interface "nosuch0" not found in network namespace`},
		{"invalid cidr", []string{"standalone", "-i", "lan0", "-f", bad}, 0, `IPBlock "bad"): spec.cidrs[0]: Invalid value: "10.0.0.0/33": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`},
		{"bad flag", []string{"standalone", "-i", "lan0", "-f", good, "--listen-on", "x"}, 0, "unknown flag: --listen-on"},
		{"missing file", []string{"standalone", "-i", "lan0"}, 0, `required flag(s) "file" not set`},
		{"LAN listen without a token", []string{"standalone", "-i", "lan0", "-f", good, "--listen", "198.18.0.1:9470"}, 0,
			"--listen 198.18.0.1:9470 is not a loopback address: set --auth-token-file FILE"},
		{"every address without a token", []string{"standalone", "-i", "lan0", "-f", good, "--listen", ":9470"}, 0,
			"--listen :9470 is not a loopback address"},
		{"empty token file", []string{"standalone", "-i", "lan0", "-f", good, "--auth-token-file", emptyToken}, 0,
			"--auth-token-file: " + emptyToken + ": empty token"},
		{"no privileges", []string{"standalone", "-i", "lan0", "-f", good}, 65534, "missing capabilities CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN: run lanmonitor-agent as root"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append(c.args, "--netns", l.node.Path, "--pin-root", l.pinRoot, "--listen", "127.0.0.1:0")
			cmd := exec.Command(bin, args...)
			if c.uid != 0 {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: c.uid, Gid: c.uid}}
			}
			out, err := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), c.want) {
				t.Fatalf("exit %d (%v), output:\n%s\nwant exit 1 and %q", code, err, out, c.want)
			}
			if attached, _, _ := xdpState(t, l.node, "lan0"); attached {
				t.Fatal("program attached after a refused start")
			}
			if flag, n := promisc(t, l.node, "lan0"); flag || n != 0 {
				t.Fatalf("promiscuity changed: %v %d", flag, n)
			}
			if entries, _ := os.ReadDir(l.pinRoot); len(entries) != 0 {
				t.Fatalf("pins left: %v", entries)
			}
		})
	}
}

// TestMetricsAndSampling: /metrics has exact totals and per-rule counters and
// talker gauges for the top N only (bounded cardinality); flowSampling 1
// logs one structured line per packet with addresses, ports, protocol,
// local/snooped and verdict.
func TestMetricsAndSampling(t *testing.T) {
	l := newLAN(t, lanOptions{})
	cfg := strings.Replace(monitor1s, "spec:\n", "spec:\n  topN: 2\n  flowSampling: 1\n", 1) + ipblock("blocked", blockedSrc)
	a := l.start(t, agentBinary(t, "dev"), manifests(t, t.TempDir(), cfg))
	for i := range 5 {
		l.send(t, udp(fmt.Sprintf("198.18.0.%d", 100+i), 10))
	}
	l.send(t, udp(blockedSrc, 10), udp(blockedSrc, 10))
	waitFor(t, 5*time.Second, "7 frames", func() bool { return a.stats().Packets == 7 })
	time.Sleep(1500 * time.Millisecond) // a report
	resp, err := a.do("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := string(body)
	for _, want := range []string{
		`lanmonitor_packets_total{interface="lan0"} 7`,
		`lanmonitor_dropped_packets_total{interface="lan0"} 2`,
		`lanmonitor_rule_dropped_packets_total{interface="lan0",ipblock="blocked"} 2`,
		`lanmonitor_xdp_attached{interface="lan0",mode="Native"} 1`,
		`lanmonitor_tracked_sources{interface="lan0"} 6`,
		`lanmonitor_tracked_sources_capacity{interface="lan0"} 65536`,
		`lanmonitor_talker_evictions_total{interface="lan0"} 0`,
		`lanmonitor_dashboard_clients{interface="lan0"} 0`,
		`lanmonitor_dashboard_refused_clients_total{interface="lan0"} 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, family := range []string{"lanmonitor_report_duration_seconds_count", "lanmonitor_dashboard_history_events", "lanmonitor_dashboard_history_bytes"} {
		if !regexp.MustCompile(`\n` + family + `\{interface="lan0"\} [1-9]`).MatchString(metrics) {
			t.Errorf("/metrics lacks a positive %s", family)
		}
	}
	if n := strings.Count(metrics, "\nlanmonitor_talker_bits_per_second{"); n != 2 {
		t.Errorf("%d talker gauges, want topN = 2", n)
	}

	// 1,000 different talkers over four reports: each scrape holds the
	// current top 2 only, without a rank label (a series per address, not
	// per address and rank).
	gauge := regexp.MustCompile(`(?m)^lanmonitor_talker_bits_per_second\{(.*)\} `)
	for wave := range 4 {
		var frames [][]byte
		for i := range 250 {
			frames = append(frames, udp(fmt.Sprintf("198.18.%d.%d", 10+wave, 1+i), 10+wave))
		}
		l.send(t, frames...)
		// Until a report ranks this wave first, every scrape still holds 2.
		waitFor(t, 5*time.Second, fmt.Sprintf("wave %d's sources as the top 2", wave), func() bool {
			resp, err := a.do("/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			series := gauge.FindAllStringSubmatch(string(body), -1)
			if len(series) != 2 {
				t.Fatalf("wave %d: %d talker series, want 2", wave, len(series))
			}
			current := 0
			for _, m := range series {
				if strings.Contains(m[1], "rank=") {
					t.Fatalf("talker series with a rank label: {%s}", m[1])
				}
				if strings.Contains(m[1], fmt.Sprintf(`address="198.18.%d.`, 10+wave)) {
					current++
				}
			}
			return current == 2
		})
	}
	if !a.logged(`msg="flow sample"`, "src=198.18.0.66", "dst=198.18.0.1", "proto=17", "srcPort=4000", "dstPort=5000", "traffic=local", "verdict=drop", "ruleID=") ||
		!a.logged(`msg="flow sample"`, "src=198.18.0.100", "verdict=pass") {
		t.Errorf("flow sample lines missing:\n%s", a.logs)
	}
}

// TestSecondAgentRefused: a second agent for an interface a live agent
// manages is refused (the pin directory is locked) and changes nothing; the
// lock goes with the first agent, even on kill -9, so a restart adopts.
func TestSecondAgentRefused(t *testing.T) {
	l := newLAN(t, lanOptions{})
	bin := agentBinary(t, "dev")
	file := manifests(t, t.TempDir(), monitor1s+ipblock("blocked", blockedSrc))
	first := l.start(t, bin, file)
	_, _, prog := xdpState(t, l.node, "lan0")
	second := l.startNoWait(t, bin, file)
	<-second.exited
	if code := second.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(second.logs.String(), "is locked: another lanmonitor agent manages this interface") {
		t.Fatalf("second agent: exit %d, log:\n%s", code, second.logs)
	}
	if _, _, now := xdpState(t, l.node, "lan0"); now != prog || first.status("/readyz") != 200 {
		t.Fatalf("the first agent was disturbed: program %d (was %d), readyz %d", now, prog, first.status("/readyz"))
	}
	if flag, _ := promisc(t, l.node, "lan0"); !flag {
		t.Fatal("promiscuity lost")
	}
	first.stop(syscall.SIGKILL)
	l.start(t, bin, file) // the lock died with the first agent
	if !first.logged("attached") {
		t.Fatal("no attach logged")
	}
}

// TestStandaloneAuth: with --auth-token-file the API is HTTPS and needs
// the token (constant-time compare); the probes do not.
func TestStandaloneAuth(t *testing.T) {
	l := newLAN(t, lanOptions{})
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("lab-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := l.start(t, agentBinary(t, "dev"), manifests(t, t.TempDir(), monitor1s), "--auth-token-file", tokenFile)
	if !strings.HasPrefix(a.api, "https://") {
		t.Fatalf("API at %s, want https", a.api)
	}
	if !strings.Contains(a.logs.String(), `msg="serving HTTPS with authentication"`) {
		t.Fatalf("the log does not say how it serves:\n%s", a.logs)
	}
	for _, c := range []struct {
		path, token string
		code        int
	}{
		{"/api/v1/stats", "", http.StatusUnauthorized},
		{"/api/v1/stats", "lab-token-012345678", http.StatusUnauthorized},
		{"/api/v1/stats", "lab-token-01234567890", http.StatusUnauthorized},
		{"/metrics", "", http.StatusUnauthorized},
		{"/", "", http.StatusUnauthorized},
		{"/healthz", "", http.StatusOK},
		{"/api/v1/stats", "lab-token-0123456789", http.StatusOK},
	} {
		a.token = c.token
		if got := a.status(c.path); got != c.code {
			t.Errorf("GET %s with token %q: %d, want %d", c.path, c.token, got, c.code)
		}
	}
	a.token = "lab-token-0123456789"
	l.send(t, udp("198.18.0.20", 100), udp("198.18.0.20", 100), udp("198.18.0.20", 100))
	waitFor(t, 5*time.Second, "3 packets counted", func() bool { return a.stats().Packets == 3 })
}

// TestStandaloneFromTheLAN: the agent runs inside the node's namespace, as
// on a real host, and a host of the monitored LAN tries its API on the
// node's LAN address. By default the agent listens on loopback only: the
// connection is refused. On the LAN address it needs a token file: without
// one it does not start; with one, plain HTTP is refused, and a request
// without the token or with a wrong one gets 401.
func TestStandaloneFromTheLAN(t *testing.T) {
	l := newLAN(t, lanOptions{})
	nodeAddr, hostAddr := netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("198.18.0.2/24")
	if err := l.node.AddAddr("lan0", nodeAddr); err != nil {
		t.Fatal(err)
	}
	if err := l.host.AddAddr("eth0", hostAddr); err != nil {
		t.Fatal(err)
	}
	bin := agentBinary(t, "dev")
	file := manifests(t, t.TempDir(), monitor1s)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("lab-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// startInNode runs the agent in the node's namespace and waits for
	// its "running" line, or for its exit.
	startInNode := func(extra ...string) (*agentProc, bool) {
		t.Helper()
		args := append([]string{"standalone", "-i", "lan0", "-f", file, "--pin-root", l.pinRoot}, extra...)
		p := runAgent(t, l.node.Command(context.Background(), bin, args...))
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
			if listenRE.MatchString(p.logs.String()) {
				return p, true
			}
			select {
			case <-p.exited:
				return p, false
			case <-time.After(20 * time.Millisecond):
			}
		}
		t.Fatalf("agent neither started nor exited in 15 s:\n%s", p.logs)
		return nil, false
	}
	// fromHost makes one request from the LAN host (the socket is made in
	// its namespace): the status code, or the error.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the agent's self-signed certificate
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			derr := l.host.Do(func() error {
				conn, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
				return nil
			})
			return conn, errors.Join(err, derr)
		},
	}}
	fromHost := func(url, token string) (int, error) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	api := "https://198.18.0.1:9470/api/v1/stats"

	// Default: loopback only.
	a, ok := startInNode()
	if !ok {
		t.Fatalf("agent exited: %v\n%s", a.err, a.logs)
	}
	if _, err := fromHost(api, ""); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("GET %s from the LAN with the default listen address: %v, want connection refused", api, err)
	}
	a.stop(syscall.SIGTERM)

	// The LAN address without a token file: refused at start.
	a, ok = startInNode("--listen", "198.18.0.1:9470")
	if ok {
		t.Fatalf("agent serves 198.18.0.1:9470 without --auth-token-file or --insecure-listen:\n%s", a.logs)
	}
	if !strings.Contains(a.logs.String(), "--auth-token-file") || !strings.Contains(a.logs.String(), "--insecure-listen") {
		t.Errorf("the refusal does not name --auth-token-file and --insecure-listen:\n%s", a.logs)
	}

	// With a token file: HTTPS, and the token is required.
	a, ok = startInNode("--listen", "198.18.0.1:9470", "--auth-token-file", tokenFile)
	if !ok {
		t.Fatalf("agent exited: %v\n%s", a.err, a.logs)
	}
	if code, err := fromHost("http://198.18.0.1:9470/api/v1/stats", ""); err != nil || code != http.StatusBadRequest {
		t.Errorf("plain HTTP from the LAN: %d %v, want 400 (an HTTPS server)", code, err)
	}
	for _, c := range []struct {
		url, token string
		want       int
	}{
		{api, "", http.StatusUnauthorized},
		{api, "lab-token-01234567", http.StatusUnauthorized},
		{"https://198.18.0.1:9470/metrics", "", http.StatusUnauthorized},
		{"https://198.18.0.1:9470/", "", http.StatusUnauthorized},
		{"https://198.18.0.1:9470/healthz", "", http.StatusOK},
		{api, "lab-token-0123456789", http.StatusOK},
	} {
		if code, err := fromHost(c.url, c.token); err != nil || code != c.want {
			t.Errorf("GET %s from the LAN with token %q: %d %v, want %d", c.url, c.token, code, err, c.want)
		}
	}
}
