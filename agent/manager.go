package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/lanmonitor/lanmonitor/agent/kernel"
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
	// Kernel opens the datapath. Default HostKernel with PinRoot, NetNS,
	// MaxPrefixes and MaxRules; package kernel/fake runs the agent's
	// logic without root.
	Kernel kernel.Kernel
	// Clock times the reports (their ticker and the time rates are
	// computed over). Default the real clock; a fake one
	// (k8s.io/utils/clock/testing) makes rates exact in tests.
	Clock clock.WithTicker
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
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Kernel == nil {
		o.Kernel = HostKernel{PinRoot: o.PinRoot, NetNS: o.NetNS, MaxPrefixes: o.MaxPrefixes, MaxRules: o.MaxRules}
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
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	cfg      Config
	dp       kernel.Datapath
	tracker  rateTracker
	last     Report
	internal []netip.Prefix
	auto     []netip.Prefix // node addresses and default gateways
	// exempted caches each block's protected addresses (by name); it
	// changes only with the configuration or the automatic addresses.
	exempted map[string][]string
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
	// closed: Close was called.
	closed bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// Start attaches lanmonitor to cfg.Interface through opts.Kernel (the
// host's by default: see HostKernel.Open), with the rule tables of cfg
// filled before the program sees a frame, and reads counters every
// cfg.ReportInterval.
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
	if err := opts.Kernel.CheckPrivileges(); err != nil {
		return nil, err
	}
	m := &Manager{
		opts: opts, log: opts.Logger.With("interface", cfg.Interface),
		cfg: cfg, stop: make(chan struct{}), events: newEventHub(),
	}
	dp, err := opts.Kernel.Open(settingsOf(cfg), func(a kernel.Addresses) kernel.Tables {
		m.setAddresses(a)
		return m.tables()
	}, m.log)
	if err != nil {
		return nil, err
	}
	m.dp = dp
	m.readCounters(m.opts.Clock.Now())
	m.wg.Add(1)
	go m.run()
	return m, nil
}

// settingsOf is the part of cfg the datapath is opened with.
func settingsOf(cfg Config) kernel.Settings {
	return kernel.Settings{Interface: cfg.Interface, XDPMode: cfg.XDPMode, Promiscuous: cfg.Promiscuous,
		FlowSampling: cfg.FlowSampling, MaxTrackedSources: cfg.MaxTrackedSources}
}

// protected is every prefix the lockout guard keeps: configured ones plus
// the node's own addresses and default gateways.
func (m *Manager) protected() []netip.Prefix {
	return append(slices.Clone(m.cfg.ProtectedCIDRs), m.auto...)
}

// tables builds the rule tables of the configuration, logging each prefix
// that two blocks list. Called with m.mu held (or before Start returns).
func (m *Manager) tables() kernel.Tables {
	t, lost := buildTables(m.cfg.Blocks, m.protected())
	for _, s := range lost {
		m.log.Warn("prefix listed by two blocks; the other one applies", "block", s.Block, "prefix", s.Prefix, "appliedBlock", s.Winner)
	}
	return t
}

// syncRules makes the datapath's tables match the configuration, touching
// only what changed, all tables at one instant. Called with m.mu held.
func (m *Manager) syncRules() error {
	t := m.tables()
	w, d, err := m.dp.SyncTables(t)
	if err != nil {
		return err
	}
	if w+d > 0 {
		m.log.Debug("rule tables synced", "written", w, "deleted", d, "protected", len(t[bpf.TableProtected]),
			"source", len(t[bpf.TableSource]), "destination", len(t[bpf.TableDestination]))
	}
	return nil
}

