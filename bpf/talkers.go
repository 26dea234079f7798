package bpf

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"unsafe"

	"github.com/cilium/ebpf"
)

// The talker table (maps.h): a source's slot in lm_slot_of, its counters in
// lm_talker_counts, its address in lm_talker_addrs. The counters have one
// stripe of slots per possible CPU, written by the program on that CPU, and
// one last stripe written only by Go: counts carried over from an earlier
// table. The two arrays are mmapped, so a read of every source is a memory
// copy (about 1.5 ms for 65,536 sources) where a batch lookup of a per-CPU
// hash costs about 20-30 ms (docs/benchmarks.md). The kernel never evicts:
// Talkers frees the slots of idle sources when new ones found the table
// full.

// talkerMaps are the maps of the talker table, pinned and replaced together.
var talkerMaps = []string{lanmonitorMapLmSlotOf, lanmonitorMapLmTalkerCounts, lanmonitorMapLmTalkerAddrs,
	lanmonitorMapLmFreeSlots, lanmonitorMapLmSlotNext}

// legacyTalkers is the per-CPU LRU hash of sources that releases up to
// 0.3 pinned instead of the talker table (key lm_addr, value lm_talker per
// CPU). Its entries are carried into the table at Load; Pin removes it.
const legacyTalkers = "lm_talkers"

// readChunk is how many slots Talkers copies out of the arrays at a time,
// per stripe: the buffers stay small (128 KiB per stripe) however large the
// table.
const readChunk = 4096

// evictShare is the share of the capacity freed at a time: when a new
// source found no slot, Talkers frees 1/evictShare of the slots (at least
// one), the sources idle longest first.
const evictShare = 16

// carryReserve is how many free slots a carried-over table keeps in
// lm_free_slots for the sources that the old program first counted after
// the copy (finishCarry gives them one).
const carryReserve = 256

var (
	talkerSize = int(unsafe.Sizeof(lanmonitorLmTalker{}))
	addrSize   = int(unsafe.Sizeof(lanmonitorLmAddr{}))
)

// talkerTable is the Go side of the talker table: the mmapped arrays and,
// per slot, what the last read saw.
type talkerTable struct {
	slots, stripes int // stripes: possible CPUs + the carried stripe
	counts, addrs  *ebpf.Memory
	countBuf       []lanmonitorLmTalker // readChunk per stripe
	addrBuf        []lanmonitorLmAddr   // readChunk
	slotBuf        []int                // the slot of each talker of a read
	// packets is each slot's packets at the last read (0: free);
	// lastActive is the number of the read that last saw them grow.
	packets    []uint64
	lastActive []uint64
	reads      uint64
	// full is Stats.TalkersFull at the last read.
	full uint64
	// carry is the table carried over at Load, until finishCarry.
	carry *carryState
}

// carryState is what finishCarry needs: the old maps, and what was copied
// from them per source.
type carryState struct {
	old    map[string]*ebpf.Map
	copied map[lanmonitorLmAddr]lanmonitorLmTalker
}

func newTalkerTable(objs *lanmonitorObjects, slots, cpus int) (*talkerTable, error) {
	counts, err := objs.LmTalkerCounts.Memory()
	if err != nil {
		return nil, fmt.Errorf("map talker counters: %w", err)
	}
	addrs, err := objs.LmTalkerAddrs.Memory()
	if err != nil {
		return nil, fmt.Errorf("map talker addresses: %w", err)
	}
	stripes := cpus + 1
	return &talkerTable{
		slots: slots, stripes: stripes, counts: counts, addrs: addrs,
		countBuf:   make([]lanmonitorLmTalker, readChunk*stripes),
		addrBuf:    make([]lanmonitorLmAddr, readChunk),
		packets:    make([]uint64, slots),
		lastActive: make([]uint64, slots),
	}, nil
}

// carriedStripe is the offset in lm_talker_counts of slot s's carried
// counters, in bytes.
func (t *talkerTable) carriedStripe(s int) int64 {
	return int64(((t.stripes-1)*t.slots + s) * talkerSize)
}

