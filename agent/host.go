package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lanmonitor/lanmonitor/agent/kernel"
	"github.com/lanmonitor/lanmonitor/bpf"
)

// HostKernel is the real kernel.Kernel: the XDP program of package bpf on
// an interface of the network namespace NetNS, its maps pinned under
// <PinRoot>/<interface>/.
type HostKernel struct {
	// PinRoot is the bpffs directory holding one pin directory per
	// interface. Default DefaultPinRoot.
	PinRoot string
	// NetNS is the path of the namespace holding the interfaces; empty
	// means the agent's own.
	NetNS string
	// MaxPrefixes and MaxRules size the rule maps (bpf.Config); 0 means
	// the bpf defaults.
	MaxPrefixes, MaxRules uint32
}

// CheckPrivileges names every capability the process lacks (caps.go).
func (k HostKernel) CheckPrivileges() error { return checkCapabilities(k.NetNS != "") }

// DefaultRouteInterface names the interface of the default route (IPv4
// first, then IPv6) in the namespace.
func (k HostKernel) DefaultRouteInterface() (string, error) {
	ns, err := openNetNS(k.NetNS)
	if err != nil {
		return "", err
	}
	defer ns.close()
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := ns.nl.RouteList(nil, family)
		if err != nil {
			return "", fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if (r.Dst == nil || isDefault(r.Dst.String())) && r.LinkIndex > 0 {
				l, err := ns.nl.LinkByIndex(r.LinkIndex)
				if err != nil {
					return "", err
				}
				return l.Attrs().Name, nil
			}
		}
	}
	return "", fmt.Errorf("no default route in %s to pick the interface from: set spec.interface", ns)
}

// hostDatapath is lanmonitor's program on one interface of the host.
type hostDatapath struct {
	k      HostKernel
	log    *slog.Logger
	ns     *netNS
	pinDir string
	// lock is the pin directory, open and flock'ed while this datapath
	// runs, so that a second agent cannot adopt the pins of a live one.
	lock *os.File

	// mu guards what the netlink goroutine changes as well.
	mu      sync.Mutex
	s       kernel.Settings
	dp      *bpf.Datapath
	att     *attachment
	promisc *promiscuity
	ifindex int // 0 while the interface is missing
	ifname  string
	message string // why not attached; the attach reason when attached
	samples *ringbuf.Reader

	stop chan struct{}
	wg   sync.WaitGroup
}

// Open loads (or adopts) the pinned maps under <PinRoot>/<interface>/,
// fills the rule tables, attaches the program through a pinned XDP link
// (or adopts the link an earlier run pinned, swapping its program
// atomically), and makes the interface promiscuous if asked; then it
// follows the interface through netlink. On error everything Open created
// is removed again; state adopted from an earlier run is left as it was.
func (k HostKernel) Open(s kernel.Settings, tables func(kernel.Addresses) kernel.Tables, log *slog.Logger) (kernel.Datapath, error) {
	if k.PinRoot == "" {
		k.PinRoot = DefaultPinRoot
	}
	ns, err := openNetNS(k.NetNS)
	if err != nil {
		return nil, err
	}
	l, err := ns.nl.LinkByName(s.Interface)
	if err != nil {
		ns.close()
		if isLinkNotFound(err) {
			return nil, fmt.Errorf("interface %q not found in %s", s.Interface, ns)
		}
		return nil, fmt.Errorf("find interface %q: %w", s.Interface, err)
	}
	d := &hostDatapath{
		k: k, log: log, ns: ns, pinDir: filepath.Join(k.PinRoot, s.Interface),
		s: s, ifindex: l.Attrs().Index, ifname: s.Interface, stop: make(chan struct{}),
	}
	if err := d.start(l, tables); err != nil {
		ns.close()
		return nil, err
	}
	d.wg.Add(2)
	go d.follow()
	go d.readSamples(d.samples)
	return d, nil
}