// setAddresses takes the namespace's addresses: the automatic protected
// prefixes (every address of the namespace and its default gateways) and
// the default internal CIDRs (the interface's connected subnets). It
// reports whether the protected set changed.
func (m *Manager) setAddresses(a kernel.Addresses) bool {
	auto := make([]netip.Prefix, 0, len(a.Local)+len(a.Gateways))
	for _, ip := range slices.Concat(a.Local, a.Gateways) {
		ip = ip.Unmap()
		auto = append(auto, netip.PrefixFrom(ip, ip.BitLen()))
	}
	slices.SortFunc(auto, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	auto = slices.Compact(auto)
	changed := !slices.Equal(auto, m.auto)
	m.auto = auto
	if changed {
		m.exempted = nil
	}
	m.internal = m.cfg.InternalCIDRs
	if len(m.internal) == 0 {
		m.internal = a.Connected
	}
	return changed
}

// run is the Manager's loop: counters every report interval.
func (m *Manager) run() {
	defer m.wg.Done()
	m.mu.Lock()
	interval := m.cfg.ReportInterval
	m.mu.Unlock()
	ticker := m.opts.Clock.NewTicker(interval)
	defer func() { ticker.Stop() }()
	for {
		select {
		case <-m.stop:
			return
		case now := <-ticker.C():
			m.mu.Lock()
			m.tick(now)
			if m.cfg.ReportInterval != interval {
				interval = m.cfg.ReportInterval
				ticker.Stop()
				ticker = m.opts.Clock.NewTicker(interval)
			}
			m.mu.Unlock()
		}
	}
}

// tick reads the counters, and repairs what events may have missed.
// Called with m.mu held.
func (m *Manager) tick(now time.Time) {
	m.dp.Refresh()
	if m.setAddresses(m.dp.Addresses()) {
		if err := m.syncRules(); err != nil {
			m.log.Error("sync protected addresses", "error", err)
		}
	}
	m.readCounters(now)
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
	if !m.read.reusable(stats) {
		// Stable counters since the last report mean the map is quiet; a
		// read then is complete (no frame half-counted: XDP adds to the
		// frame counter before the talker's entry), and later reports
		// reuse it while the counters stay put.
		settled := m.read.same(stats)
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
		m.read = talkerRead{talkers: talkers, packets: before.Packets, inserts: before.TalkerInserts,
			settled: settled && stats.Packets == before.Packets && stats.TalkerInserts == before.TalkerInserts}
	}
	m.tracker.update(now, talkers, stats, m.internal)
	l := m.dp.Link()
	state, msg := linkState(l)
	r := Report{
		Interface: l.Name, Ifindex: l.Ifindex, State: state, Message: msg,
		XDPMode: l.XDPMode, XDPModeReason: l.XDPModeReason, ProgramID: l.ProgramID, Promiscuous: l.Promiscuous,
		Time: now, Stats: stats,
		BitsPerSecond: m.tracker.total.bits, PacketsPerSecond: m.tracker.total.packets,
		TopTalkers:             topTalkers(talkers, &m.tracker, m.internal, m.cfg.TopN),
		TrackedSources:         len(talkers),
		TrackedSourcesCapacity: m.dp.Capacity(),
	}
	if n := uint64(len(talkers)); stats.TalkerInserts > n {
		r.Evictions = stats.TalkerInserts - n
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

// linkState is the Manager's state on interface l, and why.
func linkState(l kernel.Link) (State, string) {
	if l.Attached {
		return StateAttached, l.Message
	}
	return StateNotAttached, l.Message
}

// talkerRead is one read of the datapath's talker map (reset when the map
// is rebuilt).
type talkerRead struct {
	talkers []bpf.Talker
	// packets and inserts are the global counters read just before the
	// map: every counted frame adds to packets, every new source to
	// inserts.
	packets, inserts uint64
	// settled: the counters had not moved for a whole report interval
	// before the read, nor during it, so it holds every frame counted.
	settled bool
}

// same reports whether counters stats are those the read was keyed by: no
// frame since.
func (r *talkerRead) same(stats bpf.Stats) bool {
	return r.talkers != nil && stats.Packets == r.packets && stats.TalkerInserts == r.inserts
}

// reusable reports whether a report may use the read instead of reading
// the map: settled, and no frame since.
func (r *talkerRead) reusable(stats bpf.Stats) bool {
	return r.settled && r.same(stats)
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
	l := m.dp.Link()
	return l.Name, l.XDPMode, l.Promiscuous
}

// State returns what the interface is doing now, and why.
func (m *Manager) State() (State, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return StateStopped, ""
	}
	return linkState(m.dp.Link())
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
	return st, len(ts), m.dp.Capacity(), nil
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
		if serr := m.syncRules(); serr != nil {
			err = errors.Join(err, fmt.Errorf("restore previous rules: %w", serr))
		}
		return err
	}
	m.setAddresses(m.dp.Addresses())
	return nil
}

// apply moves the datapath from prev to m.cfg. Called with m.mu held.
func (m *Manager) apply(prev Config) error {
	if err := m.dp.Reconfigure(settingsOf(m.cfg), m.tables()); err != nil {
		return err
	}
	if m.cfg.MaxTrackedSources != prev.MaxTrackedSources {
		// A new talker map: counters of the old one are gone.
		m.tracker, m.read = rateTracker{}, talkerRead{}
	}
	return nil
}

// Close stops the Manager. With cleanup it detaches the program, removes
// every pin and restores promiscuity: the interface is left as it was found.
// Without cleanup it only releases its file descriptors: the pinned link
// keeps the program attached and counting, for the next agent to adopt.
// Returns every error met, joined; closing again does nothing.
func (m *Manager) Close(cleanup bool) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil
	}
	close(m.stop)
	m.events.Close()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return m.dp.Close(cleanup)
}
