package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/internal/sse"
)

// DefaultPinRoot is where pin directories live: <root>/<interface>/.
const DefaultPinRoot = "/sys/fs/bpf/lanmonitor"

// Options are the agent-wide settings of a Manager.
type Options struct {
	// PinRoot is the bpffs directory holding one pin directory per
	// interface. Default DefaultPinRoot.
	PinRoot string
	// NetNS is the path of the network namespace holding the interface
	// (e.g. /run/netns/node1); empty means the agent's own.
	NetNS string
	// MaxPrefixes and MaxRules size the rule maps (bpf.Config).
	MaxPrefixes uint32
	MaxRules    uint32
	// Logger receives lifecycle events and flow samples. Default slog.Default().
	Logger *slog.Logger
	// Node names this machine in report events: the Kubernetes node
	// name, or the host name standalone. Default os.Hostname().
	Node string
}

func (o *Options) setDefaults() {
	if o.PinRoot == "" {
		o.PinRoot = DefaultPinRoot
	}
	if o.MaxPrefixes == 0 {
		o.MaxPrefixes = bpf.DefaultMaxPrefixes
	}
	if o.MaxRules == 0 {
		o.MaxRules = bpf.DefaultMaxRules
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
}

// State is what a Manager's interface is doing.
type State string

const (
	// StateAttached: the program is attached and counting.
	StateAttached State = "Attached"
	// StateNotAttached: the interface is gone; the Manager re-attaches
	// when an interface of the same name appears.
	StateNotAttached State = "NotAttached"
	// StateStopped: Close was called.
	StateStopped State = "Stopped"
)

// Report is one interface's state and counters, taken every report interval.
type Report struct {
	Interface     string // current name (it may have been renamed)
	Ifindex       int
	State         State
	Message       string
	XDPMode       XDPMode // in use, as the kernel reports it
	XDPModeReason string
	ProgramID     uint32 // the attached XDP program's ID
	Promiscuous   bool   // IFF_PROMISC is set
	Time          time.Time
	Stats         bpf.Stats
	// BitsPerSecond and PacketsPerSecond are the interface's rates over
	// the last report interval (all frames).
	BitsPerSecond, PacketsPerSecond uint64
	TopTalkers                      []TalkerReport
	TrackedSources                  int
	TrackedSourcesCapacity          int
	// Evictions is how many sources the full talker map pushed out.
	Evictions uint64
	Rules     []RuleReport
}

// Manager runs lanmonitor's datapath on one interface. Create it with
// Start, change its configuration with Apply, stop it with Close.
type Manager struct {
	opts   Options
	log    *slog.Logger
	ns     *netNS
	pinDir string

	mu       sync.Mutex
	cfg      Config
	dp       *bpf.Datapath
	att      *attachment
	promisc  *promiscuity
	ifindex  int // 0 while the interface is missing
	ifname   string
	state    State
	message  string
	tracker  rateTracker
	last     Report
	internal []netip.Prefix
	auto     []netip.Prefix // node addresses and default gateways
	// exempted caches each block's protected addresses (by name); it
	// changes only with the configuration or the automatic addresses.
	exempted map[string][]string
	samples  *ringbuf.Reader
	// events streams every report to dashboard clients and keeps ten
	// minutes of them.
	events *sse.Hub
	// reports and reportTime count the reports taken and the time they
	// took (reading the maps, ranking, publishing the event).
	reports    uint64
	reportTime time.Duration
	// read is the last read of the talker map and the counters it was
	// read with: while no frame arrives (the counters stand still), the
	// map cannot have changed, and a report reuses it instead of reading
	// 65,536 entries again (an idle agent costs next to nothing).
	read talkerRead

	// lock is the pin directory, open and flock'ed while this Manager runs,
	// so that a second agent cannot adopt the pins of a live one.
	lock *os.File

	stop chan struct{}
	wg   sync.WaitGroup
}

// Start attaches lanmonitor to cfg.Interface: it loads (or adopts) the
// pinned maps under <PinRoot>/<interface>/, fills the rule tables, attaches
// the program through a pinned XDP link (or adopts the link an earlier run
// pinned, swapping its program atomically), and makes the interface
// promiscuous if asked. It then follows the interface through netlink and
// reads counters every cfg.ReportInterval.
//
// Errors: an invalid cfg, an interface that does not exist, missing
// privileges, another XDP program on the interface (wraps ErrBusy). On error
// everything Start created is removed again; state adopted from an earlier
// run is left as it was.
func Start(cfg Config, opts Options) (*Manager, error) {
	opts.setDefaults()
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(opts.MaxRules); err != nil {
		return nil, err
	}
	if err := checkCapabilities(opts.NetNS != ""); err != nil {
		return nil, err
	}
	ns, err := openNetNS(opts.NetNS)
	if err != nil {
		return nil, err
	}
	l, err := ns.nl.LinkByName(cfg.Interface)
	if err != nil {
		ns.close()
		if isLinkNotFound(err) {
			return nil, fmt.Errorf("interface %q not found in %s", cfg.Interface, ns)
		}
		return nil, fmt.Errorf("find interface %q: %w", cfg.Interface, err)
	}
	m := &Manager{
		opts: opts, log: opts.Logger.With("interface", cfg.Interface), ns: ns,
		pinDir: filepath.Join(opts.PinRoot, cfg.Interface),
		cfg:    cfg, ifindex: l.Attrs().Index, ifname: cfg.Interface, stop: make(chan struct{}),
		events: newEventHub(),
	}
	if err := m.start(l); err != nil {
		ns.close()
		return nil, err
	}
	m.wg.Add(2)
	go m.run()
	go m.readSamples(m.samples)
	return m, nil
}

// start does the work of Start, undoing its own steps on error.
func (m *Manager) start(l netlink.Link) (err error) {
	_, statErr := os.Stat(m.pinDir)
	freshDir := errors.Is(statErr, os.ErrNotExist)
	_, statErr = os.Stat(m.opts.PinRoot)
	freshRoot := errors.Is(statErr, os.ErrNotExist)
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			if freshDir {
				os.Remove(m.pinDir)
			}
			if freshRoot {
				os.Remove(m.opts.PinRoot)
			}
		}
	}()

	if m.lock, err = lockPinDir(m.pinDir); err != nil {
		return err
	}
	undo = append(undo, func() { m.lock.Close() })

	dp, repin, err := m.loadDatapath(m.cfg.MaxTrackedSources)
	if err != nil {
		return err
	}
	undo = append(undo, func() {
		if freshDir {
			dp.Unpin()
		}
		dp.Close()
	})
	m.dp = dp
	m.refreshAuto()
	if err := m.configureDatapath(dp, l); err != nil {
		return err
	}

	att, err := attachXDP(m.ns, m.pinDir, m.ifindex, dp.Program(), m.cfg.XDPMode)
	if err != nil {
		return err
	}
	if !att.adopted {
		undo = append(undo, func() { att.detach() })
	}
	m.att = att
	if repin {
		if err := dp.Pin(m.pinDir); err != nil {
			return err
		}
	}

	p, err := openPromisc(m.ns, m.pinDir)
	if err != nil {
		return err
	}
	undo = append(undo, func() { p.close(freshDir) })
	m.promisc = p
	if m.cfg.Promiscuous {
		if err := p.ensure(m.ifindex); err != nil {
			return err
		}
		undo = append(undo, func() { p.restore(m.ifindex) })
	} else if err := p.restore(m.ifindex); err != nil {
		return err
	}

	samples, err := ringbuf.NewReader(dp.SamplesMap())
	if err != nil {
		return fmt.Errorf("open flow sample ring buffer: %w", err)
	}
	m.samples = samples
	m.state = StateAttached
	m.message = att.reason
	m.log.Info("attached", "ifindex", m.ifindex, "xdpMode", att.mode, "reason", att.reason, "adopted", att.adopted,
		"programID", xdpProgramID(m.ns, m.ifindex), "promiscuous", m.cfg.Promiscuous)
	m.readCounters(time.Now())
	return nil
}