// start does the work of Open, undoing its own steps on error.
func (d *hostDatapath) start(l netlink.Link, tables func(kernel.Addresses) kernel.Tables) (err error) {
	_, statErr := os.Stat(d.pinDir)
	freshDir := errors.Is(statErr, os.ErrNotExist)
	_, statErr = os.Stat(d.k.PinRoot)
	freshRoot := errors.Is(statErr, os.ErrNotExist)
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			if freshDir {
				os.Remove(d.pinDir)
			}
			if freshRoot {
				os.Remove(d.k.PinRoot)
			}
		}
	}()

	if d.lock, err = lockPinDir(d.pinDir); err != nil {
		return err
	}
	undo = append(undo, func() { d.lock.Close() })

	dp, repin, err := d.loadDatapath(d.s.MaxTrackedSources)
	if err != nil {
		return err
	}
	undo = append(undo, func() {
		if freshDir {
			dp.Unpin()
		}
		dp.Close()
	})
	d.dp = dp
	if err := d.configure(dp, l, tables(d.addresses())); err != nil {
		return err
	}

	att, err := attachXDP(d.ns, d.pinDir, d.ifindex, dp.Program(), d.s.XDPMode)
	if err != nil {
		return err
	}
	if !att.adopted {
		undo = append(undo, func() { att.detach() })
	}
	d.att = att
	if repin {
		if err := dp.Pin(d.pinDir); err != nil {
			return err
		}
	}

	p, err := openPromisc(d.ns, d.pinDir)
	if err != nil {
		return err
	}
	undo = append(undo, func() { p.close(freshDir) })
	d.promisc = p
	if d.s.Promiscuous {
		if err := p.ensure(d.ifindex); err != nil {
			return err
		}
		undo = append(undo, func() { p.restore(d.ifindex) })
	} else if err := p.restore(d.ifindex); err != nil {
		return err
	}

	samples, err := ringbuf.NewReader(dp.SamplesMap())
	if err != nil {
		return fmt.Errorf("open flow sample ring buffer: %w", err)
	}
	d.samples = samples
	d.message = att.reason
	d.log.Info("attached", "ifindex", d.ifindex, "xdpMode", att.mode, "reason", att.reason, "adopted", att.adopted,
		"programID", xdpProgramID(d.ns, d.ifindex), "promiscuous", d.s.Promiscuous)
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
func (d *hostDatapath) loadDatapath(capacity uint32) (*bpf.Datapath, bool, error) {
	cfg := bpf.Config{MaxTrackedSources: capacity, MaxPrefixes: d.k.MaxPrefixes, MaxRules: d.k.MaxRules, PinPath: d.pinDir}
	dp, err := bpf.Load(cfg)
	if err == nil && len(dp.Replaced()) > 0 {
		d.log.Warn("pinned maps do not match this agent; replacing them", "replaced", dp.Replaced(), "carriedOver", dp.CarriedOver())
		return dp, true, nil
	}
	if errors.Is(err, bpf.ErrIncompatiblePins) {
		d.log.Warn("pinned maps do not match the configuration; starting with new maps (counters restart)", "error", err)
		cfg.PinPath = ""
		dp, err = bpf.Load(cfg)
		return dp, true, err
	}
	return dp, false, err
}

// configure writes the interface MAC, the sampling rate, promiscuity and
// the rule tables into dp.
func (d *hostDatapath) configure(dp *bpf.Datapath, l netlink.Link, t kernel.Tables) error {
	if mac := l.Attrs().HardwareAddr; len(mac) == 6 {
		if err := dp.SetInterfaceMAC(mac); err != nil {
			return err
		}
	}
	if err := dp.SetSampleRate(d.s.FlowSampling); err != nil {
		return err
	}
	if err := dp.SetPromiscuous(d.s.Promiscuous); err != nil {
		return err
	}
	_, _, err := dp.SyncTables(t)
	return err
}

func (d *hostDatapath) Stats() (bpf.Stats, error)      { return d.dp.Stats() }
func (d *hostDatapath) Talkers() ([]bpf.Talker, error) { return d.dp.Talkers() }
func (d *hostDatapath) RuleCounters() (map[uint32]bpf.RuleCounters, error) {
	return d.dp.RuleCounters()
}
func (d *hostDatapath) Capacity() int { return int(d.dp.Config().MaxTrackedSources) }

func (d *hostDatapath) SyncTables(t kernel.Tables) (int, int, error) { return d.dp.SyncTables(t) }

// Addresses reads every address of the namespace, its default gateways and
// the interface's connected subnets.
func (d *hostDatapath) Addresses() kernel.Addresses {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addresses()
}

