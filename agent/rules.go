package agent

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/lanmonitor/lanmonitor/agent/kernel"
	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/internal/prefixes"
)

// maxExemptedPerBlock bounds the exempted addresses reported per block.
const maxExemptedPerBlock = 16

// tables is the content of the three rule tables.
type tables = kernel.Tables

// shadowed is a block prefix that another block's entry for the same prefix
// and table won over.
type shadowed struct {
	Block  string
	Prefix netip.Prefix
	Winner string
}

// buildTables renders blocks and protected prefixes into table contents. A
// Source block goes into the source table, Destination into the destination
// table, Both into both. When two blocks list the same prefix for the same
// table, Enforce wins over Audit, then the lower rule ID; the losers are
// returned so that they can be reported.
func buildTables(blocks []Block, protected []netip.Prefix) (tables, []shadowed) {
	t := tables{bpf.TableSource: {}, bpf.TableDestination: {}, bpf.TableProtected: {}}
	owner := map[bpf.Table]map[netip.Prefix]*Block{bpf.TableSource: {}, bpf.TableDestination: {}}
	var lost []shadowed
	sorted := slices.Clone(blocks)
	slices.SortFunc(sorted, func(a, b Block) int {
		// Enforce first, then by rule ID: the first writer of a prefix wins.
		if a.Mode != b.Mode {
			if a.Mode == BlockModeEnforce {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.RuleID, b.RuleID)
	})
	for i := range sorted {
		b := &sorted[i]
		mode := bpf.ModeEnforce
		if b.Mode == BlockModeAudit {
			mode = bpf.ModeAudit
		}
		var tabs []bpf.Table
		switch b.Direction {
		case DirectionSource:
			tabs = []bpf.Table{bpf.TableSource}
		case DirectionDestination:
			tabs = []bpf.Table{bpf.TableDestination}
		case DirectionBoth:
			tabs = []bpf.Table{bpf.TableSource, bpf.TableDestination}
		}
		for _, tab := range tabs {
			for _, p := range b.CIDRs {
				p = prefixes.Normalize(p)
				if w, taken := owner[tab][p]; taken {
					if w.Name != b.Name {
						lost = append(lost, shadowed{Block: b.Name, Prefix: p, Winner: w.Name})
					}
					continue
				}
				owner[tab][p] = b
				t[tab][p] = bpf.Rule{ID: b.RuleID, Mode: mode}
			}
		}
	}
	for _, p := range protected {
		t[bpf.TableProtected][prefixes.Normalize(p)] = bpf.Rule{}
	}
	return t, lost
}

// exemptions lists, for a block's prefixes, the protected prefixes they
// cover (or the block's own prefix where a protected one covers it): the
// addresses the lockout guard keeps from being dropped. At most
// maxExemptedPerBlock entries, sorted; hosts are written as bare addresses.
func exemptions(cidrs []netip.Prefix, protected []netip.Prefix) []string {
	norm := func(in []netip.Prefix) []netip.Prefix {
		out := make([]netip.Prefix, len(in))
		for i, p := range in {
			out[i] = prefixes.Normalize(p)
		}
		return out
	}
	s := prefixes.FormatSorted(prefixes.Exemptions(norm(cidrs), norm(protected)), maxExemptedPerBlock)
	if s == nil {
		s = []string{}
	}
	return s
}