// lockPinDir creates the pin directory if needed and takes an exclusive
// flock on it (released when the process ends, even by kill -9). A
// directory locked by another process means another agent manages the
// interface. Errors: that, or the directory cannot be made (no bpffs, no
// permission).
func lockPinDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open pin directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("pin directory %s is locked: another lanmonitor agent manages this interface", dir)
		}
		return nil, fmt.Errorf("lock pin directory %s: %w", dir, err)
	}
	return f, nil
}

// loadDatapath loads the program with maps pinned in the pin directory.
// Pinned maps that no longer fit (another capacity, another layout) are
// replaced by new ones, their contents carried over where the layouts
// allow (bpf.Datapath.Replaced, CarriedOver), and it reports repin: the
// caller fills the new maps, moves the link to the new program, then pins
// them, so enforcement never lapses.
func (m *Manager) loadDatapath(capacity uint32) (*bpf.Datapath, bool, error) {
	cfg := bpf.Config{MaxTrackedSources: capacity, MaxPrefixes: m.opts.MaxPrefixes, MaxRules: m.opts.MaxRules, PinPath: m.pinDir}
	dp, err := bpf.Load(cfg)
	if err == nil && len(dp.Replaced()) > 0 {
		m.log.Warn("pinned maps do not match this agent; replacing them", "replaced", dp.Replaced(), "carriedOver", dp.CarriedOver())
		return dp, true, nil
	}
	if errors.Is(err, bpf.ErrIncompatiblePins) {
		m.log.Warn("pinned maps do not match the configuration; starting with new maps (counters restart)", "error", err)
		cfg.PinPath = ""
		dp, err = bpf.Load(cfg)
		return dp, true, err
	}
	return dp, false, err
}