// Talkers returns every tracked source with its counters summed over CPUs,
// in no particular order.
//
// It is also the table's eviction: when a new source found no free slot
// since the last call (Stats.TalkersFull grew), it frees 1/16 of the
// capacity (at least one slot), the sources whose packets stopped growing
// the most calls ago first, and returns the others. A source seen in this
// very call is never evicted: a table full of active sources stays as it is.
// Freeing waits for an RCU grace period (a few ms) and zeroes the slots
// before handing them back. Errors: a failed map read or write.
func (d *Datapath) Talkers() ([]Talker, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.talkers
	var next uint32
	if err := d.objs.LmSlotNext.Lookup(uint32(0), &next); err != nil {
		return nil, fmt.Errorf("read talkers: %w", err)
	}
	used := min(int(next), t.slots)
	t.reads++
	out := make([]Talker, 0, min(int(d.talkersSeen.Load())+readChunk, used))
	slotOf := t.slotBuf[:0]
	defer func() { t.slotBuf = slotOf[:0] }()
	for start := 0; start < used; start += readChunk {
		n := min(readChunk, used-start)
		// Counters before addresses: a slot's address is written before
		// its first frame is counted (lm_take_slot).
		for stripe := range t.stripes {
			buf := t.countBuf[stripe*readChunk : stripe*readChunk+n]
			if _, err := t.counts.ReadAt(asBytes(buf), int64((stripe*t.slots+start)*talkerSize)); err != nil {
				return nil, fmt.Errorf("read talker counters: %w", err)
			}
		}
		if _, err := t.addrs.ReadAt(asBytes(t.addrBuf[:n]), int64(start*addrSize)); err != nil {
			return nil, fmt.Errorf("read talker addresses: %w", err)
		}
		for i := range n {
			var tk Talker
			for stripe := range t.stripes {
				v := &t.countBuf[stripe*readChunk+i]
				tk.Packets += v.Packets
				tk.Bytes += v.Bytes
				tk.LocalPackets += v.LocalPackets
				tk.SnoopedPackets += v.SnoopedPackets
			}
			s := start + i
			if tk.Packets != t.packets[s] {
				t.packets[s] = tk.Packets
				t.lastActive[s] = t.reads
			}
			if tk.Packets == 0 {
				continue // free
			}
			tk.Addr = Addr(t.addrBuf[i].Bytes)
			out = append(out, tk)
			slotOf = append(slotOf, s)
		}
	}
	st, err := d.Stats()
	if err != nil {
		return nil, err
	}
	if st.TalkersFull != t.full {
		t.full = st.TalkersFull
		if out, err = d.evict(out, slotOf); err != nil {
			return nil, err
		}
	}
	d.talkersSeen.Store(int64(len(out)))
	return out, nil
}

// evict frees the slots of the longest idle of the sources just read (out,
// in slots slotOf) and returns the others. Called with d.mu held.
func (d *Datapath) evict(out []Talker, slotOf []int) ([]Talker, error) {
	t := d.talkers
	var idle []int // indexes into out
	for i, s := range slotOf {
		if t.lastActive[s] < t.reads {
			idle = append(idle, i)
		}
	}
	slices.SortFunc(idle, func(a, b int) int {
		return cmp.Or(cmp.Compare(t.lastActive[slotOf[a]], t.lastActive[slotOf[b]]),
			cmp.Compare(out[a].Packets, out[b].Packets), cmp.Compare(slotOf[a], slotOf[b]))
	})
	idle = idle[:min(len(idle), max(1, t.slots/evictShare))]
	if len(idle) == 0 {
		return out, nil
	}
	keys := make([]lanmonitorLmAddr, len(idle))
	victims := make([]int, len(idle))
	evicted := make([]bool, len(out))
	for j, i := range idle {
		keys[j] = lanmonitorLmAddr{Bytes: out[i].Addr}
		victims[j] = slotOf[i]
		evicted[i] = true
	}
	// Each entry is deleted only if it still names the victim's slot: a
	// slot whose entry is already gone (a failed earlier eviction) is
	// freed all the same, and a source's newer slot is left alone. Only Go
	// deletes and the program inserts with BPF_NOEXIST, so the check holds
	// until the delete.
	for j, k := range keys {
		var slot uint32
		err := d.objs.LmSlotOf.Lookup(k, &slot)
		if errors.Is(err, ebpf.ErrKeyNotExist) || (err == nil && int(slot) != victims[j]) {
			continue
		}
		if err == nil {
			err = d.objs.LmSlotOf.Delete(k)
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("evict talkers: %w", err)
		}
	}
	if err := d.freeSlots(victims); err != nil {
		return nil, err
	}
	kept := out[:0]
	for i := range out {
		if !evicted[i] {
			kept = append(kept, out[i])
		}
	}
	return kept, nil
}

