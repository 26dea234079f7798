// Package agent is lanmonitor's node agent: one datapath Manager per
// interface loads the XDP program (package bpf), attaches it through a pinned
// bpf_link, keeps the interface promiscuous while it runs, follows the
// interface through netlink, syncs the blocklist by diff, and turns the
// per-CPU counters into reports with rates and top talkers. The reports feed
// the local JSON API and Prometheus metrics (standalone mode) and the
// LanMonitorNode status (Kubernetes mode).
package agent

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/bpf"
)

// The attach modes, directions and block modes are the API's
// (v1alpha1.XDPMode, v1alpha1.Direction, v1alpha1.BlockMode): standalone
// files and LanMonitorNode specs carry them as they are.
const (
	XDPModeAuto    = v1alpha1.XDPModeAuto
	XDPModeNative  = v1alpha1.XDPModeNative
	XDPModeGeneric = v1alpha1.XDPModeGeneric

	DirectionSource      = v1alpha1.DirectionSource
	DirectionDestination = v1alpha1.DirectionDestination
	DirectionBoth        = v1alpha1.DirectionBoth

	BlockModeEnforce = v1alpha1.BlockModeEnforce
	BlockModeAudit   = v1alpha1.BlockModeAudit
)

// XDPMode, Direction and BlockMode are the API's types.
type (
	XDPMode   = v1alpha1.XDPMode
	Direction = v1alpha1.Direction
	BlockMode = v1alpha1.BlockMode
)

// Block is one IPBlock as the datapath applies it.
type Block struct {
	// Name identifies the block (the IPBlock's name).
	Name string
	// RuleID keys the per-rule counters: from 1, unique among the blocks
	// of a Config.
	RuleID uint32
	// Generation is the IPBlock's metadata.generation, reported back as
	// applied once the block is in the maps.
	Generation int64
	Direction  Direction
	Mode       BlockMode
	// CIDRs are the prefixes to match; a bare address is a /32 or /128.
	CIDRs []netip.Prefix
}

// Config is the desired state of one interface.
type Config struct {
	// Interface is the Linux interface name.
	Interface string
	// XDPMode defaults to Auto.
	XDPMode XDPMode
	// Promiscuous asks for promiscuous mode while the program is attached.
	Promiscuous bool
	// InternalCIDRs mark talkers as internal; empty means the interface's
	// own connected subnets.
	InternalCIDRs []netip.Prefix
	// TopN is the number of talkers in reports and metrics (1..100).
	TopN int
	// ReportInterval is how often counters are read and rates computed.
	ReportInterval time.Duration
	// MaxTrackedSources is the talker map's capacity.
	MaxTrackedSources uint32
	// ProtectedCIDRs are never dropped (lockout guard), on top of the
	// node's own addresses and default gateways, which the agent adds.
	ProtectedCIDRs []netip.Prefix
	// FlowSampling logs 1 in N packets; 0 turns sampling off.
	FlowSampling uint32
	// Blocks are the blocklist.
	Blocks []Block
}

// Defaults of the API (LanMonitor spec), applied by WithDefaults.
const (
	DefaultTopN           = 10
	DefaultReportInterval = 10 * time.Second
)

// WithDefaults returns c with zero fields set to the API's defaults.
func (c Config) WithDefaults() Config {
	if c.XDPMode == "" {
		c.XDPMode = XDPModeAuto
	}
	if c.TopN == 0 {
		c.TopN = DefaultTopN
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = DefaultReportInterval
	}
	if c.MaxTrackedSources == 0 {
		c.MaxTrackedSources = bpf.DefaultMaxTrackedSources
	}
	return c
}

// Validate checks what the datapath relies on: an interface name, known
// modes and directions, rule IDs unique and from 1, at most maxRules blocks,
// valid prefixes. It returns the first problem, naming the field.
func (c Config) Validate(maxRules uint32) error {
	if c.Interface == "" {
		return fmt.Errorf("interface: must be set")
	}
	switch c.XDPMode {
	case XDPModeAuto, XDPModeNative, XDPModeGeneric:
	default:
		return fmt.Errorf("xdpMode: unknown mode %q (want Auto, Native or Generic)", c.XDPMode)
	}
	if c.TopN < 1 || c.TopN > 100 {
		return fmt.Errorf("topN: %d not in 1..100", c.TopN)
	}
	if c.ReportInterval < time.Second {
		return fmt.Errorf("reportInterval: %s is under 1s", c.ReportInterval)
	}
	if len(c.Blocks) > int(maxRules) {
		return fmt.Errorf("blocks: %d, more than the %d rules the datapath holds (--max-rules)", len(c.Blocks), maxRules)
	}
	ids := map[uint32]string{}
	for _, b := range c.Blocks {
		if b.RuleID == 0 {
			return fmt.Errorf("block %q: rule ID 0 is reserved", b.Name)
		}
		if other, dup := ids[b.RuleID]; dup {
			return fmt.Errorf("block %q: rule ID %d already used by block %q", b.Name, b.RuleID, other)
		}
		ids[b.RuleID] = b.Name
		switch b.Direction {
		case DirectionSource, DirectionDestination, DirectionBoth:
		default:
			return fmt.Errorf("block %q: direction: unknown %q", b.Name, b.Direction)
		}
		switch b.Mode {
		case BlockModeEnforce, BlockModeAudit:
		default:
			return fmt.Errorf("block %q: mode: unknown %q", b.Name, b.Mode)
		}
		for i, p := range b.CIDRs {
			if !p.IsValid() {
				return fmt.Errorf("block %q: cidrs[%d]: invalid prefix", b.Name, i)
			}
		}
	}
	return nil
}