// configureDatapath writes the interface MAC, the sampling rate and the rule
// tables into dp.
func (m *Manager) configureDatapath(dp *bpf.Datapath, l netlink.Link) error {
	if mac := l.Attrs().HardwareAddr; len(mac) == 6 {
		if err := dp.SetInterfaceMAC(mac); err != nil {
			return err
		}
	}
	if err := dp.SetSampleRate(m.cfg.FlowSampling); err != nil {
		return err
	}
	if err := dp.SetPromiscuous(m.cfg.Promiscuous); err != nil {
		return err
	}
	return m.syncRules(dp)
}

// protected is every prefix the lockout guard keeps: configured ones plus
// the node's own addresses and default gateways.
func (m *Manager) protected() []netip.Prefix {
	return append(slices.Clone(m.cfg.ProtectedCIDRs), m.auto...)
}

// syncRules makes dp's tables match the configuration, touching only what
// changed, all tables at one instant (bpf.Datapath.SyncTables).
func (m *Manager) syncRules(dp *bpf.Datapath) error {
	t, lost := buildTables(m.cfg.Blocks, m.protected())
	for _, s := range lost {
		m.log.Warn("prefix listed by two blocks; the other one applies", "block", s.Block, "prefix", s.Prefix, "appliedBlock", s.Winner)
	}
	w, d, err := dp.SyncTables(t)
	if err != nil {
		return err
	}
	if w+d > 0 {
		m.log.Debug("rule tables synced", "written", w, "deleted", d, "protected", len(t[bpf.TableProtected]),
			"source", len(t[bpf.TableSource]), "destination", len(t[bpf.TableDestination]))
	}
	return nil
}