// freeSlots hands back slots no lm_slot_of entry names any more: after an
// RCU grace period (no program run still counts into them), each is zeroed
// and then pushed to lm_free_slots, one at a time.
func (d *Datapath) freeSlots(slots []int) error {
	t := d.talkers
	if err := d.waitGrace(); err != nil {
		return err
	}
	zero := make([]lanmonitorLmTalker, 1)
	zeroAddr := make([]lanmonitorLmAddr, 1)
	for _, s := range slots {
		for stripe := range t.stripes {
			if _, err := t.counts.WriteAt(asBytes(zero), int64((stripe*t.slots+s)*talkerSize)); err != nil {
				return fmt.Errorf("free talker slot: %w", err)
			}
		}
		if _, err := t.addrs.WriteAt(asBytes(zeroAddr), int64(s*addrSize)); err != nil {
			return fmt.Errorf("free talker slot: %w", err)
		}
		if err := d.objs.LmFreeSlots.Update(nil, uint32(s), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("free talker slot: %w", err)
		}
		t.packets[s] = 0
	}
	return nil
}

// pinnedTalkers opens the talker table pinned in dir when it does not match
// spec (another capacity or number of CPUs, a map missing), or the legacy
// talker map, for carryTalkers; the caller closes what it returns. Nil when
// nothing is pinned or the table matches: Load then adopts it as it is, so
// that no frame the old program counts is lost.
//
// A matching table and the legacy map pinned side by side: the one pinned
// last was in force. The table, when an upgrade was killed in Pin after
// pinning it (it then held the carried counts) and before removing the
// legacy pin; the legacy map, after a rollback to a release that knows only
// it (the table's pins are then stale).
func pinnedTalkers(spec *ebpf.CollectionSpec, dir string) (map[string]*ebpf.Map, error) {
	out := map[string]*ebpf.Map{}
	match := true
	for _, name := range append(slices.Clone(talkerMaps), legacyTalkers) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			match = match && name == legacyTalkers
			continue
		}
		if err != nil {
			closeMaps(out)
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		out[name] = m
		if name != legacyTalkers && spec.Maps[name].Compatible(m) != nil {
			match = false
		}
	}
	if match && out[legacyTalkers] != nil {
		table, err1 := os.Stat(filepath.Join(dir, lanmonitorMapLmSlotOf))
		legacy, err2 := os.Stat(filepath.Join(dir, legacyTalkers))
		if err := errors.Join(err1, err2); err != nil {
			closeMaps(out)
			return nil, fmt.Errorf("pinned talker maps: %w", err)
		}
		// bpffs sets a pin's modification time when it is made.
		match = table.ModTime().After(legacy.ModTime())
	}
	if match || len(out) == 0 {
		closeMaps(out)
		return nil, nil
	}
	return out, nil
}

func closeMaps(ms map[string]*ebpf.Map) {
	for _, m := range ms {
		m.Close()
	}
}

// carried is one source carried over from pinned maps, its counters summed
// over CPUs.
type carried struct {
	addr lanmonitorLmAddr
	c    lanmonitorLmTalker
}

