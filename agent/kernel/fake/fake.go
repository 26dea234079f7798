// Package fake is a kernel.Kernel in memory, for running the agent's logic
// (agent.Manager, the Kubernetes node agent, the API and the dashboard
// stream) without root: in unit tests, in the controller's tests and in the
// control-plane benchmark. Interfaces, addresses and traffic are what the
// test says. Frames given to Receive are matched against the rule tables
// the agent wrote, by longest prefix as the XDP program does (source table
// first, then destination; a protected address is exempted), and counted
// the way the program counts them. It models the datapath's counters, not
// its parsing: malformed frames, VLANs and fragments belong to package bpf's
// tests on the real program.
package fake

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/lanmonitor/lanmonitor/agent/kernel"
	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/bpf"
)

// ErrBusy is what Open returns for an interface that an open Datapath
// already holds (the real kernel's pin-directory lock).
var ErrBusy = errors.New("fake: interface already held by another datapath")

// Kernel is a simulated host: interfaces, addresses, a default route, and
// the datapaths open on it. Safe for concurrent use.
type Kernel struct {
	mu            sync.Mutex
	ifaces        map[string]*iface
	nextIndex     int
	local         []netip.Addr
	gateways      []netip.Addr
	route         string // interface of the default route
	open          map[string]*Datapath
	nativeRefused bool                 // see RefuseNative
	syncDelay     func() time.Duration // see SetSyncDelay
	onSync        func(kernel.Tables)  // see OnSync
}

type iface struct {
	name      string
	ifindex   int
	connected []netip.Prefix
	promisc   bool
}

// New returns a host with no interface.
func New() *Kernel {
	return &Kernel{ifaces: map[string]*iface{}, open: map[string]*Datapath{}, nextIndex: 2}
}

// AddInterface creates interface name with the given connected subnets (a
// new ifindex each time); the first one added carries the default route. A
// datapath waiting for an interface of that name attaches to it.
func (k *Kernel) AddInterface(name string, connected ...netip.Prefix) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ifaces[name] = &iface{name: name, ifindex: k.nextIndex, connected: connected}
	k.nextIndex++
	if k.route == "" {
		k.route = name
	}
	if d := k.open[name]; d != nil {
		d.mu.Lock()
		d.reattach(k.ifaces[name])
		d.mu.Unlock()
	}
}

// DeleteInterface removes interface name: a datapath on it is no longer
// attached until an interface of that name comes back.
func (k *Kernel) DeleteInterface(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.ifaces, name)
	if d := k.open[name]; d != nil {
		d.mu.Lock()
		d.ifc = nil
		d.message = fmt.Sprintf("interface %s was deleted; waiting for it to come back", name)
		d.mu.Unlock()
	}
}

// SetAddresses sets the namespace's own addresses and default gateways.
func (k *Kernel) SetAddresses(local, gateways []netip.Addr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.local, k.gateways = slices.Clone(local), slices.Clone(gateways)
}

// RefuseNative makes the simulated driver refuse native XDP: Auto falls
// back to generic, Native fails. For datapaths opened afterwards.
func (k *Kernel) RefuseNative() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nativeRefused = true
}

// SetSyncDelay makes every rule table update take f() (a slow map
// update), so that nodes finish applying a change in any order.
func (k *Kernel) SetSyncDelay(f func() time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.syncDelay = f
}

// OnSync calls f after every rule table update that changed an entry,
// with the tables now in force (f must neither change nor keep them): a
// benchmark learns when a change reached the maps without polling them.
func (k *Kernel) OnSync(f func(kernel.Tables)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.onSync = f
}

// Datapath returns the datapath open on interface name, or nil.
func (k *Kernel) Datapath(name string) *Datapath {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.open[name]
}

// CheckPrivileges needs none.
func (k *Kernel) CheckPrivileges() error { return nil }

