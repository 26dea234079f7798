package controllers

import (
	"context"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// apiServerNamespace and apiServerService name the EndpointSlices of the
	// API server, kept up to date by the API server itself.
	apiServerNamespace = metav1.NamespaceDefault
	apiServerService   = "kubernetes"
)

// apiServerEndpoints returns the sorted, deduplicated addresses of the
// `kubernetes` Service's EndpointSlices (endpoints not marked unready).
func apiServerEndpoints(ctx context.Context, c client.Reader) ([]string, error) {
	var list discoveryv1.EndpointSliceList
	if err := c.List(ctx, &list, client.InNamespace(apiServerNamespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: apiServerService},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var out []string
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if addr, err := netip.ParseAddr(a); err == nil {
					out = append(out, addr.Unmap().String())
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// nodeAddresses returns a node's InternalIP and ExternalIP addresses.
func nodeAddresses(n *corev1.Node) []string {
	var out []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			out = append(out, a.Address)
		}
	}
	return out
}

// parsePrefix parses a CIDR or a bare address (as a host prefix), masked and
// with IPv4-mapped IPv6 addresses unmapped.
func parsePrefix(s string) (netip.Prefix, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), true
}

// prefixSet answers "which member contains this prefix" with one map lookup
// per distinct member length.
type prefixSet struct {
	byLen map[int]map[netip.Prefix]struct{}
	lens  []int // distinct lengths present, any family
}

func newPrefixSet(ps []netip.Prefix) *prefixSet {
	s := &prefixSet{byLen: map[int]map[netip.Prefix]struct{}{}}
	for _, p := range ps {
		m := s.byLen[p.Bits()]
		if m == nil {
			m = map[netip.Prefix]struct{}{}
			s.byLen[p.Bits()] = m
			s.lens = append(s.lens, p.Bits())
		}
		m[p] = struct{}{}
	}
	return s
}

// containedIn reports whether some member of s contains p.
func (s *prefixSet) containedIn(p netip.Prefix) bool {
	for _, l := range s.lens {
		if l > p.Bits() {
			continue
		}
		q, err := p.Addr().Prefix(l)
		if err != nil {
			continue
		}
		if _, ok := s.byLen[l][q]; ok {
			return true
		}
	}
	return false
}

// exemptions returns what the blocked CIDRs cover of the protected entries:
// two prefixes either nest or are disjoint, so each overlap is the more
// specific of a protected and a blocked prefix. Unparsable entries are
// ignored; the result is unsorted and may hold duplicates (formatPrefixes
// sorts and deduplicates).
func exemptions(blocked, protected []string) []netip.Prefix {
	parse := func(in []string) []netip.Prefix {
		out := make([]netip.Prefix, 0, len(in))
		for _, s := range in {
			if p, ok := parsePrefix(s); ok {
				out = append(out, p)
			}
		}
		return out
	}
	bp, pp := parse(blocked), parse(protected)
	bs, ps := newPrefixSet(bp), newPrefixSet(pp)
	var hits []netip.Prefix
	for _, p := range pp {
		if bs.containedIn(p) { // a protected prefix inside a blocked one
			hits = append(hits, p)
		}
	}
	for _, b := range bp {
		if ps.containedIn(b) { // a blocked prefix inside a protected one
			hits = append(hits, b)
		}
	}
	return hits
}