// refreshAuto recomputes the automatic protected prefixes (every address
// of the namespace and its default gateways) and the default internal CIDRs
// (the interface's connected subnets). It reports whether the protected set
// changed.
func (m *Manager) refreshAuto() bool {
	var auto []netip.Prefix
	if addrs, err := m.ns.nl.AddrList(nil, netlink.FAMILY_ALL); err == nil {
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				ip = ip.Unmap()
				auto = append(auto, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	if routes, err := m.ns.nl.RouteList(nil, netlink.FAMILY_ALL); err == nil {
		for _, r := range routes {
			if ip, ok := netip.AddrFromSlice(r.Gw); ok && (r.Dst == nil || isDefault(r.Dst.String())) {
				ip = ip.Unmap()
				auto = append(auto, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	slices.SortFunc(auto, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	auto = slices.Compact(auto)
	changed := !slices.Equal(auto, m.auto)
	m.auto = auto
	if changed {
		m.exempted = nil
	}

	m.internal = m.cfg.InternalCIDRs
	if len(m.internal) == 0 && m.ifindex != 0 {
		if l, err := m.ns.nl.LinkByIndex(m.ifindex); err == nil {
			if addrs, err := m.ns.nl.AddrList(l, netlink.FAMILY_ALL); err == nil {
				var connected []netip.Prefix
				for _, a := range addrs {
					if ip, ok := netip.AddrFromSlice(a.IP); ok && a.IPNet != nil {
						ones, _ := a.Mask.Size()
						connected = append(connected, netip.PrefixFrom(ip.Unmap(), ones).Masked())
					}
				}
				m.internal = connected
			}
		}
	}
	return changed
}

func isDefault(dst string) bool { return dst == "0.0.0.0/0" || dst == "::/0" }

// run is the Manager's loop: counters every report interval, interface
// events as they come.
func (m *Manager) run() {
	defer m.wg.Done()
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace: &m.ns.handle,
		ErrorCallback: func(err error) {
			select {
			case <-m.stop: // the socket closes on the way out
			default:
				m.log.Error("netlink subscription", "error", err)
			}
		},
	})
	if err != nil {
		m.log.Error("netlink subscription failed; interface changes will be seen only at each report", "error", err)
	}
	m.mu.Lock()
	interval := m.cfg.ReportInterval
	m.mu.Unlock()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-ticker.C:
			m.mu.Lock()
			m.tick(now)
			if m.cfg.ReportInterval != interval {
				interval = m.cfg.ReportInterval
				ticker.Reset(interval)
			}
			m.mu.Unlock()
		case u, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			m.mu.Lock()
			m.onLink(u)
			m.mu.Unlock()
		}
	}
}

// tick reads the counters, and repairs what events may have missed.
// Called with m.mu held.
func (m *Manager) tick(now time.Time) {
	if m.refreshAuto() {
		if err := m.syncRules(m.dp); err != nil {
			m.log.Error("sync protected addresses", "error", err)
		}
	}
	if m.ifindex == 0 {
		// A missed RTM_NEWLINK: look for the interface by name.
		if l, err := m.ns.nl.LinkByName(m.cfg.Interface); err == nil {
			m.reattach(l)
		}
	}
	m.readCounters(now)
}

// onLink follows the interface: deleted, recreated (new ifindex), renamed.
// Called with m.mu held.
func (m *Manager) onLink(u netlink.LinkUpdate) {
	attrs := u.Attrs()
	m.log.Debug("link event", "type", u.Header.Type, "ifindex", u.Index, "name", attrs.Name)
	switch {
	case u.Header.Type == unix.RTM_DELLINK && int(u.Index) == m.ifindex:
		m.log.Warn("interface deleted", "ifindex", m.ifindex)
		if m.att != nil {
			// The kernel already detached the program; drop the
			// defunct link and its pin.
			m.att.detach()
			m.att = nil
		}
		m.ifindex = 0
		m.state, m.message = StateNotAttached, fmt.Sprintf("interface %s was deleted; waiting for it to come back", m.ifname)
	case u.Header.Type == unix.RTM_NEWLINK && int(u.Index) == m.ifindex && attrs.Name != m.ifname:
		m.log.Info("interface renamed", "from", m.ifname, "to", attrs.Name)
		m.ifname = attrs.Name
	case u.Header.Type == unix.RTM_NEWLINK && m.ifindex == 0 && attrs.Name == m.cfg.Interface:
		m.reattach(u.Link)
	}
}

// reattach attaches to a recreated interface and re-applies its MAC and
// promiscuity. Called with m.mu held.
func (m *Manager) reattach(l netlink.Link) {
	ifindex := l.Attrs().Index
	att, err := attachXDP(m.ns, m.pinDir, ifindex, m.dp.Program(), m.cfg.XDPMode)
	if err != nil {
		m.message = fmt.Sprintf("re-attach to %s (ifindex %d): %v", l.Attrs().Name, ifindex, err)
		m.log.Error("re-attach", "ifindex", ifindex, "error", err)
		return
	}
	m.att, m.ifindex, m.ifname = att, ifindex, l.Attrs().Name
	if mac := l.Attrs().HardwareAddr; len(mac) == 6 {
		if err := m.dp.SetInterfaceMAC(mac); err != nil {
			m.log.Error("set interface mac", "error", err)
		}
	}
	if m.cfg.Promiscuous {
		if err := m.promisc.ensure(ifindex); err != nil {
			m.log.Error("promiscuous mode", "error", err)
		}
	}
	m.state, m.message = StateAttached, att.reason
	m.log.Info("re-attached", "ifindex", ifindex, "xdpMode", att.mode)
}

// readCounters takes a report. Called with m.mu held.
func (m *Manager) readCounters(now time.Time) {
	start := time.Now()
	defer func() {
		m.reports++
		m.reportTime += time.Since(start)
	}()
	stats, err := m.dp.Stats()
	if err != nil {
		m.log.Error("read counters", "error", err)
		return
	}
	talkers := m.read.talkers
	if !m.read.reusable(m.dp, stats) {
		// Stable counters since the last report mean the map is quiet; a
		// read then is complete (no frame half-counted: XDP adds to the
		// frame counter before the talker's entry), and later reports
		// reuse it while the counters stay put.
		settled := m.read.same(m.dp, stats)
		if talkers, err = m.dp.Talkers(); err != nil {
			m.log.Error("read talkers", "error", err)
			return
		}
		before := stats
		// Counters read after the map, so that they cover at least what it counted.
		if stats, err = m.dp.Stats(); err != nil {
			m.log.Error("read counters", "error", err)
			return
		}
		m.read = talkerRead{dp: m.dp, talkers: talkers, packets: before.Packets, inserts: before.TalkerInserts,
			settled: settled && stats.Packets == before.Packets && stats.TalkerInserts == before.TalkerInserts}
	}
	m.tracker.update(now, talkers, stats, m.internal)
	r := Report{
		Interface: m.ifname, Ifindex: m.ifindex, State: m.state, Message: m.message,
		Time: now, Stats: stats,
		BitsPerSecond: m.tracker.total.bits, PacketsPerSecond: m.tracker.total.packets,
		TopTalkers:             topTalkers(talkers, &m.tracker, m.internal, m.cfg.TopN),
		TrackedSources:         len(talkers),
		TrackedSourcesCapacity: int(m.dp.Config().MaxTrackedSources),
	}
	if n := uint64(len(talkers)); stats.TalkerInserts > n {
		r.Evictions = stats.TalkerInserts - n
	}
	if m.att != nil {
		r.XDPMode, r.XDPModeReason = m.att.mode, m.att.reason
		r.ProgramID = xdpProgramID(m.ns, m.ifindex)
	}
	if m.ifindex != 0 {
		r.Promiscuous, _ = m.promisc.flag(m.ifindex)
	}
	r.Rules, err = m.ruleReports()
	if err != nil {
		m.log.Error("read rule counters", "error", err)
	}
	prev := m.last
	m.last = r
	// Publish never blocks: a slow dashboard client is dropped, not waited for.
	if _, err := m.events.Publish(now, reportEvent(m.opts.Node, m.cfg, &prev, &r, m.tracker.split)); err != nil {
		m.log.Error("publish report event", "error", err)
	}
}

// talkerRead is one read of a datapath's talker map.
type talkerRead struct {
	dp      *bpf.Datapath
	talkers []bpf.Talker
	// packets and inserts are the global counters read just before the
	// map: every counted frame adds to packets, every new source to
	// inserts.
	packets, inserts uint64
	// settled: the counters had not moved for a whole report interval
	// before the read, nor during it, so it holds every frame counted.
	settled bool
}

// same reports whether counters stats are those the read was keyed by,
// on the same maps: no frame since.
func (r *talkerRead) same(dp *bpf.Datapath, stats bpf.Stats) bool {
	return r.dp == dp && r.talkers != nil && stats.Packets == r.packets && stats.TalkerInserts == r.inserts
}

// reusable reports whether a report may use the read instead of reading
// the map: settled, and no frame since.
func (r *talkerRead) reusable(dp *bpf.Datapath, stats bpf.Stats) bool {
	return r.settled && r.same(dp, stats)
}

// Events is the stream and ten-minute history of this interface's
// reports (ReportEvent values), for GET /api/v1/events and /api/v1/history.
func (m *Manager) Events() *sse.Hub { return m.events }

// ruleReports joins the blocks with their counters. Called with m.mu held.
func (m *Manager) ruleReports() ([]RuleReport, error) {
	counters, err := m.dp.RuleCounters()
	if err != nil {
		return nil, err
	}
	if m.exempted == nil {
		protected := m.protected()
		m.exempted = make(map[string][]string, len(m.cfg.Blocks))
		for _, b := range m.cfg.Blocks {
			m.exempted[b.Name] = exemptions(b.CIDRs, protected)
		}
	}
	out := make([]RuleReport, 0, len(m.cfg.Blocks))
	for _, b := range m.cfg.Blocks {
		c := counters[b.RuleID]
		out = append(out, RuleReport{
			Name: b.Name, RuleID: b.RuleID, Generation: b.Generation, Direction: b.Direction, Mode: b.Mode,
			Matched: c.Matched, Dropped: c.Dropped, Exempted: c.Exempted,
			ExemptedAddresses: m.exempted[b.Name],
		})
	}
	slices.SortFunc(out, func(a, b RuleReport) int { return int(a.RuleID) - int(b.RuleID) })
	return out, nil
}

// Report returns the report taken at the last report interval.
func (m *Manager) Report() Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// ReportTiming returns how many reports this Manager took and the time
// they took in all (reading the maps, ranking, publishing the event; wall
// time, monotonic clock).
func (m *Manager) ReportTiming() (reports uint64, total time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reports, m.reportTime
}

// Attachment returns the interface's current name, the XDP mode in use
// ("" when not attached) and whether IFF_PROMISC is set, read now.
func (m *Manager) Attachment() (ifname string, mode XDPMode, promiscuous bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.att != nil {
		mode = m.att.mode
	}
	if m.ifindex != 0 {
		promiscuous, _ = m.promisc.flag(m.ifindex)
	}
	return m.ifname, mode, promiscuous
}

// State returns what the interface is doing now, and why.
func (m *Manager) State() (State, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state, m.message
}

// Config returns the configuration in force.
func (m *Manager) Config() Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

// Talkers reads every tracked source now, with the rates of the last report
// interval, ranked by bits per second then bytes; limit <= 0 returns all.
func (m *Manager) Talkers(limit int) ([]TalkerReport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ts, err := m.dp.Talkers()
	if err != nil {
		return nil, err
	}
	return rankTalkers(ts, &m.tracker, m.internal, limit), nil
}

// Stats reads the global counters now, with the number of tracked sources
// and the talker map's capacity.
func (m *Manager) Stats() (bpf.Stats, int, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.dp.Stats()
	if err != nil {
		return st, 0, 0, err
	}
	ts, err := m.dp.Talkers()
	if err != nil {
		return st, 0, 0, err
	}
	return st, len(ts), int(m.dp.Config().MaxTrackedSources), nil
}

// Rules reads the blocks' counters now.
func (m *Manager) Rules() ([]RuleReport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ruleReports()
}

// Apply changes the configuration of the running interface: blocks,
// protected and internal CIDRs, sampling, top N and the report interval take
// effect at once, by diff; a new talker capacity rebuilds the maps and swaps
// the program atomically (counters restart); a new attach mode re-attaches
// (the kernel allows one mode at a time, so for a moment no program runs);
// promiscuity is set or restored. cfg.Interface must not change.
// On error the previous configuration stays in force. The configuration
// already in force (equal after defaults) is a no-op, so callers may apply
// on every sync.
func (m *Manager) Apply(cfg Config) error {
	cfg = cfg.WithDefaults()
	// The configuration in force again (the node agent applies what its
	// LanMonitorNode says on every sync): nothing to validate or write.
	m.mu.Lock()
	same := reflect.DeepEqual(cfg, m.cfg)
	m.mu.Unlock()
	if same {
		return nil
	}
	if err := cfg.Validate(m.opts.MaxRules); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cfg.Interface != m.cfg.Interface {
		return fmt.Errorf("interface: %q cannot change to %q in place; start a new manager", m.cfg.Interface, cfg.Interface)
	}
	prev := m.cfg
	m.cfg = cfg
	m.exempted = nil
	if err := m.apply(prev); err != nil {
		m.cfg = prev
		if serr := m.syncRules(m.dp); serr != nil {
			err = errors.Join(err, fmt.Errorf("restore previous rules: %w", serr))
		}
		return err
	}
	m.refreshAuto()
	return nil
}

// apply moves the datapath from prev to m.cfg. Called with m.mu held.
func (m *Manager) apply(prev Config) error {
	if m.cfg.MaxTrackedSources != prev.MaxTrackedSources {
		if err := m.rebuild(); err != nil {
			return err
		}
	}
	if err := m.dp.SetSampleRate(m.cfg.FlowSampling); err != nil {
		return err
	}
	if err := m.syncRules(m.dp); err != nil {
		return err
	}
	if m.cfg.XDPMode != prev.XDPMode && m.att != nil {
		if err := m.att.detach(); err != nil {
			return err
		}
		att, err := attachXDP(m.ns, m.pinDir, m.ifindex, m.dp.Program(), m.cfg.XDPMode)
		if err != nil {
			m.att = nil
			m.state, m.message = StateNotAttached, err.Error()
			return err
		}
		m.att, m.message = att, att.reason
	}
	if err := m.dp.SetPromiscuous(m.cfg.Promiscuous); err != nil {
		return err
	}
	if m.cfg.Promiscuous != prev.Promiscuous && m.ifindex != 0 {
		if m.cfg.Promiscuous {
			return m.promisc.ensure(m.ifindex)
		}
		return m.promisc.restore(m.ifindex)
	}
	return nil
}

// rebuild replaces the talker map by one of the configured capacity: a new
// program adopts the other pinned maps (rules and counters continue) and
// gets the tracked sources copied over, then takes over the link
// atomically, then its talker map replaces the old pin. Called with m.mu
// held.
func (m *Manager) rebuild() error {
	cfg := m.dp.Config()
	cfg.MaxTrackedSources = m.cfg.MaxTrackedSources
	dp, err := bpf.Load(cfg)
	if err != nil {
		return err
	}
	l, err := m.ns.nl.LinkByIndex(m.ifindex)
	if err == nil {
		err = m.configureDatapath(dp, l)
	}
	if err == nil && m.att != nil {
		err = m.att.link.Update(dp.Program())
	}
	if err == nil {
		err = dp.Pin(m.pinDir)
	}
	if err != nil {
		dp.Close()
		return fmt.Errorf("rebuild maps for %d sources: %w", m.cfg.MaxTrackedSources, err)
	}
	old := m.dp
	m.dp = dp
	m.tracker = rateTracker{}
	samples, serr := ringbuf.NewReader(dp.SamplesMap())
	if serr == nil {
		m.samples.Close()
		m.samples = samples
		m.wg.Add(1)
		go m.readSamples(samples)
	}
	old.Close()
	m.log.Info("maps rebuilt", "maxTrackedSources", m.cfg.MaxTrackedSources)
	return nil
}

// Close stops the Manager. With cleanup it detaches the program, removes
// every pin and restores promiscuity: the interface is left as it was found.
// Without cleanup it only releases its file descriptors: the pinned link
// keeps the program attached and counting, for the next agent to adopt.
// Returns every error met, joined.
func (m *Manager) Close(cleanup bool) error {
	close(m.stop)
	m.events.Close()
	m.mu.Lock()
	m.samples.Close()
	m.mu.Unlock()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	var err error
	if cleanup {
		if m.ifindex != 0 {
			err = errors.Join(err, m.promisc.restore(m.ifindex))
		}
		if m.att != nil {
			err = errors.Join(err, m.att.detach())
		}
		err = errors.Join(err, m.promisc.close(true), m.dp.Unpin(), m.dp.Close())
		if rmErr := os.Remove(m.pinDir); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("remove pin directory: %w", rmErr))
		}
		if rmErr := os.Remove(m.opts.PinRoot); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) && !errors.Is(rmErr, syscall.ENOTEMPTY) {
			err = errors.Join(err, fmt.Errorf("remove pin root: %w", rmErr))
		}
	} else {
		if m.att != nil {
			err = errors.Join(err, m.att.link.Close())
		}
		err = errors.Join(err, m.promisc.close(false), m.dp.Close())
	}
	m.ns.close()
	m.lock.Close()
	m.state = StateStopped
	return err
}
