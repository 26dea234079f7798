package v1alpha1

import "time"

// Condition types and reasons. Reasons are CamelCase, as the Kubernetes API
// conventions ask.
const (
	// ConditionReady (LanMonitor) is True when every node the monitor is
	// desired on reports its interface attached.
	ConditionReady = "Ready"
	// ConditionDegraded (LanMonitor) is True when the monitor cannot run as
	// asked on some node: an interface conflict or an interface that is not
	// attached.
	ConditionDegraded = "Degraded"

	// ConditionEnforced (IPBlock) is True when every node the block applies to
	// reports the block's current generation applied.
	ConditionEnforced = "Enforced"
	// ConditionPartiallyEnforced (IPBlock) is True when some, but not all, of
	// those nodes report the current generation applied.
	ConditionPartiallyEnforced = "PartiallyEnforced"
	// ConditionExpired (IPBlock) is True once spec.expiresAt has passed and
	// the block has been lifted.
	ConditionExpired = "Expired"
)

const (
	// ReasonAllNodesReady (Ready=True): every desired node is attached.
	ReasonAllNodesReady = "AllNodesReady"
	// ReasonNodesNotReady (Ready=False): some desired nodes are not attached yet.
	ReasonNodesNotReady = "NodesNotReady"
	// ReasonNoMatchingNodes (Ready=False, Enforced=False): no node is selected.
	ReasonNoMatchingNodes = "NoMatchingNodes"
	// ReasonInterfaceConflict (Degraded=True, and Ready=False when it lost on
	// every node): an older LanMonitor monitors the same interface on some node.
	ReasonInterfaceConflict = "InterfaceConflict"
	// ReasonNotAttached (Degraded=True): some nodes report the interface not attached.
	ReasonNotAttached = "NotAttached"
	// ReasonAsExpected (Degraded=False): nothing is wrong.
	ReasonAsExpected = "AsExpected"
	// ReasonInvalidNodeSelector (Ready=False and Degraded=True, or
	// Enforced=False): spec.nodeSelector does not parse, so no node is selected.
	ReasonInvalidNodeSelector = "InvalidNodeSelector"

	// ReasonEnforced (Enforced=True): every node applied the current generation.
	ReasonEnforced = "Enforced"
	// ReasonApplying (Enforced=False or PartiallyEnforced=True): nodes are
	// still applying the current generation.
	ReasonApplying = "Applying"
	// ReasonNotApplied (PartiallyEnforced=False): no node applied the current
	// generation yet.
	ReasonNotApplied = "NotApplied"
	// ReasonExpired (Expired=True, Enforced=False): spec.expiresAt has
	// passed, and no node reports the block any more.
	ReasonExpired = "Expired"
	// ReasonLifting (Expired=True): spec.expiresAt has passed; some nodes
	// still report the block (their agents lift it at the same wall time,
	// or on seeing Expired=True).
	ReasonLifting = "Lifting"
	// ReasonNotExpired (Expired=False): spec.expiresAt is unset or in the future.
	ReasonNotExpired = "NotExpired"
	// ReasonTooManyIPBlocks (Enforced=False): some nodes apply more IPBlocks
	// than their datapath holds rules, and leave this one, among the newest,
	// out (LanMonitorNode status.ipBlocksOverCapacity).
	ReasonTooManyIPBlocks = "TooManyIPBlocks"
)

const (
	// MaxRuleID is the largest rule ID. Rule IDs index a per-CPU array in the
	// datapath, which has MaxRuleID+1 slots; slot 0 means "no rule".
	MaxRuleID = 65535
	// MaxTopN is the largest topN, and the bound of every top-talker list.
	MaxTopN = 100
	// MaxNodeInterfaces bounds LanMonitorNode spec.interfaces and status.interfaces.
	MaxNodeInterfaces = 32
	// MaxNodeIPBlocks bounds LanMonitorNode spec.ipBlocks and status.ipBlocks.
	MaxNodeIPBlocks = 4096
	// MaxNodeIPBlocksOverCapacity bounds LanMonitorNode
	// status.ipBlocksOverCapacity.
	MaxNodeIPBlocksOverCapacity = 256
	// MaxExemptedAddresses bounds IPBlock status.exemptedAddresses.
	MaxExemptedAddresses = 100
	// MaxNodeProtectedCIDRs bounds NodeInterfaceSpec protectedCIDRs: the
	// monitor's (at most 256) plus the API server endpoints.
	MaxNodeProtectedCIDRs = 512
)

// Defaults of LanMonitorSpec, as applied by the API server (the
// +kubebuilder:default markers carry the same values).
const (
	DefaultTopN              = 10
	DefaultReportInterval    = 10 * time.Second
	DefaultMaxTrackedSources = 65536
)