// addresses is Addresses with d.mu held.
func (d *hostDatapath) addresses() kernel.Addresses {
	var a kernel.Addresses
	if addrs, err := d.ns.nl.AddrList(nil, netlink.FAMILY_ALL); err == nil {
		for _, x := range addrs {
			if ip, ok := netip.AddrFromSlice(x.IP); ok {
				a.Local = append(a.Local, ip.Unmap())
			}
		}
	}
	if routes, err := d.ns.nl.RouteList(nil, netlink.FAMILY_ALL); err == nil {
		for _, r := range routes {
			if ip, ok := netip.AddrFromSlice(r.Gw); ok && (r.Dst == nil || isDefault(r.Dst.String())) {
				a.Gateways = append(a.Gateways, ip.Unmap())
			}
		}
	}
	if d.ifindex != 0 {
		if l, err := d.ns.nl.LinkByIndex(d.ifindex); err == nil {
			if addrs, err := d.ns.nl.AddrList(l, netlink.FAMILY_ALL); err == nil {
				for _, x := range addrs {
					if ip, ok := netip.AddrFromSlice(x.IP); ok && x.IPNet != nil {
						ones, _ := x.Mask.Size()
						a.Connected = append(a.Connected, netip.PrefixFrom(ip.Unmap(), ones).Masked())
					}
				}
			}
		}
	}
	return a
}

func isDefault(dst string) bool { return dst == "0.0.0.0/0" || dst == "::/0" }

// Link reads the interface's state: attachment, program ID and
// IFF_PROMISC now.
func (d *hostDatapath) Link() kernel.Link {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := kernel.Link{Name: d.ifname, Ifindex: d.ifindex, Attached: d.att != nil && d.ifindex != 0, Message: d.message}
	if d.att != nil {
		l.XDPMode, l.XDPModeReason = d.att.mode, d.att.reason
		l.ProgramID = xdpProgramID(d.ns, d.ifindex)
	}
	if d.ifindex != 0 {
		l.Promiscuous, _ = d.promisc.flag(d.ifindex)
	}
	return l
}

// follow is the netlink subscription: the interface deleted, recreated
// (new ifindex), renamed.
func (d *hostDatapath) follow() {
	defer d.wg.Done()
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace: &d.ns.handle,
		ErrorCallback: func(err error) {
			select {
			case <-d.stop: // the socket closes on the way out
			default:
				d.log.Error("netlink subscription", "error", err)
			}
		},
	})
	if err != nil {
		d.log.Error("netlink subscription failed; interface changes will be seen only at each report", "error", err)
		return
	}
	for {
		select {
		case <-d.stop:
			return
		case u, ok := <-updates:
			if !ok {
				return
			}
			d.mu.Lock()
			d.onLink(u)
			d.mu.Unlock()
		}
	}
}

// onLink follows the interface. Called with d.mu held.
func (d *hostDatapath) onLink(u netlink.LinkUpdate) {
	attrs := u.Attrs()
	d.log.Debug("link event", "type", u.Header.Type, "ifindex", u.Index, "name", attrs.Name)
	switch {
	case u.Header.Type == unix.RTM_DELLINK && int(u.Index) == d.ifindex:
		d.log.Warn("interface deleted", "ifindex", d.ifindex)
		if d.att != nil {
			// The kernel already detached the program; drop the
			// defunct link and its pin.
			d.att.detach()
			d.att = nil
		}
		d.ifindex = 0
		d.message = fmt.Sprintf("interface %s was deleted; waiting for it to come back", d.ifname)
	case u.Header.Type == unix.RTM_NEWLINK && int(u.Index) == d.ifindex && attrs.Name != d.ifname:
		d.log.Info("interface renamed", "from", d.ifname, "to", attrs.Name)
		d.ifname = attrs.Name
	case u.Header.Type == unix.RTM_NEWLINK && d.ifindex == 0 && attrs.Name == d.s.Interface:
		d.reattach(u.Link)
	}
}

// Refresh looks for a missing interface by name (a missed RTM_NEWLINK).
func (d *hostDatapath) Refresh() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ifindex == 0 {
		if l, err := d.ns.nl.LinkByName(d.s.Interface); err == nil {
			d.reattach(l)
		}
	}
}

// reattach attaches to a recreated interface and re-applies its MAC and
// promiscuity. Called with d.mu held.
func (d *hostDatapath) reattach(l netlink.Link) {
	ifindex := l.Attrs().Index
	att, err := attachXDP(d.ns, d.pinDir, ifindex, d.dp.Program(), d.s.XDPMode)
	if err != nil {
		d.message = fmt.Sprintf("re-attach to %s (ifindex %d): %v", l.Attrs().Name, ifindex, err)
		d.log.Error("re-attach", "ifindex", ifindex, "error", err)
		return
	}
	d.att, d.ifindex, d.ifname = att, ifindex, l.Attrs().Name
	if mac := l.Attrs().HardwareAddr; len(mac) == 6 {
		if err := d.dp.SetInterfaceMAC(mac); err != nil {
			d.log.Error("set interface mac", "error", err)
		}
	}
	if d.s.Promiscuous {
		if err := d.promisc.ensure(ifindex); err != nil {
			d.log.Error("promiscuous mode", "error", err)
		}
	}
	d.message = att.reason
	d.log.Info("re-attached", "ifindex", ifindex, "xdpMode", att.mode)
}

