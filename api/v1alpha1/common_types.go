package v1alpha1

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// NodeSelector parses a LanMonitor's or IPBlock's spec.nodeSelector: nil
// and empty select every node. Errors: the selector does not parse (an
// unknown operator, an invalid label value), as
// metav1.LabelSelectorAsSelector reports them.
func NodeSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

// XDPMode selects how the XDP program is attached to an interface.
//
// +kubebuilder:validation:Enum=Auto;Native;Generic
type XDPMode string

const (
	// XDPModeAuto attaches in native (driver) mode and falls back to generic
	// (SKB) mode when the driver does not support XDP; the reason is reported.
	XDPModeAuto XDPMode = "Auto"
	// XDPModeNative attaches in native (driver) mode only.
	XDPModeNative XDPMode = "Native"
	// XDPModeGeneric attaches in generic (SKB) mode, which works on every driver.
	XDPModeGeneric XDPMode = "Generic"
)

// Direction selects which address of a packet an IPBlock matches.
//
// +kubebuilder:validation:Enum=Source;Destination;Both
type Direction string

const (
	// DirectionSource matches the source address.
	DirectionSource Direction = "Source"
	// DirectionDestination matches the destination address.
	DirectionDestination Direction = "Destination"
	// DirectionBoth matches either address.
	DirectionBoth Direction = "Both"
)

// BlockMode selects what an IPBlock does with a matching packet.
//
// +kubebuilder:validation:Enum=Enforce;Audit
type BlockMode string

const (
	// BlockModeEnforce drops matching packets.
	BlockModeEnforce BlockMode = "Enforce"
	// BlockModeAudit counts matching packets as would-be drops and passes them.
	BlockModeAudit BlockMode = "Audit"
)

// Talker is one source address and the traffic it sent.
type Talker struct {
	// address is the source IPv4 or IPv6 address.
	// +required
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=45
	Address string `json:"address"`

	// internal is true when the address is inside the monitor's internalCIDRs.
	// +optional
	Internal bool `json:"internal,omitempty"`

	// packets is the number of packets sent by the address since the counters
	// started, in packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Packets int64 `json:"packets,omitempty"`

	// bytes is the number of bytes sent by the address since the counters
	// started, in bytes (frame length as XDP sees it).
	// +optional
	// +kubebuilder:validation:Minimum=0
	Bytes int64 `json:"bytes,omitempty"`

	// bitsPerSecond is the address's rate over the last report interval, in
	// bits per second.
	// +optional
	// +kubebuilder:validation:Minimum=0
	BitsPerSecond int64 `json:"bitsPerSecond,omitempty"`

	// packetsPerSecond is the address's rate over the last report interval, in
	// packets per second.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PacketsPerSecond int64 `json:"packetsPerSecond,omitempty"`

	// node is the node whose counts this entry carries: in a LanMonitor, the
	// node that saw the address most. It is omitted in LanMonitorNode status.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node,omitempty"`
}

// TrafficTotals are cumulative counters of what the XDP hooks saw.
type TrafficTotals struct {
	// packets is the number of frames seen, in packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Packets int64 `json:"packets,omitempty"`

	// bytes is the number of bytes seen (frame lengths as XDP sees them), in bytes.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Bytes int64 `json:"bytes,omitempty"`

	// dropped is the number of frames dropped by IPBlocks in Enforce mode, in packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Dropped int64 `json:"dropped,omitempty"`

	// malformed is the number of frames that did not parse (passed), in packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Malformed int64 `json:"malformed,omitempty"`

	// nonIP is the number of frames that carried neither IPv4 nor IPv6 (passed),
	// in packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	NonIP int64 `json:"nonIP,omitempty"`

	// local is the number of frames addressed to the interface itself, to
	// broadcast or to multicast, in packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Local int64 `json:"local,omitempty"`

	// snooped is the number of frames addressed to other hosts and seen only
	// because the interface is promiscuous, in packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Snooped int64 `json:"snooped,omitempty"`
}

// Add adds o to t field by field.
func (t *TrafficTotals) Add(o TrafficTotals) {
	t.Packets += o.Packets
	t.Bytes += o.Bytes
	t.Dropped += o.Dropped
	t.Malformed += o.Malformed
	t.NonIP += o.NonIP
	t.Local += o.Local
	t.Snooped += o.Snooped
}

// FormatBitRate renders a rate in bits per second for display, with SI
// prefixes and one decimal: 0 -> "0 bit/s", 999 -> "999 bit/s",
// 12345678 -> "12.3 Mbit/s".
func FormatBitRate(bitsPerSecond int64) string {
	if bitsPerSecond < 1000 {
		return fmt.Sprintf("%d bit/s", bitsPerSecond)
	}
	v := float64(bitsPerSecond) / 1000
	prefixes := "kMGTPE"
	i := 0
	// Compare with 999.95 rather than 1000 so that a value that %.1f would
	// round up to 1000.0 moves to the next prefix.
	for v >= 999.95 && i < len(prefixes)-1 {
		v /= 1000
		i++
	}
	return fmt.Sprintf("%.1f %cbit/s", v, prefixes[i])
}
