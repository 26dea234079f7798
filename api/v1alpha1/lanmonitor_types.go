package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LanMonitorSpec is what to watch and on which nodes.
type LanMonitorSpec struct {
	// nodeSelector selects the nodes to monitor. Unset or empty selects every node.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// interface is the Linux name of the interface to monitor on every selected
	// node (at most 15 characters). Unset means the interface of the node's
	// default route, resolved by the agent.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`
	Interface string `json:"interface,omitempty"`

	// promiscuous puts the interface into promiscuous mode, so that traffic
	// between other hosts of the LAN is seen too. The agent restores the
	// previous state when it stops.
	// +optional
	// +kubebuilder:default=true
	Promiscuous *bool `json:"promiscuous,omitempty"`

	// xdpMode is how the XDP program is attached: Auto (native, falling back to
	// generic with the reason reported), Native or Generic.
	// +optional
	// +kubebuilder:default=Auto
	XDPMode XDPMode `json:"xdpMode,omitempty"`

	// internalCIDRs are the IPv4/IPv6 CIDRs (or bare addresses) counted as
	// internal in top-talker lists. Unset means the interface's own connected
	// subnets, resolved by the agent on each node.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=49
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || isIP(self)",message="must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form"
	InternalCIDRs []string `json:"internalCIDRs,omitempty"`

	// topN is how many top talkers (by rate) each node reports and the
	// monitor's status lists.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	TopN int32 `json:"topN,omitempty"`

	// reportInterval is how often counters are read and reported, at least 1s
	// and at most 1h. Node reports and the status rollup are written at most
	// once per interval.
	// +optional
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="must be at least 1s"
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('1h')",message="must be at most 1h"
	ReportInterval *metav1.Duration `json:"reportInterval,omitempty"`

	// maxTrackedSources is the capacity of the per-node table of source
	// addresses, in entries. When it is full, new sources are not tracked
	// until the agent's next read frees the entries of the sources idle
	// longest (1/16 of the capacity at a time).
	// +optional
	// +kubebuilder:default=65536
	// +kubebuilder:validation:Minimum=16
	// +kubebuilder:validation:Maximum=16777216
	MaxTrackedSources int32 `json:"maxTrackedSources,omitempty"`

	// protectedCIDRs are IPv4/IPv6 CIDRs (or bare addresses) that are never
	// dropped, on top of the automatic ones (the node's own addresses, its
	// default gateway and the API server endpoints).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=49
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || isIP(self)",message="must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form"
	ProtectedCIDRs []string `json:"protectedCIDRs,omitempty"`

	// flowSampling logs one packet in flowSampling as a structured line
	// (addresses, ports, protocol, local or snooped, verdict); 0 turns it off.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	FlowSampling int32 `json:"flowSampling,omitempty"`
}

// MonitorNodeCounts counts the nodes of a LanMonitor.
type MonitorNodeCounts struct {
	// desired is the number of nodes the monitor runs on: the selected nodes
	// minus those where an older monitor holds the same interface.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Desired int32 `json:"desired,omitempty"`

	// ready is the number of desired nodes whose agent reports the interface attached.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Ready int32 `json:"ready,omitempty"`
}

// MonitorDisplay holds display-only renderings for `kubectl get`. Programs
// should read the structured fields instead.
type MonitorDisplay struct {
	// nodes is "ready/desired", e.g. "2/3". Display only.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Nodes string `json:"nodes,omitempty"`

	// interface is spec.interface, or the interface names the nodes resolved
	// for the default route (at most three, then "+N"). Display only.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Interface string `json:"interface,omitempty"`

	// rate is the top talker's bitsPerSecond in human-readable form, e.g.
	// "12.3 Mbit/s" (the RATE column, next to TOP TALKER). Display only.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Rate string `json:"rate,omitempty"`
}

// LanMonitorStatus is the cluster-wide rollup of the node reports. Its size
// is bounded whatever the number of nodes; per-node detail is in the
// LanMonitorNode objects.
type LanMonitorStatus struct {
	// conditions are Ready and Degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the metadata.generation this status was computed from.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// nodes counts the desired and ready nodes.
	// +optional
	Nodes MonitorNodeCounts `json:"nodes,omitzero"`

	// topTalkers is the cluster-wide top topN source addresses, highest
	// bitsPerSecond first (then bytes, then address). An address seen by
	// several nodes appears once, with the counts of the node that saw it most
	// (see the controller's rollup for why the counts are not summed).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	TopTalkers []Talker `json:"topTalkers,omitempty"`

	// totals sums the node totals of this monitor's interfaces.
	// +optional
	Totals TrafficTotals `json:"totals,omitzero"`

	// bitsPerSecond sums the nodes' rates of this monitor's interfaces, in bits per second.
	// +optional
	// +kubebuilder:validation:Minimum=0
	BitsPerSecond int64 `json:"bitsPerSecond,omitempty"`

	// packetsPerSecond sums the nodes' rates of this monitor's interfaces, in
	// packets per second.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PacketsPerSecond int64 `json:"packetsPerSecond,omitempty"`

	// display holds display-only renderings for `kubectl get`.
	// +optional
	Display MonitorDisplay `json:"display,omitzero"`
}

// LanMonitor watches the traffic of one interface on a set of nodes: top
// talkers, totals, and the interface the IPBlocks are enforced on.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=lm;lms,categories=lanmonitoring
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.display.nodes`,description="Ready/desired nodes"
// +kubebuilder:printcolumn:name="Interface",type=string,JSONPath=`.status.display.interface`,description="Monitored interface"
// +kubebuilder:printcolumn:name="Top Talker",type=string,JSONPath=`.status.topTalkers[0].address`,description="Highest-rate source address"
// +kubebuilder:printcolumn:name="Rate",type=string,JSONPath=`.status.display.rate`,description="Rate of the top talker"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LanMonitor struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what to watch.
	// +required
	Spec LanMonitorSpec `json:"spec"`

	// status is the rollup of the node reports, written by the controller.
	// +optional
	Status LanMonitorStatus `json:"status,omitzero"`
}

// LanMonitorList is a list of LanMonitor.
//
// +kubebuilder:object:root=true
type LanMonitorList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LanMonitor `json:"items"`
}

func init() {
	SchemeBuilder.Register(&LanMonitor{}, &LanMonitorList{})
}