// Reconfigure moves the datapath from the settings in force to s.
func (d *hostDatapath) Reconfigure(s kernel.Settings, t kernel.Tables) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev := d.s
	d.s = s
	if s.MaxTrackedSources != prev.MaxTrackedSources {
		if err := d.rebuild(t); err != nil {
			d.s = prev
			return err
		}
	}
	if err := d.dp.SetSampleRate(s.FlowSampling); err != nil {
		return err
	}
	if _, _, err := d.dp.SyncTables(t); err != nil {
		return err
	}
	if s.XDPMode != prev.XDPMode && d.att != nil {
		if err := d.att.detach(); err != nil {
			return err
		}
		att, err := attachXDP(d.ns, d.pinDir, d.ifindex, d.dp.Program(), s.XDPMode)
		if err != nil {
			d.att = nil
			d.message = err.Error()
			return err
		}
		d.att, d.message = att, att.reason
	}
	if err := d.dp.SetPromiscuous(s.Promiscuous); err != nil {
		return err
	}
	if s.Promiscuous != prev.Promiscuous && d.ifindex != 0 {
		if s.Promiscuous {
			return d.promisc.ensure(d.ifindex)
		}
		return d.promisc.restore(d.ifindex)
	}
	return nil
}

// rebuild replaces the talker map by one of the configured capacity: a new
// program adopts the other pinned maps (rules and counters continue) and
// gets the tracked sources copied over, then takes over the link
// atomically, then its talker map replaces the old pin. Called with d.mu
// held.
func (d *hostDatapath) rebuild(t kernel.Tables) error {
	cfg := d.dp.Config()
	cfg.MaxTrackedSources = d.s.MaxTrackedSources
	dp, err := bpf.Load(cfg)
	if err != nil {
		return err
	}
	l, err := d.ns.nl.LinkByIndex(d.ifindex)
	if err == nil {
		err = d.configure(dp, l, t)
	}
	if err == nil && d.att != nil {
		err = d.att.link.Update(dp.Program())
	}
	if err == nil {
		err = dp.Pin(d.pinDir)
	}
	if err != nil {
		dp.Close()
		return fmt.Errorf("rebuild maps for %d sources: %w", d.s.MaxTrackedSources, err)
	}
	old := d.dp
	d.dp = dp
	samples, serr := ringbuf.NewReader(dp.SamplesMap())
	if serr == nil {
		d.samples.Close()
		d.samples = samples
		d.wg.Add(1)
		go d.readSamples(samples)
	}
	old.Close()
	d.log.Info("maps rebuilt", "maxTrackedSources", d.s.MaxTrackedSources)
	return nil
}

// Close stops following the interface and releases the datapath.
func (d *hostDatapath) Close(cleanup bool) error {
	close(d.stop)
	d.mu.Lock()
	d.samples.Close()
	d.mu.Unlock()
	d.wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	if cleanup {
		if d.ifindex != 0 {
			err = errors.Join(err, d.promisc.restore(d.ifindex))
		}
		if d.att != nil {
			err = errors.Join(err, d.att.detach())
		}
		err = errors.Join(err, d.promisc.close(true), d.dp.Unpin(), d.dp.Close())
		if rmErr := os.Remove(d.pinDir); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("remove pin directory: %w", rmErr))
		}
		if rmErr := os.Remove(d.k.PinRoot); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) && !errors.Is(rmErr, syscall.ENOTEMPTY) {
			err = errors.Join(err, fmt.Errorf("remove pin root: %w", rmErr))
		}
	} else {
		if d.att != nil {
			err = errors.Join(err, d.att.link.Close())
		}
		err = errors.Join(err, d.promisc.close(false), d.dp.Close())
	}
	d.ns.close()
	d.lock.Close()
	return err
}

// bpfDatapath is the bpf.Datapath below a Manager on the host kernel, for
// the package's benchmarks and tests that run frames through the program.
// Nil for another Kernel.
func (m *Manager) bpfDatapath() *bpf.Datapath {
	if d, ok := m.dp.(*hostDatapath); ok {
		return d.dp
	}
	return nil
}
