package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeInterfaceSpec is the configuration of one LanMonitor resolved for one
// node. Written by the controller only.
type NodeInterfaceSpec struct {
	// monitor is the name of the LanMonitor this entry comes from.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Monitor string `json:"monitor"`

	// interface is the Linux interface name; empty means the interface of the
	// node's default route.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`
	Interface string `json:"interface,omitempty"`

	// promiscuous puts the interface into promiscuous mode.
	// +required
	Promiscuous bool `json:"promiscuous"`

	// xdpMode is how the XDP program is attached.
	// +required
	XDPMode XDPMode `json:"xdpMode"`

	// internalCIDRs are the CIDRs counted as internal; empty means the
	// interface's connected subnets, resolved by the agent.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=49
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || isIP(self)",message="must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form"
	InternalCIDRs []string `json:"internalCIDRs,omitempty"`

	// topN is how many top talkers the node reports.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	TopN int32 `json:"topN"`

	// reportInterval is how often the agent reads and reports counters.
	// +required
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:MaxLength=32
	ReportInterval metav1.Duration `json:"reportInterval"`

	// maxTrackedSources is the capacity of the source table, in entries.
	// +required
	// +kubebuilder:validation:Minimum=16
	// +kubebuilder:validation:Maximum=16777216
	MaxTrackedSources int32 `json:"maxTrackedSources"`

	// protectedCIDRs are never dropped: the monitor's protectedCIDRs plus the
	// API server endpoints the controller found. The agent adds the node's own
	// addresses and its default gateway itself.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=512
	// +kubebuilder:validation:items:MaxLength=49
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || isIP(self)",message="must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form"
	ProtectedCIDRs []string `json:"protectedCIDRs,omitempty"`

	// flowSampling logs one packet in flowSampling; 0 is off.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	FlowSampling int32 `json:"flowSampling,omitempty"`
}

// NodeIPBlockRef names an IPBlock that applied to the node, as lanmonitor
// 0.2 controllers wrote it (see LanMonitorNodeSpec.IPBlocks).
type NodeIPBlockRef struct {
	// name is the IPBlock's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// ruleID was the IPBlock's rule ID, assigned by the 0.2 controller.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	RuleID int32 `json:"ruleID"`

	// generation is the IPBlock's metadata.generation to apply.
	// +required
	// +kubebuilder:validation:Minimum=1
	Generation int64 `json:"generation"`
}

// LanMonitorNodeSpec is the desired configuration of one node. Written by the
// controller only.
type LanMonitorNodeSpec struct {
	// interfaces holds one entry per LanMonitor that runs on this node.
	// +optional
	// +listType=map
	// +listMapKey=monitor
	// +kubebuilder:validation:MaxItems=32
	Interfaces []NodeInterfaceSpec `json:"interfaces,omitempty"`

	// ipBlocks is deprecated: lanmonitor 0.2 controllers listed here the
	// IPBlocks of the node, and 0.2 agents enforce what it lists. Agents
	// since 0.3 watch the IPBlocks and their Node themselves and ignore
	// it. The controller leaves it as it was written until the node's
	// agent reports status.agentVersion, so that blocking holds through an
	// upgrade, then removes it.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=4096
	IPBlocks []NodeIPBlockRef `json:"ipBlocks,omitempty"`
}

