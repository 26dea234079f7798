package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPBlockSpec is what to drop, where and until when.
type IPBlockSpec struct {
	// cidrs are the IPv4/IPv6 CIDRs or bare addresses to block (1 to 1024
	// entries). Addresses that are protected (the node's own addresses, its
	// default gateway, the API server endpoints and the monitors'
	// protectedCIDRs) are never dropped and are listed in
	// status.exemptedAddresses.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=49
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || isIP(self)",message="must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form"
	// +kubebuilder:validation:items:XValidation:rule="!isCIDR(self) || cidr(self).masked() == cidr(self)",message="must have no bits set after the prefix length (10.0.0.0/8, not 10.0.0.1/8): blocking a whole network by a typo is not what was meant"
	CIDRs []string `json:"cidrs"`

	// direction is which address of a packet is matched: Source, Destination or Both.
	// +optional
	// +kubebuilder:default=Source
	Direction Direction `json:"direction,omitempty"`

	// mode is Enforce (drop matching packets) or Audit (count them as
	// would-be drops and pass them).
	// +optional
	// +kubebuilder:default=Enforce
	Mode BlockMode `json:"mode,omitempty"`

	// nodeSelector restricts the block to some of the monitored nodes. Unset
	// or empty applies it on every node that a LanMonitor runs on.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// expiresAt lifts the block at this time: it is removed from every node
	// and marked Expired. Unset means never.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// reason is free text saying why the block exists (at most 256 characters).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Reason string `json:"reason,omitempty"`
}

// BlockNodeCounts counts the nodes of an IPBlock.
type BlockNodeCounts struct {
	// desired is the number of monitored nodes the block applies to.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Desired int32 `json:"desired,omitempty"`

	// enforced is the number of desired nodes whose agent reports the block's
	// current generation applied.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Enforced int32 `json:"enforced,omitempty"`
}

// BlockDisplay holds display-only renderings for `kubectl get`. Programs
// should read the structured fields instead.
type BlockDisplay struct {
	// cidrs is the first CIDR, followed by "+N" when there are more. Display only.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	CIDRs string `json:"cidrs,omitempty"`

	// nodes is "enforced/desired", e.g. "2/3". Display only.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Nodes string `json:"nodes,omitempty"`
}

// IPBlockStatus is the cluster-wide rollup of the node reports for one
// block. Its size is bounded whatever the number of nodes.
type IPBlockStatus struct {
	// conditions are Enforced, PartiallyEnforced and Expired.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the metadata.generation this status was computed from.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ruleID is deprecated: lanmonitor 0.2 controllers kept the block's
	// rule number here, and list in LanMonitorNode spec.ipBlocks only the
	// blocks that have one. Since 0.3 each agent keeps its own rule IDs
	// (LanMonitorNode status.ipBlocks[].ruleID) and nothing reads or
	// writes this field; the schema keeps it so that a 0.2 controller still
	// running during an upgrade to 0.3 does not see its IDs pruned and
	// stop listing the blocks for its 0.2 agents.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	RuleID int32 `json:"ruleID,omitempty"`

	// nodes counts the desired nodes and those that applied the current generation.
	// +optional
	Nodes BlockNodeCounts `json:"nodes,omitzero"`

	// matchedPackets sums, over the nodes, the packets that matched the
	// block, in packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MatchedPackets int64 `json:"matchedPackets,omitempty"`

	// droppedPackets sums, over the nodes, the packets the block dropped, in
	// packets (0 in Audit mode).
	// +optional
	// +kubebuilder:validation:Minimum=0
	DroppedPackets int64 `json:"droppedPackets,omitempty"`

	// exemptedAddresses are the protected addresses and CIDRs that the block
	// covers and that are therefore not blocked (the overlap of each protected
	// entry with the block's CIDRs), sorted; at most 100 are listed.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=49
	ExemptedAddresses []string `json:"exemptedAddresses,omitempty"`

	// display holds display-only renderings for `kubectl get`.
	// +optional
	Display BlockDisplay `json:"display,omitzero"`
}

// IPBlock drops (or, in Audit mode, counts) packets from or to a set of
// addresses on the monitored interfaces.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipb;ipbs,categories=lanmonitoring
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="CIDRs",type=string,JSONPath=`.status.display.cidrs`,description="Blocked CIDRs"
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.display.nodes`,description="Enforced/desired nodes"
// +kubebuilder:printcolumn:name="Dropped",type=integer,JSONPath=`.status.droppedPackets`,description="Dropped packets"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPBlock struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what to drop.
	// +required
	Spec IPBlockSpec `json:"spec"`

	// status is the rollup of the node reports, written by the controller.
	// +optional
	Status IPBlockStatus `json:"status,omitzero"`
}

// IPBlockList is a list of IPBlock.
//
// +kubebuilder:object:root=true
type IPBlockList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPBlock `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPBlock{}, &IPBlockList{})
}
