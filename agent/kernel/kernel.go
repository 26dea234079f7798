// Package kernel is the seam between the agent's logic and the kernel.
//
// The agent's logic (agent.Manager's reports, rates and top talkers, the
// rule tables it builds, the JSON API, metrics, the dashboard stream and the
// Kubernetes node agent) reaches the datapath of an interface only through
// a Datapath, opened by a Kernel. The real Kernel (agent.HostKernel) loads
// the XDP program of package bpf, pins its maps on bpffs, attaches it
// through a pinned bpf_link, sets promiscuity and follows the interface
// through netlink; it is tested for real, as root. Package kernel/fake is a
// Kernel in memory: the same logic runs on it without root, in unit tests,
// in the controller's tests and in the control-plane benchmark.
package kernel

import (
	"log/slog"
	"net/netip"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/bpf"
)

// Tables are the rule tables as the datapath enforces them: for each table
// (source, destination, protected), each prefix (masked; IPv4 as IPv4) and
// its rule.
type Tables = map[bpf.Table]map[netip.Prefix]bpf.Rule

// Settings are what a Datapath is opened or reconfigured with: the parts of
// an interface's configuration that live below the agent's logic.
type Settings struct {
	// Interface is the Linux interface name, as configured.
	Interface string
	// XDPMode is the attach mode asked for: Auto, Native or Generic.
	XDPMode v1alpha1.XDPMode
	// Promiscuous asks for IFF_PROMISC while attached (restored after).
	Promiscuous bool
	// FlowSampling logs 1 frame in N; 0 is off.
	FlowSampling uint32
	// MaxTrackedSources is the talker map's capacity (sources).
	MaxTrackedSources uint32
}

// Addresses are the network namespace's own addresses as the lockout guard
// and the internal/external split need them. IPv4-mapped IPv6 addresses are
// given as IPv4.
type Addresses struct {
	// Local is every address of every interface of the namespace.
	Local []netip.Addr
	// Gateways are the next hops of the default routes (IPv4 and IPv6).
	Gateways []netip.Addr
	// Connected are the monitored interface's own subnets (masked), empty
	// while it is gone.
	Connected []netip.Prefix
}

// Link is the monitored interface as the kernel shows it now.
type Link struct {
	// Name is the current name (the interface may have been renamed since
	// it was configured).
	Name string
	// Ifindex is 0 while the interface is gone.
	Ifindex int
	// Attached: the program runs on the interface.
	Attached bool
	// Message says why the program is not attached, or, when it is, why
	// in this mode (XDPModeReason).
	Message string
	// XDPMode is the mode the kernel reports in use ("" when not
	// attached), XDPModeReason why (Auto: native refused, fell back).
	XDPMode       v1alpha1.XDPMode
	XDPModeReason string
	// ProgramID is the attached XDP program's ID (0: none).
	ProgramID uint32
	// Promiscuous: IFF_PROMISC is set (the flag, as `ip link set promisc`
	// sets it, not the counter packet sockets raise).
	Promiscuous bool
}

// Kernel opens the datapath of an interface.
type Kernel interface {
	// CheckPrivileges returns an error naming what the process lacks to
	// open a Datapath (capabilities), before anything is changed.
	CheckPrivileges() error
	// DefaultRouteInterface names the interface of the default route
	// (IPv4 first, then IPv6). Errors: no default route.
	DefaultRouteInterface() (string, error)
	// Open takes over s.Interface: it loads (or adopts) the datapath,
	// fills the rule tables with tables(addresses) before the program
	// sees a frame, attaches the program and sets promiscuity. From then
	// on the Datapath follows the interface (deleted, recreated, renamed)
	// by itself. Flow samples are logged to log.
	// Errors: the interface does not exist, missing privileges, another
	// XDP program on the interface (wraps agent.ErrBusy), another agent
	// holds the interface; on error nothing Open created is left.
	Open(s Settings, tables func(Addresses) Tables, log *slog.Logger) (Datapath, error)
}

// Datapath is lanmonitor's program on one interface. Its methods are not
// safe for concurrent use: the Manager calls them under its lock.
type Datapath interface {
	// Stats reads the global counters, summed over CPUs.
	Stats() (bpf.Stats, error)
	// Talkers reads every tracked source: one entry per source address,
	// counters summed over CPUs, in no particular order.
	Talkers() ([]bpf.Talker, error)
	// RuleCounters reads the per-rule counters, by rule ID.
	RuleCounters() (map[uint32]bpf.RuleCounters, error)
	// Capacity is the talker map's capacity (sources).
	Capacity() int
	// SyncTables makes the rule tables equal t, writing and deleting only
	// what differs, all tables switching at one instant; it returns the
	// entries written and deleted. On error the tables in force stay.
	SyncTables(t Tables) (written, deleted int, err error)
	// Reconfigure moves the datapath to s (Interface unchanged) with the
	// rule tables t: a new capacity rebuilds the talker map (tracked
	// sources copied, the program swapped atomically), then the sampling
	// rate, the tables, a new attach mode (re-attach: for a moment no
	// program runs) and promiscuity follow.
	Reconfigure(s Settings, t Tables) error
	// Link reads the interface's state now.
	Link() Link
	// Addresses reads the namespace's addresses now.
	Addresses() Addresses
	// Refresh repairs what a missed interface event left behind (an
	// interface of the configured name that came back unseen).
	Refresh()
	// Close releases the datapath. With cleanup it detaches the program,
	// removes every pin and restores promiscuity; without, it only lets
	// go of its file descriptors and the program stays attached for the
	// next agent to adopt. Returns every error met, joined.
	Close(cleanup bool) error
}
