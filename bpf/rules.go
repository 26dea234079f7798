package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
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

// Prefixes returns the prefixes of a table and their rules, sorted.
func (d *Datapath) Prefixes(t Table) []PrefixRule {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []PrefixRule
	for k, r := range d.rules {
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

// SyncPrefixes makes table t hold exactly want (prefix -> rule), touching only
// the entries that differ: new and changed entries are written in one batch,
// then their filter and length bits; stale entries lose their bits first and
// are then deleted in one batch. At no time is an unchanged entry missing.
// Returns how many entries were written and deleted.
// Errors: an invalid or IPv4-mapped prefix, a rule ID out of range, more
// prefixes than Config.MaxPrefixes, or a failed map operation (entries not
// confirmed are retried by the next sync).
func (d *Datapath) SyncPrefixes(t Table, want map[netip.Prefix]Rule) (written, deleted int, err error) {
	desired := make(map[lanmonitorLmRuleKey]Rule, len(want))
	for p, r := range want {
		if err := checkPrefix(p); err != nil {
			return 0, 0, fmt.Errorf("%s table: %w", t, err)
		}
		if t != TableProtected && r.ID == 0 {
			return 0, 0, fmt.Errorf("%s table: prefix %s: rule ID 0 is reserved", t, p)
		}
		desired[ruleKeyFor(t, p)] = r
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	var (
		putKeys []lanmonitorLmRuleKey
		putVals []lanmonitorLmRule
		delKeys []lanmonitorLmRuleKey
	)
	others := 0
	for k := range d.rules {
		if Table(k.Table) != t {
			others++
			continue
		}
		if _, ok := desired[k]; !ok {
			delKeys = append(delKeys, k)
		}
	}
	for k, r := range desired {
		if old, ok := d.rules[k]; ok && old == r {
			continue
		}
		putKeys = append(putKeys, k)
		putVals = append(putVals, lanmonitorLmRule{RuleId: r.ID, Mode: uint8(r.Mode)})
	}
	if others+len(desired) > int(d.cfg.MaxPrefixes) {
		return 0, 0, fmt.Errorf("%s table: %d prefixes with %d in other tables exceed the capacity of %d", t, len(desired), others, d.cfg.MaxPrefixes)
	}
	if n := d.rulesAfter(t, desired); n > int(d.cfg.MaxRules) {
		return 0, 0, fmt.Errorf("%s table: %d distinct rules exceed the capacity of %d", t, n, d.cfg.MaxRules)
	}

	if err := d.putRules(putKeys, putVals); err != nil {
		return 0, 0, err
	}
	if err := d.deleteRules(delKeys); err != nil {
		return len(putKeys), 0, err
	}
	return len(putKeys), len(delKeys), nil
}

// AddPrefixes adds or replaces prefixes of table t, leaving the others.
func (d *Datapath) AddPrefixes(t Table, add []PrefixRule) error {
	keys := make([]lanmonitorLmRuleKey, 0, len(add))
	vals := make([]lanmonitorLmRule, 0, len(add))
	for _, pr := range add {
		if err := checkPrefix(pr.Prefix); err != nil {
			return fmt.Errorf("%s table: %w", t, err)
		}
		if t != TableProtected && pr.Rule.ID == 0 {
			return fmt.Errorf("%s table: prefix %s: rule ID 0 is reserved", t, pr.Prefix)
		}
		keys = append(keys, ruleKeyFor(t, pr.Prefix))
		vals = append(vals, lanmonitorLmRule{RuleId: pr.Rule.ID, Mode: uint8(pr.Rule.Mode)})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.putRules(keys, vals)
}

// DeletePrefixes removes prefixes from table t; absent ones are ignored.
func (d *Datapath) DeletePrefixes(t Table, del []netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := make([]lanmonitorLmRuleKey, 0, len(del))
	for _, p := range del {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("%s table: %w", t, err)
		}
		if k := ruleKeyFor(t, p); d.hasRule(k) {
			keys = append(keys, k)
		}
	}
	return d.deleteRules(keys)
}

// unrefRule drops one reference to a rule ID (an entry that moved to
// another rule) and deletes its counters with the last one.
func (d *Datapath) unrefRule(id uint32) {
	d.ruleRefs[id]--
	if d.ruleRefs[id] <= 0 {
		delete(d.ruleRefs, id)
		d.deleteCounters([]uint32{id})
	}
}

// deleteCounters removes the counters of rule IDs no entry refers to any
// more, so that an ID given to a new rule later starts from zero.
func (d *Datapath) deleteCounters(ids []uint32) {
	for _, id := range ids {
		if d.ruleRefs[id] == 0 {
			d.objs.LmRuleStats.Delete(id)
		}
	}
}

func (d *Datapath) hasRule(k lanmonitorLmRuleKey) bool {
	_, ok := d.rules[k]
	return ok
}

// rulesAfter counts the distinct rule IDs of all tables once table t holds
// desired.
func (d *Datapath) rulesAfter(t Table, desired map[lanmonitorLmRuleKey]Rule) int {
	ids := map[uint32]bool{}
	for k, r := range d.rules {
		if Table(k.Table) != t && Table(k.Table) != TableProtected {
			ids[r.ID] = true
		}
	}
	if t != TableProtected {
		for _, r := range desired {
			ids[r.ID] = true
		}
	}
	return len(ids)
}

// putRules writes the counters of new rule IDs, then the entries, then
// their filter bits, then their length bits, so a probe never finds a bit
// without its entry nor an entry without its counters. Called with d.mu held.
func (d *Datapath) putRules(keys []lanmonitorLmRuleKey, vals []lanmonitorLmRule) error {
	if len(keys) == 0 {
		return nil
	}
	zero := make([]lanmonitorLmRuleCounters, d.cpus)
	for i, k := range keys {
		id := vals[i].RuleId
		if k.Table == uint8(TableProtected) || d.ruleRefs[id] > 0 {
			continue
		}
		if err := d.objs.LmRuleStats.Update(id, zero, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("create counters of rule %d: %w", id, err)
		}
	}
	if _, err := d.objs.LmRules.BatchUpdate(keys, vals, &ebpf.BatchOptions{}); err != nil {
		return fmt.Errorf("write %d rule entries: %w", len(keys), err)
	}
	for i, k := range keys {
		old, existed := d.rules[k]
		if !existed {
			d.filter.add(k)
			d.refLength(k, +1)
		}
		r := Rule{ID: vals[i].RuleId, Mode: Mode(vals[i].Mode)}
		d.rules[k] = r
		if k.Table != uint8(TableProtected) {
			d.ruleRefs[r.ID]++
			if existed {
				d.unrefRule(old.ID)
			}
		}
	}
	if err := d.writeFilter(); err != nil {
		return err
	}
	d.syncLengthBits(keys)
	return d.writeSettings()
}

// deleteRules clears length bits and filter bits that only these entries
// needed, then deletes the entries. Called with d.mu held.
func (d *Datapath) deleteRules(keys []lanmonitorLmRuleKey) error {
	if len(keys) == 0 {
		return nil
	}
	var freed []uint32
	for _, k := range keys {
		d.filter.remove(k)
		d.refLength(k, -1)
		if k.Table != uint8(TableProtected) {
			if id := d.rules[k].ID; d.ruleRefs[id] == 1 {
				freed = append(freed, id)
			}
			d.ruleRefs[d.rules[k].ID]--
			if d.ruleRefs[d.rules[k].ID] == 0 {
				delete(d.ruleRefs, d.rules[k].ID)
			}
		}
		delete(d.rules, k)
	}
	defer d.deleteCounters(freed)
	d.syncLengthBits(keys)
	if err := d.writeSettings(); err != nil {
		return err
	}
	if err := d.writeFilter(); err != nil {
		return err
	}
	if _, err := d.objs.LmRules.BatchDelete(keys, &ebpf.BatchOptions{}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %d rule entries: %w", len(keys), err)
	}
	return nil
}

// family returns 0 for an IPv4-mapped key, 1 for IPv6, and the prefix
// length within the family.
func (k lanmonitorLmRuleKey) family() (fam, bits int) {
	if netip.AddrFrom16(k.Addr.Bytes).Is4In6() && k.PrefixLen >= 96 {
		return 0, int(k.PrefixLen) - 96
	}
	return 1, int(k.PrefixLen)
}

func (d *Datapath) refLength(k lanmonitorLmRuleKey, delta int) {
	fam, bits := k.family()
	d.lengthRefs[k.Table][fam][bits] = uint32(int(d.lengthRefs[k.Table][fam][bits]) + delta)
}

// syncLengthBits sets the length bit of every key's (table, family, length)
// to whether any prefix of it remains.
func (d *Datapath) syncLengthBits(keys []lanmonitorLmRuleKey) {
	for _, k := range keys {
		fam, bits := k.family()
		d.setLengthBit(Table(k.Table), fam, bits, d.lengthRefs[k.Table][fam][bits] > 0)
	}
}

func (d *Datapath) setLengthBit(t Table, fam, bits int, on bool) {
	l := &d.settings.Lengths[t]
	word := &l.V4
	if fam == 1 {
		word = &l.V6[bits/64]
	}
	mask := uint64(1) << (bits % 64)
	if on {
		*word |= mask
	} else {
		*word &^= mask
	}
}

// writeFilter writes the filter words changed since the last write,
// recomputing those that removed keys touched.
func (d *Datapath) writeFilter() error {
	d.filter.recompute(d.rules)
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

// recompute rebuilds the stale words from the keys that remain.
func (f *ruleFilter) recompute(keys map[lanmonitorLmRuleKey]Rule) {
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