// readOldTalkers reads the sources of old (the legacy LRU hash, or a talker
// table of another capacity), nil if old is of neither layout.
func readOldTalkers(old map[string]*ebpf.Map, cpus int) ([]carried, error) {
	switch {
	case old[legacyTalkers] != nil:
		return readLegacyTalkers(old[legacyTalkers], cpus)
	case len(old) == len(talkerMaps):
		return readTalkerTable(old[lanmonitorMapLmSlotOf], old[lanmonitorMapLmTalkerCounts], old[lanmonitorMapLmTalkerAddrs])
	}
	return nil, nil
}

// carryTalkers copies the sources of the pinned maps old into this
// Datapath's empty table, into the carried stripe, and reports whether it
// did; it keeps old open for finishCarry, which adds what the old program
// counts after the copy. When the table is smaller than what was tracked,
// the sources with the most packets are kept. Errors: a failed read of the
// old maps or write of the new ones; old maps of another layout are
// ignored (and closed).
func (d *Datapath) carryTalkers(old map[string]*ebpf.Map) (bool, error) {
	srcs, err := readOldTalkers(old, d.cpus)
	if err != nil || srcs == nil {
		closeMaps(old)
		return false, err
	}
	t := d.talkers
	if len(srcs) > t.slots {
		slices.SortStableFunc(srcs, func(a, b carried) int { return cmp.Compare(b.c.Packets, a.c.Packets) })
		srcs = srcs[:t.slots]
	}
	keys := make([]lanmonitorLmAddr, len(srcs))
	vals := make([]uint32, len(srcs))
	stripe := make([]lanmonitorLmTalker, len(srcs))
	copied := make(map[lanmonitorLmAddr]lanmonitorLmTalker, len(srcs))
	for s, c := range srcs {
		keys[s], vals[s], stripe[s] = c.addr, uint32(s), c.c
		copied[c.addr] = c.c
	}
	fail := func(err error) (bool, error) {
		closeMaps(old)
		return false, fmt.Errorf("carry talkers: %w", err)
	}
	if _, err := t.addrs.WriteAt(asBytes(keys), 0); err != nil {
		return fail(err)
	}
	if _, err := t.counts.WriteAt(asBytes(stripe), t.carriedStripe(0)); err != nil {
		return fail(err)
	}
	if len(srcs) > 0 {
		if _, err := d.objs.LmSlotOf.BatchUpdate(keys, vals, nil); err != nil {
			return fail(err)
		}
	}
	// No program uses this table yet: the slots after the copied ones can
	// be handed out from here without racing one.
	next := len(srcs)
	for ; next < min(len(srcs)+carryReserve, t.slots); next++ {
		if err := d.objs.LmFreeSlots.Update(nil, uint32(next), ebpf.UpdateAny); err != nil {
			return fail(err)
		}
	}
	if err := d.objs.LmSlotNext.Update(uint32(0), uint32(next), ebpf.UpdateAny); err != nil {
		return fail(err)
	}
	t.carry = &carryState{old: old, copied: copied}
	return true, nil
}

// finishCarry adds to the table what the old program counted after
// carryTalkers copied its maps, once no run of it is left (the caller has
// moved the interface to this program), and closes the old maps. A source
// first seen in that window gets a slot of the reserve; past the reserve
// (carryReserve sources) or the capacity its frames are not carried.
// Errors: a failed map read or write.
func (d *Datapath) finishCarry() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.talkers
	c := t.carry
	if c == nil {
		return nil
	}
	defer func() {
		closeMaps(c.old)
		t.carry = nil
	}()
	if err := d.waitGrace(); err != nil {
		return err
	}
	srcs, err := readOldTalkers(c.old, d.cpus)
	if err != nil {
		return err
	}
	for _, src := range srcs {
		was := c.copied[src.addr]
		delta := lanmonitorLmTalker{
			Packets: src.c.Packets - was.Packets, Bytes: src.c.Bytes - was.Bytes,
			LocalPackets: src.c.LocalPackets - was.LocalPackets, SnoopedPackets: src.c.SnoopedPackets - was.SnoopedPackets,
		}
		if delta.Packets == 0 {
			continue
		}
		slot, ok, err := d.slotFor(src.addr)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		cur := make([]lanmonitorLmTalker, 1)
		if _, err := t.counts.ReadAt(asBytes(cur), t.carriedStripe(int(slot))); err != nil {
			return fmt.Errorf("carry talkers: %w", err)
		}
		cur[0].Packets += delta.Packets
		cur[0].Bytes += delta.Bytes
		cur[0].LocalPackets += delta.LocalPackets
		cur[0].SnoopedPackets += delta.SnoopedPackets
		if _, err := t.counts.WriteAt(asBytes(cur), t.carriedStripe(int(slot))); err != nil {
			return fmt.Errorf("carry talkers: %w", err)
		}
	}
	return nil
}

