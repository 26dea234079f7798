package controllers

import (
	"cmp"
	"slices"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// nodeTalkers is one node's top-talker list.
type nodeTalkers struct {
	node    string
	talkers []lanmonitorv1alpha1.Talker
}

// compareTalkers orders talkers highest first: bitsPerSecond, then bytes,
// then packets, descending (the agent's own order, extended), then address
// and node ascending so that the order is total and the result stable.
func compareTalkers(a, b lanmonitorv1alpha1.Talker) int {
	if c := cmp.Compare(b.BitsPerSecond, a.BitsPerSecond); c != 0 {
		return c
	}
	if c := cmp.Compare(b.Bytes, a.Bytes); c != 0 {
		return c
	}
	if c := cmp.Compare(b.Packets, a.Packets); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Address, b.Address); c != 0 {
		return c
	}
	return cmp.Compare(a.Node, b.Node)
}

// mergeTalkers merges the nodes' top-talker lists into the cluster-wide top
// n, each address once.
//
// Merge rule: an address reported by several nodes is represented by the
// entry of the node that saw it most (the highest entry in compareTalkers
// order), with that node's packets, bytes and rates, and that node's name in
// Node. The counts are deliberately not summed across nodes:
//
//   - Promiscuous interfaces on one segment (a hub, a mirror port, a
//     flooding switch) and every broadcast or multicast frame put the same
//     frame in front of several nodes; a sum would count it once per node.
//     The maximum never counts a frame twice; it is a lower bound of the
//     address's traffic that is exact when one node sees all of it.
//   - Nodes report only their own top n. Under the maximum, merging those
//     truncated lists is exact: if an address's best entry ranks in the
//     cluster-wide top n, every entry above it on its node belongs to a
//     different address that also ranks above it cluster-wide, so fewer than
//     n do and the node reported it. A sum over truncated lists could not be
//     computed exactly (an address 11th on every node may have the largest
//     sum).
//
// All numbers of a merged entry therefore come from one node, the one named.
func mergeTalkers(lists []nodeTalkers, n int) []lanmonitorv1alpha1.Talker {
	best := map[string]lanmonitorv1alpha1.Talker{}
	for _, l := range lists {
		for _, t := range l.talkers {
			t.Node = l.node
			if cur, ok := best[t.Address]; !ok || compareTalkers(t, cur) < 0 {
				best[t.Address] = t
			}
		}
	}
	// Keep the n highest in a sorted slice: most candidates lose against
	// the lowest kept entry, so this is linear in the number of addresses
	// (100,000 for 1,000 nodes reporting 100 talkers each).
	top := make([]lanmonitorv1alpha1.Talker, 0, n+1)
	for _, t := range best {
		if len(top) == n && compareTalkers(t, top[n-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(top, t, compareTalkers)
		top = slices.Insert(top, i, t)
		if len(top) > n {
			top = top[:n]
		}
	}
	if len(top) == 0 {
		return nil
	}
	return top
}
