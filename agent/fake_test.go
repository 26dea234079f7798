package agent_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lanmonitor/lanmonitor/agent"
	"github.com/lanmonitor/lanmonitor/agent/kernel/fake"
	"github.com/lanmonitor/lanmonitor/bpf"
)

// Tests of the Manager's logic on kernel/fake: no root, exact rates on a
// fake clock. The same logic on the real kernel is TestExactCounts and the
// rest of agent_test.go.

var (
	p = netip.MustParsePrefix
	a = netip.MustParseAddr
)

// fakeManager starts a Manager on lan0 (198.18.0.0/24, node address
// 198.18.0.1, gateway 198.18.0.254) of a fake kernel, reporting every
// second of clk.
func fakeManager(t *testing.T, cfg agent.Config) (*agent.Manager, *fake.Kernel, *clocktesting.FakeClock) {
	t.Helper()
	k := fake.New()
	k.AddInterface("lan0", p("198.18.0.0/24"))
	k.SetAddresses([]netip.Addr{a("198.18.0.1")}, []netip.Addr{a("198.18.0.254")})
	clk := clocktesting.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Interface, cfg.ReportInterval = "lan0", time.Second
	m, err := agent.Start(cfg, agent.Options{Kernel: k, Clock: clk, Node: "node-a", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(true) })
	return m, k, clk
}

