package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"reflect"
	"slices"

	"github.com/cilium/ebpf"
)

// PrefixRule is one prefix of a table and the rule it belongs to.
type PrefixRule struct {
	Prefix netip.Prefix
	Rule   Rule
}

// checkPrefix rejects prefixes the tables cannot hold unambiguously.
func checkPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("invalid prefix %q", p)
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("prefix %s is IPv4-mapped IPv6: use the IPv4 form", p)
	}
	if p.Addr().Zone() != "" {
		return fmt.Errorf("prefix %s has a zone", p)
	}
	return nil
}

// Prefixes returns the prefixes of a table and their rules in the
// configuration in force, sorted.
func (d *Datapath) Prefixes(t Table) []PrefixRule {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []PrefixRule
	for k, r := range d.active() {
		if kt, p := k.prefix(); kt == t {
			out = append(out, PrefixRule{Prefix: p, Rule: r})
		}
	}
	slices.SortFunc(out, func(a, b PrefixRule) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out
}

// SyncTables makes the tables named in want hold exactly their entries
// (prefix -> rule); tables not named keep theirs. The change takes effect
// for all of them at one instant (see commit): every frame is judged by the
// whole old configuration or the whole new one, so an edit never passes a
// frame that both block nor drops one that both pass.
// Returns how many entries were written and deleted in the configuration
// (not counting the second generation's copy).
// Errors: an invalid or IPv4-mapped prefix, a rule ID 0 outside the
// protected table, more prefixes than Config.MaxPrefixes or rules than
// Config.MaxRules, or a failed map operation (then the configuration in
// force is the old one, or the new one if the failure came after the
// switch; the next sync completes it).
func (d *Datapath) SyncTables(want map[Table]map[netip.Prefix]Rule) (written, deleted int, err error) {
	size := 0
	for t, prefixes := range want {
		if t >= tableCount {
			return 0, 0, fmt.Errorf("table %d does not exist", t)
		}
		size += len(prefixes)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.active()
	desired := make(map[lanmonitorLmRuleKey]Rule, size)
	for k, r := range cur {
		if _, replaced := want[Table(k.Table)]; !replaced {
			desired[k] = r
		}
	}
	for t, prefixes := range want {
		for p, r := range prefixes {
			if err := checkEntry(t, p, r); err != nil {
				return 0, 0, err
			}
			desired[ruleKeyFor(t, p)] = r
		}
	}
	put, del := diffRules(cur, desired)
	if err := d.commit(desired, put, del); err != nil {
		return 0, 0, err
	}
	return len(put), len(del), nil
}

// SyncPrefixes is SyncTables for one table.
func (d *Datapath) SyncPrefixes(t Table, want map[netip.Prefix]Rule) (written, deleted int, err error) {
	return d.SyncTables(map[Table]map[netip.Prefix]Rule{t: want})
}

// AddPrefixes adds or replaces prefixes of table t, leaving the others.
// Errors as SyncTables.
func (d *Datapath) AddPrefixes(t Table, add []PrefixRule) error {
	for _, pr := range add {
		if err := checkEntry(t, pr.Prefix, pr.Rule); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.active()
	desired := maps.Clone(cur)
	put := map[lanmonitorLmRuleKey]Rule{}
	for _, pr := range add {
		k := ruleKeyFor(t, pr.Prefix)
		desired[k] = pr.Rule
		if old, ok := cur[k]; !ok || old != pr.Rule {
			put[k] = pr.Rule
		}
	}
	return d.commit(desired, put, nil)
}

// DeletePrefixes removes prefixes from table t; absent ones are ignored.
// Errors as SyncTables.
func (d *Datapath) DeletePrefixes(t Table, del []netip.Prefix) error {
	for _, p := range del {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("%s table: %w", t, err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.active()
	desired := maps.Clone(cur)
	var gone []lanmonitorLmRuleKey
	for _, p := range del {
		k := ruleKeyFor(t, p)
		if _, ok := desired[k]; ok {
			delete(desired, k)
			gone = append(gone, k)
		}
	}
	return d.commit(desired, nil, gone)
}

func checkEntry(t Table, p netip.Prefix, r Rule) error {
	if err := checkPrefix(p); err != nil {
		return fmt.Errorf("%s table: %w", t, err)
	}
	if t != TableProtected && r.ID == 0 {
		return fmt.Errorf("%s table: prefix %s: rule ID 0 is reserved", t, p)
	}
	return nil
}

// active is the configuration in force: the mirror of generation
// settings.Gen. Called with d.mu held.
func (d *Datapath) active() map[lanmonitorLmRuleKey]Rule { return d.gens[d.settings.Gen&1] }

// diffRules returns the entries of want that from lacks or holds with
// another rule, and the keys of from that want lacks.
func diffRules(from, want map[lanmonitorLmRuleKey]Rule) (put map[lanmonitorLmRuleKey]Rule, del []lanmonitorLmRuleKey) {
	put = map[lanmonitorLmRuleKey]Rule{}
	for k, r := range want {
		if old, ok := from[k]; !ok || old != r {
			put[k] = r
		}
	}
	for k := range from {
		if _, ok := want[k]; !ok {
			del = append(del, k)
		}
	}
	return put, del
}

// ruleIDs are the distinct rule IDs of the blocklist entries of rules.
func ruleIDs(rules map[lanmonitorLmRuleKey]Rule) map[uint32]bool {
	ids := map[uint32]bool{}
	for k, r := range rules {
		if Table(k.Table) != TableProtected {
			ids[r.ID] = true
		}
	}
	return ids
}

// commit makes desired (every table, keys of generation 0) the
// configuration in force; put and del are what it changes from the one in
// force. The rule tables are double-buffered (types.h: struct lm_config):
// desired is written into the generation not in force, the program is
// switched to it by one write of lm_settings.gen, and after an RCU grace
// period, when no run of the program can still be reading the old
// generation, the old one is brought up to date for the next change.
// Counters of new rule IDs exist before the switch; those of rules gone are
// deleted last, so an ID given to a new rule later starts from zero.
// Called with d.mu held; desired is not modified afterwards.
func (d *Datapath) commit(desired, put map[lanmonitorLmRuleKey]Rule, del []lanmonitorLmRuleKey) error {
	if len(desired) > int(d.cfg.MaxPrefixes) {
		return fmt.Errorf("%d prefixes in all tables exceed the capacity of %d", len(desired), d.cfg.MaxPrefixes)
	}
	cur := d.settings.Gen & 1
	next := 1 - cur
	// The generations hold the same configuration (the same map) unless a
	// write failed part way.
	same := d.gens[next] != nil && (len(d.gens[next]) == 0 && len(d.gens[cur]) == 0 || sameMap(d.gens[next], d.gens[cur]))
	if len(put)+len(del) == 0 && same {
		return nil
	}
	ids := ruleIDs(desired)
	if len(ids) > int(d.cfg.MaxRules) {
		return fmt.Errorf("%d distinct rules in all tables exceed the capacity of %d", len(ids), d.cfg.MaxRules)
	}
	old := ruleIDs(d.gens[cur])
	zero := make([]lanmonitorLmRuleCounters, d.cpus)
	for id := range ids {
		if old[id] {
			continue
		}
		if err := d.objs.LmRuleStats.Update(id, zero, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("create counters of rule %d: %w", id, err)
		}
	}
	if len(put)+len(del) > 0 {
		change := &ruleChange{put, del}
		if !same {
			change = nil // the generation is diffed on its own
		}
		if err := d.writeGen(next, desired, change); err != nil {
			return err
		}
		// The new generation's lengths first, while the other one is in
		// force, then the flip of gen alone (see writeSettings).
		if err := d.writeSettings(); err != nil {
			return err
		}
		d.settings.Gen = next
		if err := d.writeSettings(); err != nil {
			d.settings.Gen = cur
			return err
		}
		if err := d.waitGrace(); err != nil {
			return err
		}
		// The generation in force until now held the old configuration.
		if err := d.writeGen(cur, desired, &ruleChange{put, del}); err != nil {
			return err
		}
	} else if err := d.writeGen(next, desired, nil); err != nil {
		// Only the generation not in force was out of date.
		return err
	}
	if err := d.writeSettings(); err != nil {
		return err
	}
	for id := range old {
		if !ids[id] {
			d.objs.LmRuleStats.Delete(id)
		}
	}
	return nil
}

// ruleChange is what a commit writes into a generation that held the
// configuration in force before it.
type ruleChange struct {
	put map[lanmonitorLmRuleKey]Rule
	del []lanmonitorLmRuleKey
}

// sameMap reports whether a and b are the same map (not equal contents).
func sameMap(a, b map[lanmonitorLmRuleKey]Rule) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// inGen is the key of k (a generation-0 key) in generation g.
func (k lanmonitorLmRuleKey) inGen(g uint32) lanmonitorLmRuleKey {
	k.Table += uint8(g * tableCount)
	return k
}

// writeGen makes generation g of lm_rules hold desired, which must not be
// in force: new and changed entries are written, then their filter bits;
// stale entries lose their filter bits, then are deleted; then the length
// bits of g are recomputed in d.settings (written by the caller). change is
// what differs when g held the configuration in force before; nil: g is
// diffed against desired. On error the generation's mirror is dropped, and
// the next commit reads it back from the map. Called with d.mu held.
func (d *Datapath) writeGen(g uint32, desired map[lanmonitorLmRuleKey]Rule, change *ruleChange) (err error) {
	from := d.gens[g]
	recovered := from == nil
	if recovered {
		if from, err = d.readGen(g); err != nil {
			return err
		}
		change = nil
	}
	d.gens[g] = nil
	var (
		put map[lanmonitorLmRuleKey]Rule
		del []lanmonitorLmRuleKey
	)
	if change != nil {
		put, del = change.put, change.del
	} else {
		put, del = diffRules(from, desired)
	}
	if recovered {
		// An earlier write failed part way, maybe after clearing filter
		// bits of keys that stayed: set every wanted key's bits again.
		for k := range desired {
			d.filter.add(k.inGen(g))
		}
	}
	if len(put) > 0 {
		keys := make([]lanmonitorLmRuleKey, 0, len(put))
		vals := make([]lanmonitorLmRule, 0, len(put))
		for k, r := range put {
			keys = append(keys, k.inGen(g))
			vals = append(vals, lanmonitorLmRule{RuleId: r.ID, Mode: uint8(r.Mode)})
		}
		if _, err := d.objs.LmRules.BatchUpdate(keys, vals, &ebpf.BatchOptions{}); err != nil {
			return fmt.Errorf("write %d rule entries: %w", len(keys), err)
		}
		for _, k := range keys {
			d.filter.add(k)
		}
	}
	if len(del) > 0 {
		keys := make([]lanmonitorLmRuleKey, len(del))
		for i, k := range del {
			keys[i] = k.inGen(g)
			d.filter.remove(keys[i])
		}
		// The filter words of the deleted keys, recomputed from the keys
		// that stay in both generations.
		d.filter.recompute(func(yield func(lanmonitorLmRuleKey) bool) {
			for gen, m := range [2]map[lanmonitorLmRuleKey]Rule{d.gens[1-g], desired} {
				gg := 1 - g
				if gen == 1 {
					gg = g
				}
				for k := range m {
					if !yield(k.inGen(gg)) {
						return
					}
				}
			}
		})
		if err := d.writeFilter(); err != nil {
			return err
		}
		if _, err := d.objs.LmRules.BatchDelete(keys, &ebpf.BatchOptions{}); err != nil {
			if !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("delete %d rule entries: %w", len(keys), err)
			}
			// A batch stops at a missing key: delete the rest one by one.
			for _, k := range keys {
				if err := d.objs.LmRules.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return fmt.Errorf("delete rule entry: %w", err)
				}
			}
		}
	} else if err := d.writeFilter(); err != nil {
		return err
	}
	d.settings.Lengths[g] = lengthBits(desired)
	d.gens[g] = desired
	return nil
}

// readGen reads generation g of lm_rules back from the map, as
// generation-0 keys. Errors: a failed iteration, or a key of no table.
func (d *Datapath) readGen(g uint32) (map[lanmonitorLmRuleKey]Rule, error) {
	out := map[lanmonitorLmRuleKey]Rule{}
	var (
		key lanmonitorLmRuleKey
		val lanmonitorLmRule
	)
	it := d.objs.LmRules.Iterate()
	for it.Next(&key, &val) {
		if key.Table >= 2*tableCount {
			return nil, fmt.Errorf("rule map holds an entry of table %d: %w", key.Table, ErrIncompatiblePins)
		}
		if uint32(key.Table)/tableCount == g {
			key.Table %= tableCount
			out[key] = Rule{ID: val.RuleId, Mode: Mode(val.Mode)}
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return out, nil
}

// family returns 0 for an IPv4-mapped key, 1 for IPv6, and the prefix
// length within the family.
func (k lanmonitorLmRuleKey) family() (fam, bits int) {
	if netip.AddrFrom16(k.Addr.Bytes).Is4In6() && k.PrefixLen >= 96 {
		return 0, int(k.PrefixLen) - 96
	}
	return 1, int(k.PrefixLen)
}

// lengthBits returns, per table, the prefix lengths rules holds (struct
// lm_prefix_lengths of types.h).
func lengthBits(rules map[lanmonitorLmRuleKey]Rule) (out [tableCount]lanmonitorLmPrefixLengths) {
	for k := range rules {
		fam, bits := k.family()
		l := &out[k.Table%tableCount]
		if fam == 0 {
			l.V4 |= 1 << bits
		} else {
			l.V6[bits/64] |= 1 << (bits % 64)
		}
	}
	return out
}

// writeFilter writes the filter words changed since the last write.
func (d *Datapath) writeFilter() error {
	idx, words := d.filter.takeDirty()
	if len(idx) == 0 {
		return nil
	}
	if _, err := d.objs.LmFilter.BatchUpdate(idx, words, &ebpf.BatchOptions{}); err != nil {
		return fmt.Errorf("write %d filter words: %w", len(idx), err)
	}
	return nil
}

// ruleHash hashes a rule key exactly as lookup.h: lm_rule_hash does, with the
// address halves loaded in the machine's byte order.
func ruleHash(k lanmonitorLmRuleKey) uint64 {
	lo := binary.NativeEndian.Uint64(k.Addr.Bytes[0:8])
	hi := binary.NativeEndian.Uint64(k.Addr.Bytes[8:16])
	h := (hi ^ (uint64(k.Table)<<8 | uint64(k.PrefixLen))) * 0x9e3779b97f4a7c15
	h = (h ^ h>>32 ^ lo) * 0xc4ceb9fe1a85ec53
	return h ^ h>>32
}

// ruleFilter is the Go side of lm_filter: a blocked Bloom filter with two
// bits per key in one 64-bit word. A removed key cannot clear its bits,
// which other keys may share: the words it touched are recomputed from the
// remaining keys instead (one pass over them), which costs a few
// milliseconds per 100k keys and no memory per key.
type ruleFilter struct {
	mask  uint32
	words []uint64
	dirty map[uint32]struct{} // words to write
	stale map[uint32]struct{} // words to recompute before writing
}

func newRuleFilter(words uint32) *ruleFilter {
	return &ruleFilter{mask: words - 1, words: make([]uint64, words), dirty: map[uint32]struct{}{}, stale: map[uint32]struct{}{}}
}

func (f *ruleFilter) slots(k lanmonitorLmRuleKey) (word uint32, bits uint64) {
	h := ruleHash(k)
	return uint32(h) & f.mask, 1<<(h>>32&63) | 1<<(h>>40&63)
}

func (f *ruleFilter) add(k lanmonitorLmRuleKey) {
	w, bits := f.slots(k)
	f.words[w] |= bits
	f.dirty[w] = struct{}{}
}

// remove marks the word of k for recomputation (see recompute).
func (f *ruleFilter) remove(k lanmonitorLmRuleKey) {
	w, _ := f.slots(k)
	f.stale[w] = struct{}{}
}

// recompute rebuilds the stale words from the keys that remain (every key
// of both generations, as the program probes them).
func (f *ruleFilter) recompute(keys iter.Seq[lanmonitorLmRuleKey]) {
	if len(f.stale) == 0 {
		return
	}
	for w := range f.stale {
		f.words[w] = 0
		f.dirty[w] = struct{}{}
	}
	for k := range keys {
		if w, bits := f.slots(k); hasWord(f.stale, w) {
			f.words[w] |= bits
		}
	}
	clear(f.stale)
}

func hasWord(set map[uint32]struct{}, w uint32) bool {
	_, ok := set[w]
	return ok
}

func (f *ruleFilter) takeDirty() ([]uint32, []uint64) {
	idx := make([]uint32, 0, len(f.dirty))
	for w := range f.dirty {
		idx = append(idx, w)
	}
	slices.Sort(idx)
	words := make([]uint64, len(idx))
	for i, w := range idx {
		words[i] = f.words[w]
	}
	clear(f.dirty)
	return idx, words
}
