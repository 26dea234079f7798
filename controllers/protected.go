package controllers

import (
	"context"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lanmonitor/lanmonitor/internal/prefixes"
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

// exemptions returns what the blocked CIDRs cover of the protected entries
// (prefixes.Exemptions); unparsable entries are ignored.
func exemptions(blocked, protected []string) []netip.Prefix {
	parse := func(in []string) []netip.Prefix {
		out := make([]netip.Prefix, 0, len(in))
		for _, s := range in {
			if p, ok := prefixes.Parse(s); ok {
				out = append(out, p)
			}
		}
		return out
	}
	return prefixes.Exemptions(parse(blocked), parse(protected))
}