// step moves clk one report interval on and waits for the report taken then.
func step(t *testing.T, m *agent.Manager, clk *clocktesting.FakeClock) agent.Report {
	t.Helper()
	want := clk.Now().Add(time.Second)
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	clk.Step(time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r := m.Report(); r.Time.Equal(want) {
			return r
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no report at %s", want)
	return agent.Report{}
}

func TestManagerOnFakeKernel(t *testing.T) {
	m, k, clk := fakeManager(t, agent.Config{
		Promiscuous: true, TopN: 3,
		Blocks: []agent.Block{{Name: "scanners", RuleID: 7, Generation: 2, Direction: agent.DirectionSource, Mode: agent.BlockModeEnforce,
			CIDRs: []netip.Prefix{p("198.18.0.0/24"), p("2001:db8:bad::/48")}}},
	})
	d := k.Datapath("lan0")

	// The rule tables: the block, and the node's address and gateway
	// protected (the lockout guard).
	tabs := d.Tables()
	wantSource := map[netip.Prefix]bpf.Rule{p("198.18.0.0/24"): {ID: 7}, p("2001:db8:bad::/48"): {ID: 7}}
	wantProtected := map[netip.Prefix]bpf.Rule{p("198.18.0.1/32"): {}, p("198.18.0.254/32"): {}}
	if !reflect.DeepEqual(tabs[bpf.TableSource], wantSource) || !reflect.DeepEqual(tabs[bpf.TableProtected], wantProtected) {
		t.Fatalf("tables %v, want source %v protected %v", tabs, wantSource, wantProtected)
	}

	for _, f := range []fake.Frame{
		{Src: a("198.18.0.5"), Dst: a("198.18.0.1"), Packets: 10, Bytes: 15_000},            // dropped
		{Src: a("198.18.0.254"), Dst: a("198.18.0.1"), Packets: 2, Bytes: 200},              // exempted: the gateway
		{Src: a("2001:db8::9"), Dst: a("2001:db8::1"), Packets: 5, Bytes: 5_000},            // passed
		{Src: a("198.18.1.1"), Dst: a("198.18.1.2"), Packets: 3, Bytes: 300, Snooped: true}, // another host's
	} {
		d.Receive(f)
	}
	r := step(t, m, clk)
	wantStats := bpf.Stats{Packets: 20, Bytes: 20_500, Passed: 10, Dropped: 10, IPv4: 15, IPv6: 5, Local: 17, Snooped: 3, Exempted: 2, TalkerInserts: 4}
	if r.Stats != wantStats {
		t.Errorf("stats %+v\nwant %+v", r.Stats, wantStats)
	}
	if r.BitsPerSecond != 164_000 || r.PacketsPerSecond != 20 {
		t.Errorf("rates %d bit/s %d packet/s, want 164000, 20", r.BitsPerSecond, r.PacketsPerSecond)
	}
	wantTop := []agent.TalkerReport{
		{Address: a("198.18.0.5"), Internal: true, Packets: 10, Bytes: 15_000, LocalPackets: 10, BitsPerSecond: 120_000, PacketsPerSecond: 10},
		{Address: a("2001:db8::9"), Packets: 5, Bytes: 5_000, LocalPackets: 5, BitsPerSecond: 40_000, PacketsPerSecond: 5},
		{Address: a("198.18.1.1"), Packets: 3, Bytes: 300, SnoopedPackets: 3, BitsPerSecond: 2_400, PacketsPerSecond: 3},
	}
	if !reflect.DeepEqual(r.TopTalkers, wantTop) {
		t.Errorf("top talkers\n got %+v\nwant %+v", r.TopTalkers, wantTop)
	}
	wantRules := []agent.RuleReport{{Name: "scanners", RuleID: 7, Generation: 2, Direction: agent.DirectionSource, Mode: agent.BlockModeEnforce,
		Matched: 12, Dropped: 10, Exempted: 2, ExemptedAddresses: []string{"198.18.0.1", "198.18.0.254"}}}
	if !reflect.DeepEqual(r.Rules, wantRules) {
		t.Errorf("rules\n got %+v\nwant %+v", r.Rules, wantRules)
	}
	if r.State != agent.StateAttached || r.XDPMode != agent.XDPModeNative || !r.Promiscuous || r.TrackedSources != 4 || r.TrackedSourcesCapacity != int(bpf.DefaultMaxTrackedSources) {
		t.Errorf("report %s %s promiscuous %v tracked %d/%d", r.State, r.XDPMode, r.Promiscuous, r.TrackedSources, r.TrackedSourcesCapacity)
	}

	// An idle interval: rates fall to zero, counters stay.
	if r := step(t, m, clk); r.BitsPerSecond != 0 || r.TopTalkers[0].BitsPerSecond != 0 || r.TopTalkers[0].Packets != 10 {
		t.Errorf("idle report: %d bit/s, top %+v", r.BitsPerSecond, r.TopTalkers[0])
	}

	// The interface deleted, then back: the Manager follows it.
	k.DeleteInterface("lan0")
	if st, msg := m.State(); st != agent.StateNotAttached || msg != "interface lan0 was deleted; waiting for it to come back" {
		t.Errorf("after delete: %s %q", st, msg)
	}
	k.AddInterface("lan0", p("198.18.0.0/24"))
	if r := step(t, m, clk); r.State != agent.StateAttached || r.Ifindex == 0 {
		t.Errorf("after re-create: %s ifindex %d", r.State, r.Ifindex)
	}

	// Apply: a block removed leaves the source table empty; an unchanged
	// configuration writes nothing.
	cfg := m.Config()
	cfg.Blocks = nil
	if err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	syncs := d.Syncs()
	if err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if n := len(d.Tables()[bpf.TableSource]); n != 0 || d.Syncs() != syncs {
		t.Errorf("after the block was removed: %d source prefixes, %d syncs (want 0, %d)", n, d.Syncs(), syncs)
	}

	// Close with cleanup releases the interface.
	if err := m.Close(true); err != nil {
		t.Fatal(err)
	}
	if closed, cleanup := d.Closed(); !closed || !cleanup || k.Datapath("lan0") != nil {
		t.Errorf("closed %v cleanup %v still open %v", closed, cleanup, k.Datapath("lan0") != nil)
	}
	if st, _ := m.State(); st != agent.StateStopped {
		t.Errorf("state after close %s", st)
	}
}

// TestManagerRefusedOnFakeKernel: a second Manager on a held interface, an
// unknown interface and a refused native mode are errors, and leave
// nothing open.
func TestManagerRefusedOnFakeKernel(t *testing.T) {
	_, k, _ := fakeManager(t, agent.Config{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		cfg  agent.Config
		want string
	}{
		{agent.Config{Interface: "lan0"}, `interface "lan0": fake: interface already held by another datapath`},
		{agent.Config{Interface: "wan9"}, `interface "wan9" not found in the fake kernel`},
	} {
		_, err := agent.Start(c.cfg, agent.Options{Kernel: k, Logger: log})
		if err == nil || err.Error() != c.want {
			t.Errorf("Start(%s): %v, want %s", c.cfg.Interface, err, c.want)
		}
	}
	k.AddInterface("lan1")
	k.RefuseNative()
	_, err := agent.Start(agent.Config{Interface: "lan1", XDPMode: agent.XDPModeNative}, agent.Options{Kernel: k, Logger: log})
	if want := fmt.Sprintf("attach xdp to ifindex %d in Native mode: operation not supported", 3); err == nil || err.Error() != want {
		t.Errorf("native refused: %v, want %s", err, want)
	}
	if k.Datapath("lan1") != nil {
		t.Error("a refused Start left a datapath open")
	}
}