// NodeInterfaceStatus is the report of one monitored interface. Written by
// the node's agent only.
type NodeInterfaceStatus struct {
	// monitor is the name of the LanMonitor this entry reports on.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Monitor string `json:"monitor"`

	// interface is the resolved interface name.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	Interface string `json:"interface,omitempty"`

	// ifindex is the interface index the program is attached to.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Ifindex int32 `json:"ifindex,omitempty"`

	// attached is true when the XDP program is attached to the interface.
	// +optional
	Attached bool `json:"attached,omitempty"`

	// xdpMode is the attach mode in use (Native or Generic).
	// +optional
	XDPMode XDPMode `json:"xdpMode,omitempty"`

	// xdpModeReason says why that mode is in use, e.g. why Auto fell back to Generic.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	XDPModeReason string `json:"xdpModeReason,omitempty"`

	// promiscuous is true when the interface is in promiscuous mode.
	// +optional
	Promiscuous bool `json:"promiscuous,omitempty"`

	// topTalkers are the node's top topN source addresses, highest
	// bitsPerSecond first (then bytes); node is omitted.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	TopTalkers []Talker `json:"topTalkers,omitempty"`

	// totals are the interface's cumulative counters.
	// +optional
	Totals TrafficTotals `json:"totals,omitzero"`

	// trackedSources is the number of source addresses in the table, in entries.
	// +optional
	// +kubebuilder:validation:Minimum=0
	TrackedSources int64 `json:"trackedSources,omitempty"`

	// trackedSourcesCapacity is the capacity of the table, in entries.
	// +optional
	// +kubebuilder:validation:Minimum=0
	TrackedSourcesCapacity int64 `json:"trackedSourcesCapacity,omitempty"`

	// bitsPerSecond is the interface's rate over the last interval, in bits per second.
	// +optional
	// +kubebuilder:validation:Minimum=0
	BitsPerSecond int64 `json:"bitsPerSecond,omitempty"`

	// packetsPerSecond is the interface's rate over the last interval, in
	// packets per second.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PacketsPerSecond int64 `json:"packetsPerSecond,omitempty"`

	// rate is bitsPerSecond in human-readable form (FormatBitRate), e.g.
	// "12.3 Mbit/s". Display only.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Rate string `json:"rate,omitempty"`

	// conditions are the agent's conditions for this interface.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeIPBlockStatus is the node's report on one IPBlock. Written by the
// node's agent only.
type NodeIPBlockStatus struct {
	// name is the IPBlock's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// ruleID is the rule ID the agent gave the block on this node: the
	// counters in its maps are kept under it. Each agent keeps its own
	// (an agent that restarts takes them back from this status).
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	RuleID int32 `json:"ruleID"`

	// generation is the IPBlock generation applied to the datapath.
	// +required
	// +kubebuilder:validation:Minimum=1
	Generation int64 `json:"generation"`

	// matchedPackets is the number of packets that matched the block on this
	// node, in packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MatchedPackets int64 `json:"matchedPackets,omitempty"`

	// droppedPackets is the number of packets the block dropped on this node,
	// in packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	DroppedPackets int64 `json:"droppedPackets,omitempty"`

	// exemptedAddresses are the protected addresses of this node that the
	// block covers and that are not blocked.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=49
	ExemptedAddresses []string `json:"exemptedAddresses,omitempty"`
}

// LanMonitorNodeStatus is the report of one node. Written by the node's
// agent only.
type LanMonitorNodeStatus struct {
	// observedGeneration is the metadata.generation of the spec the agent applied.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions are the agent's node-level conditions.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// interfaces holds one entry per spec.interfaces entry.
	// +optional
	// +listType=map
	// +listMapKey=monitor
	// +kubebuilder:validation:MaxItems=32
	Interfaces []NodeInterfaceStatus `json:"interfaces,omitempty"`

	// ipBlocks holds one entry per applied IPBlock.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=4096
	IPBlocks []NodeIPBlockStatus `json:"ipBlocks,omitempty"`

	// ipBlocksOverCapacity names the IPBlocks that apply to the node but
	// that its agent leaves out: more apply than its datapath holds rules
	// (the agent's --max-rules, and at most 4096), and these are the
	// newest (creationTimestamp, then name). Sorted; at most 256 are listed.
	// The IPBlock controller reports them with reason TooManyIPBlocks.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=253
	IPBlocksOverCapacity []string `json:"ipBlocksOverCapacity,omitempty"`

	// lastReportTime is when the agent last read the counters it reports.
	// +optional
	LastReportTime *metav1.Time `json:"lastReportTime,omitempty"`

	// agentVersion is the version of the agent that wrote this status
	// (lanmonitor 0.3 and later).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AgentVersion string `json:"agentVersion,omitempty"`
}

// LanMonitorNode is one node's resolved configuration (spec, written by the
// controller) and report (status, written by that node's agent). It is named
// after the node and owned by every LanMonitor that selects the node.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=lmn;lmns,categories=lanmonitoring
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Interface",type=string,JSONPath=`.status.interfaces[0].interface`,description="First monitored interface"
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.status.interfaces[0].xdpMode`,description="XDP mode in use"
// +kubebuilder:printcolumn:name="Attached",type=boolean,JSONPath=`.status.interfaces[0].attached`
// +kubebuilder:printcolumn:name="Rate",type=string,JSONPath=`.status.interfaces[0].rate`
// +kubebuilder:printcolumn:name="Top Talker",type=string,JSONPath=`.status.interfaces[0].topTalkers[0].address`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LanMonitorNode struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the node's desired configuration, written by the controller.
	// +optional
	Spec LanMonitorNodeSpec `json:"spec,omitzero"`

	// status is the node's report, written by its agent.
	// +optional
	Status LanMonitorNodeStatus `json:"status,omitzero"`
}

// LanMonitorNodeList is a list of LanMonitorNode.
//
// +kubebuilder:object:root=true
type LanMonitorNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LanMonitorNode `json:"items"`
}

func init() {
	SchemeBuilder.Register(&LanMonitorNode{}, &LanMonitorNodeList{})
}