// slotFor returns addr's slot, giving it a free one (lm_free_slots) as the
// program would if it has none; ok is false when no slot is free.
func (d *Datapath) slotFor(addr lanmonitorLmAddr) (slot uint32, ok bool, err error) {
	if err := d.objs.LmSlotOf.Lookup(addr, &slot); err == nil {
		return slot, true, nil
	} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false, fmt.Errorf("carry talkers: %w", err)
	}
	if err := d.objs.LmFreeSlots.LookupAndDelete(nil, &slot); errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, fmt.Errorf("carry talkers: %w", err)
	}
	if _, err := d.talkers.addrs.WriteAt(asBytes([]lanmonitorLmAddr{addr}), int64(int(slot)*addrSize)); err != nil {
		return 0, false, fmt.Errorf("carry talkers: %w", err)
	}
	err = d.objs.LmSlotOf.Update(addr, slot, ebpf.UpdateNoExist)
	if err == nil {
		return slot, true, nil
	}
	// The program gave addr a slot meanwhile: that one, and ours back.
	if perr := d.objs.LmFreeSlots.Update(nil, slot, ebpf.UpdateAny); perr != nil {
		return 0, false, fmt.Errorf("carry talkers: %w", perr)
	}
	if !errors.Is(err, ebpf.ErrKeyExist) {
		return 0, false, fmt.Errorf("carry talkers: %w", err)
	}
	if err := d.objs.LmSlotOf.Lookup(addr, &slot); err != nil {
		return 0, false, fmt.Errorf("carry talkers: %w", err)
	}
	return slot, true, nil
}

// readLegacyTalkers reads every entry of the legacy per-CPU LRU hash.
func readLegacyTalkers(m *ebpf.Map, cpus int) ([]carried, error) {
	if m.Type() != ebpf.LRUCPUHash || int(m.KeySize()) != addrSize || int(m.ValueSize()) != talkerSize {
		return nil, nil
	}
	const batch = 1024
	keys := make([]lanmonitorLmAddr, batch)
	vals := make([]lanmonitorLmTalker, batch*cpus)
	out := []carried{}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			c := carried{addr: keys[i]}
			for _, v := range vals[i*cpus : (i+1)*cpus] {
				add(&c.c, &v)
			}
			if c.c.Packets > 0 {
				out = append(out, c)
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read pinned talkers: %w", err)
		}
	}
}

func add(sum, v *lanmonitorLmTalker) {
	sum.Packets += v.Packets
	sum.Bytes += v.Bytes
	sum.LocalPackets += v.LocalPackets
	sum.SnoopedPackets += v.SnoopedPackets
}