// DefaultRouteInterface names the first interface added.
func (k *Kernel) DefaultRouteInterface() (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.ifaces[k.route]; !ok {
		return "", errors.New("no default route in the fake kernel to pick the interface from: set spec.interface")
	}
	return k.route, nil
}

// Open opens a datapath on s.Interface. Errors: no such interface,
// another datapath holds it (ErrBusy), Native asked of a driver that
// refuses it.
func (k *Kernel) Open(s kernel.Settings, tables func(kernel.Addresses) kernel.Tables, log *slog.Logger) (kernel.Datapath, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ifc, ok := k.ifaces[s.Interface]
	if !ok {
		return nil, fmt.Errorf("interface %q not found in the fake kernel", s.Interface)
	}
	if k.open[s.Interface] != nil {
		return nil, fmt.Errorf("interface %q: %w", s.Interface, ErrBusy)
	}
	d := &Datapath{k: k, s: s, talkers: map[bpf.Addr]*bpf.Talker{}, counters: map[uint32]*bpf.RuleCounters{}}
	d.tables = tables(k.addresses(ifc))
	if err := d.attach(ifc); err != nil {
		return nil, err
	}
	d.ifc.promisc = s.Promiscuous
	k.open[s.Interface] = d
	return d, nil
}

// addresses is what Datapath.Addresses reports. Called with k.mu held.
func (k *Kernel) addresses(ifc *iface) kernel.Addresses {
	a := kernel.Addresses{Local: slices.Clone(k.local), Gateways: slices.Clone(k.gateways)}
	if ifc != nil {
		a.Connected = slices.Clone(ifc.connected)
	}
	return a
}

// Datapath is a simulated datapath on one interface.
type Datapath struct {
	k *Kernel

	mu        sync.Mutex
	s         kernel.Settings
	ifc       *iface // nil while the interface is gone
	mode      v1alpha1.XDPMode
	reason    string
	message   string
	program   uint32
	tables    kernel.Tables
	stats     bpf.Stats
	talkers   map[bpf.Addr]*bpf.Talker
	counters  map[uint32]*bpf.RuleCounters
	closed    bool
	cleaned   bool
	syncs     int
	ruleReads int
}

// attach picks the mode as the real kernel's driver would. Called with
// d.mu (or before d is shared) held.
func (d *Datapath) attach(ifc *iface) error {
	switch {
	case d.s.XDPMode == v1alpha1.XDPModeGeneric:
		d.mode, d.reason = v1alpha1.XDPModeGeneric, "generic mode requested"
	case d.s.XDPMode == v1alpha1.XDPModeNative && d.k.nativeRefused:
		return fmt.Errorf("attach xdp to ifindex %d in Native mode: operation not supported", ifc.ifindex)
	case d.s.XDPMode == v1alpha1.XDPModeNative:
		d.mode, d.reason = v1alpha1.XDPModeNative, "native mode requested"
	case d.k.nativeRefused:
		d.mode, d.reason = v1alpha1.XDPModeGeneric, "native mode refused (operation not supported), fell back to generic"
	default:
		d.mode, d.reason = v1alpha1.XDPModeNative, "native mode supported by the driver"
	}
	d.ifc, d.message = ifc, d.reason
	d.program++
	return nil
}

// reattach follows an interface that came back. Called with d.mu held.
func (d *Datapath) reattach(ifc *iface) {
	if err := d.attach(ifc); err != nil {
		d.message = err.Error()
		return
	}
	ifc.promisc = d.s.Promiscuous
}

// Frame is traffic given to Receive: Packets frames of Bytes bytes in all.
type Frame struct {
	Src, Dst netip.Addr
	Packets  uint64
	Bytes    uint64
	// Snooped: addressed to another host (dropped by the NIC unless
	// promiscuous).
	Snooped bool
}