// readTalkerTable reads the sources of a talker table: the slots lm_slot_of
// names whose address matches and whose packets are not zero, in slot
// order. Nil (nothing to carry) for maps not of one table: another layout,
// or the pins of two tables (an agent killed while pinning a new one).
func readTalkerTable(slotOf, counts, addrs *ebpf.Map) ([]carried, error) {
	slots := int(addrs.MaxEntries())
	if slotOf.Type() != ebpf.Hash || int(slotOf.KeySize()) != addrSize || slotOf.ValueSize() != 4 ||
		int(counts.ValueSize()) != talkerSize || int(addrs.ValueSize()) != addrSize ||
		slots == 0 || int(slotOf.MaxEntries()) != slots || int(counts.MaxEntries())%slots != 0 {
		return nil, nil
	}
	stripes := int(counts.MaxEntries()) / slots
	cm, err := counts.Memory()
	if err != nil {
		return nil, fmt.Errorf("read pinned talkers: %w", err)
	}
	am, err := addrs.Memory()
	if err != nil {
		return nil, fmt.Errorf("read pinned talkers: %w", err)
	}
	owners, allCounts, allAddrs, err := readSlots(slotOf, cm, am, slots, stripes)
	if err != nil {
		return nil, err
	}
	out := []carried{}
	for addr, s := range owners {
		if int(s) >= slots || allAddrs[s] != addr {
			continue
		}
		c := carried{addr: addr}
		for stripe := range stripes {
			add(&c.c, &allCounts[stripe*slots+int(s)])
		}
		if c.c.Packets > 0 {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b carried) int { return cmp.Compare(owners[a.addr], owners[b.addr]) })
	return out, nil
}

// readSlots reads a whole talker table: lm_slot_of (source -> slot) and the
// counters (stripes of slots) and address of every slot.
func readSlots(slotOf *ebpf.Map, counts, addrs *ebpf.Memory, slots, stripes int) (map[lanmonitorLmAddr]uint32, []lanmonitorLmTalker, []lanmonitorLmAddr, error) {
	// Counters first, lm_slot_of last: a slot is counted only once its
	// entry exists, so every slot seen counting is seen owned, even while
	// a program runs.
	allCounts := make([]lanmonitorLmTalker, slots*stripes)
	if _, err := counts.ReadAt(asBytes(allCounts), 0); err != nil {
		return nil, nil, nil, fmt.Errorf("read talker counters: %w", err)
	}
	allAddrs := make([]lanmonitorLmAddr, slots)
	if _, err := addrs.ReadAt(asBytes(allAddrs), 0); err != nil {
		return nil, nil, nil, fmt.Errorf("read talker addresses: %w", err)
	}
	owners := make(map[lanmonitorLmAddr]uint32)
	const batch = 4096
	keys := make([]lanmonitorLmAddr, batch)
	vals := make([]uint32, batch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := slotOf.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			owners[keys[i]] = vals[i]
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return owners, allCounts, allAddrs, nil
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read talker slots: %w", err)
		}
	}
}

// repairTalkers frees what an agent killed in the middle of an eviction
// left of it in an adopted table: slots with packets whose source no longer
// names them in lm_slot_of (deleted, not yet handed back). A slot only
// counts frames once its lm_slot_of entry exists, so such a slot is no
// program's any more. Evictions zero and hand back one slot at a time, so
// such a kill leaks at most the one slot zeroed and not handed back.
// Errors: a failed map read or write.
func (d *Datapath) repairTalkers() error {
	t := d.talkers
	var next uint32
	if err := d.objs.LmSlotNext.Lookup(uint32(0), &next); err != nil {
		return fmt.Errorf("read talker slots: %w", err)
	}
	if next == 0 {
		return nil // a new table
	}
	owned, allCounts, allAddrs, err := readSlots(d.objs.LmSlotOf, t.counts, t.addrs, t.slots, t.stripes)
	if err != nil {
		return err
	}
	var orphans []int
	for s := range min(int(next), t.slots) {
		var packets uint64
		for stripe := range t.stripes {
			packets += allCounts[stripe*t.slots+s].Packets
		}
		if slot, ok := owned[allAddrs[s]]; packets > 0 && (!ok || int(slot) != s) {
			orphans = append(orphans, s)
		}
	}
	if len(orphans) == 0 {
		return nil
	}
	return d.freeSlots(orphans)
}

// asBytes is the memory of s, to copy it to or from a mapped array.
func asBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}