// Receive counts f as the XDP program (bpf/lanmonitor.c) would, and
// returns how many of its frames were dropped. Frames for another host on a non-promiscuous
// interface are only counted as FilteredSnooped.
func (d *Datapath) Receive(f Frame) (dropped uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ifc == nil || d.closed {
		return 0
	}
	if f.Snooped && !d.s.Promiscuous {
		d.stats.FilteredSnooped += f.Packets
		return 0
	}
	src, dst := f.Src.Unmap(), f.Dst.Unmap()
	d.stats.Packets += f.Packets
	d.stats.Bytes += f.Bytes
	if src.Is4() {
		d.stats.IPv4 += f.Packets
	} else {
		d.stats.IPv6 += f.Packets
	}
	local, snooped := f.Packets, uint64(0)
	if f.Snooped {
		local, snooped = 0, f.Packets
	}
	d.stats.Local += local
	d.stats.Snooped += snooped
	a := bpf.AddrFrom(src)
	t := d.talkers[a]
	if t == nil {
		t = &bpf.Talker{Addr: a}
		d.talkers[a] = t
		d.stats.TalkerInserts++
	}
	t.Packets += f.Packets
	t.Bytes += f.Bytes
	t.LocalPackets += local
	t.SnoopedPackets += snooped

	// As lanmonitor.c: source, then (if passed) destination, longest
	// prefix wins; a Both rule matching both counts once.
	var ruleID uint32
	drop := false
	if r, ok := lookup(d.tables[bpf.TableSource], src); ok {
		ruleID = r.ID
		drop = d.applyRule(r, src, f)
	}
	if r, ok := lookup(d.tables[bpf.TableDestination], dst); !drop && ok && r.ID != ruleID {
		drop = d.applyRule(r, dst, f)
	}
	if drop {
		d.stats.Dropped += f.Packets
		return f.Packets
	}
	d.stats.Passed += f.Packets
	return 0
}

// applyRule counts a match of addr against r and reports whether f is
// dropped: a protected addr is exempted, an Enforce rule drops frames for
// this interface (snooped ones are only counted). Called with d.mu held.
func (d *Datapath) applyRule(r bpf.Rule, addr netip.Addr, f Frame) bool {
	c := d.counters[r.ID]
	if c == nil {
		c = &bpf.RuleCounters{}
		d.counters[r.ID] = c
	}
	c.Matched += f.Packets
	if _, ok := lookup(d.tables[bpf.TableProtected], addr); ok {
		c.Exempted += f.Packets
		d.stats.Exempted += f.Packets
		return false
	}
	if r.Mode == bpf.ModeEnforce && !f.Snooped {
		c.Dropped += f.Packets
		return true
	}
	return false
}

// AddStats adds s to the global counters, for what the fake does not
// derive from frames (malformed and non-IP frames, fragments, VLAN tags).
func (d *Datapath) AddStats(s bpf.Stats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dst, src := reflect.ValueOf(&d.stats).Elem(), reflect.ValueOf(s)
	for i := range dst.NumField() {
		f := dst.Field(i)
		f.SetUint(f.Uint() + src.Field(i).Uint())
	}
}

// lookup is the longest-prefix match of a in t.
func lookup(t map[netip.Prefix]bpf.Rule, a netip.Addr) (bpf.Rule, bool) {
	for bits := a.BitLen(); bits >= 0; bits-- {
		p, _ := a.Prefix(bits)
		if r, ok := t[p]; ok {
			return r, true
		}
	}
	return bpf.Rule{}, false
}

// Tables returns a copy of the rule tables in force.
func (d *Datapath) Tables() kernel.Tables {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := kernel.Tables{}
	for t, m := range d.tables {
		out[t] = maps.Clone(m)
	}
	return out
}

// Syncs is how many SyncTables calls changed at least one entry.
func (d *Datapath) Syncs() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.syncs
}

// RuleCounterReads is how many times RuleCounters was called. A Manager's
// report reads the rule counters last, so a test that waits for this to
// grow knows that the report has read everything it will.
func (d *Datapath) RuleCounterReads() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ruleReads
}

// Closed reports whether Close was called, and with cleanup.
func (d *Datapath) Closed() (closed, cleanup bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed, d.cleaned
}

// Stats returns the global counters.
func (d *Datapath) Stats() (bpf.Stats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats, nil
}

// Talkers returns every tracked source.
func (d *Datapath) Talkers() ([]bpf.Talker, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]bpf.Talker, 0, len(d.talkers))
	for _, t := range d.talkers {
		out = append(out, *t)
	}
	return out, nil
}

// RuleCounters returns the per-rule counters by rule ID.
func (d *Datapath) RuleCounters() (map[uint32]bpf.RuleCounters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ruleReads++
	out := make(map[uint32]bpf.RuleCounters, len(d.counters))
	for id, c := range d.counters {
		out[id] = *c
	}
	return out, nil
}

// Capacity is the configured talker capacity.
func (d *Datapath) Capacity() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int(d.s.MaxTrackedSources)
}

// SyncTables replaces the tables, counting the entries that differ.
func (d *Datapath) SyncTables(t kernel.Tables) (written, deleted int, err error) {
	d.k.mu.Lock()
	delay, notify := d.k.syncDelay, d.k.onSync
	d.k.mu.Unlock()
	if delay != nil {
		time.Sleep(delay())
	}
	d.mu.Lock()
	defer func() {
		tables := d.tables
		d.mu.Unlock()
		if notify != nil && written+deleted > 0 {
			notify(tables)
		}
	}()
	for _, tab := range []bpf.Table{bpf.TableSource, bpf.TableDestination, bpf.TableProtected} {
		have, want := d.tables[tab], t[tab]
		for p, r := range want {
			if old, ok := have[p]; !ok || old != r {
				written++
			}
		}
		for p := range have {
			if _, ok := want[p]; !ok {
				deleted++
			}
		}
	}
	next := kernel.Tables{}
	for tab, m := range t {
		next[tab] = maps.Clone(m)
	}
	d.tables = next
	if written+deleted > 0 {
		d.syncs++
	}
	return written, deleted, nil
}

// Reconfigure takes s and t; a new capacity keeps the tracked sources (as
// the real rebuild copies them).
func (d *Datapath) Reconfigure(s kernel.Settings, t kernel.Tables) error {
	if _, _, err := d.SyncTables(t); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	prev := d.s
	d.s = s
	if s.XDPMode != prev.XDPMode && d.ifc != nil {
		if err := d.attach(d.ifc); err != nil {
			d.s = prev
			return err
		}
	}
	if d.ifc != nil {
		d.ifc.promisc = s.Promiscuous
	}
	return nil
}

// Link is the simulated interface's state.
func (d *Datapath) Link() kernel.Link {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := kernel.Link{Name: d.s.Interface, Message: d.message}
	if d.ifc != nil && !d.closed {
		l.Ifindex, l.Attached = d.ifc.ifindex, true
		l.XDPMode, l.XDPModeReason, l.ProgramID = d.mode, d.reason, d.program
		l.Promiscuous = d.ifc.promisc
	}
	return l
}

// Addresses are the kernel's addresses and the interface's subnets.
func (d *Datapath) Addresses() kernel.Addresses {
	d.mu.Lock()
	ifc := d.ifc
	d.mu.Unlock()
	d.k.mu.Lock()
	defer d.k.mu.Unlock()
	return d.k.addresses(ifc)
}

// Refresh has nothing to repair: the fake delivers every interface event.
func (d *Datapath) Refresh() {}

// Close releases the interface for another Open.
func (d *Datapath) Close(cleanup bool) error {
	d.k.mu.Lock()
	defer d.k.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed, d.cleaned = true, cleanup
	if d.k.open[d.s.Interface] == d {
		delete(d.k.open, d.s.Interface)
	}
	if cleanup && d.ifc != nil {
		d.ifc.promisc = false
	}
	return nil
}
