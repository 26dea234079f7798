// Package bpf loads lanmonitor's XDP program (lanmonitor.c) and owns its maps:
// it sizes them before load, converts between netip types and the program's
// keys, keeps the blocklist and protected prefixes in sync, and reads the
// counters. It does not attach the program to an interface; package agent does.
//
// Byte order: addresses are 16 bytes in network byte order (IPv4 mapped), as
// on the wire; counters and ports are host byte order.
package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// Default map sizes.
const (
	DefaultMaxTrackedSources = 65536
	DefaultMaxPrefixes       = 262144
	DefaultMaxRules          = 4096
	DefaultSampleRingBytes   = 256 << 10
)

// filterBitsPerPrefix sizes the Bloom filter: with two bits per prefix in a
// 64-bit word, 16 bits per prefix give a false-positive rate per probe of
// about 1% at full capacity, and far less below it.
const filterBitsPerPrefix = 16

// Config sizes the program's maps. Zero fields take the defaults above.
type Config struct {
	// MaxTrackedSources is the capacity of the talker table, in sources.
	// When it is full, new sources are not tracked (Stats.TalkersFull)
	// until the next Talkers call frees the slots of the sources idle
	// longest.
	MaxTrackedSources uint32
	// MaxPrefixes is the capacity of the rule map, all tables together.
	MaxPrefixes uint32
	// MaxRules is how many distinct rules (rule IDs) the tables can refer
	// to at once. Rule IDs themselves are any number from 1.
	MaxRules uint32
	// SampleRingBytes is the flow-sample ring buffer size: a power of two
	// and a multiple of the page size.
	SampleRingBytes uint32
	// PinPath, when set, is a directory on a bpffs where the maps are pinned
	// by name. Maps already pinned there are reused (adopted) when they
	// match, so counters and rules survive a restart; those that do not
	// match are replaced, their contents copied where the layouts allow
	// (see Replaced, CarriedOver and carryTalkers).
	PinPath string
}

func (c *Config) setDefaults() {
	if c.MaxTrackedSources == 0 {
		c.MaxTrackedSources = DefaultMaxTrackedSources
	}
	if c.MaxPrefixes == 0 {
		c.MaxPrefixes = DefaultMaxPrefixes
	}
	if c.MaxRules == 0 {
		c.MaxRules = DefaultMaxRules
	}
	if c.SampleRingBytes == 0 {
		c.SampleRingBytes = DefaultSampleRingBytes
	}
}

// filterWords is the number of 64-bit words of the Bloom filter: a power of
// two holding filterBitsPerPrefix bits per prefix of both generations.
func (c *Config) filterWords() uint32 {
	words := uint32(1)
	for uint64(words)*64 < 2*uint64(c.MaxPrefixes)*filterBitsPerPrefix {
		words <<= 1
	}
	return words
}

// Datapath is the loaded XDP program and its maps. Its methods are safe for
// concurrent use.
type Datapath struct {
	objs lanmonitorObjects
	cfg  Config
	cpus int

	mu       sync.Mutex
	settings lanmonitorLmConfig
	// written is the settings value last written to lm_settings (nil:
	// not known yet); see writeSettings.
	written *lanmonitorLmConfig
	// gens mirror the two generations of lm_rules (keys as in generation
	// 0): gens[settings.Gen] is the configuration in force, and between
	// changes both are the same map. A nil mirror is unknown (a write
	// failed part way) and is read back from the map before use.
	gens   [2]map[lanmonitorLmRuleKey]Rule
	filter *ruleFilter // over the keys of both generations
	// grace is an array of maps whose update makes the kernel wait for an
	// RCU grace period (see waitGrace); graceInner is its element.
	grace, graceInner *ebpf.Map
	// replaced and carried: see Replaced and CarriedOver.
	replaced, carried []string
	// talkersSeen is how many talkers the last Talkers call read.
	talkersSeen atomic.Int64
	talkers     *talkerTable
}

// Load loads the XDP program into the kernel with maps sized by cfg.
// With cfg.PinPath set, it creates the directory, pins the maps there and
// adopts maps already pinned (their rules and counters are kept); pinned maps
// of a different size or layout are replaced (Replaced, CarriedOver) and
// stay pinned until Pin.
// Errors: the kernel refusing the program (verifier log included), missing
// privileges (CAP_BPF, CAP_NET_ADMIN), more than 2^32 talker counters
// (MaxTrackedSources times possible CPUs plus one), pinned settings of a
// newer release (ErrIncompatiblePins), or pinning failures.
func Load(cfg Config) (*Datapath, error) {
	cfg.setDefaults()
	// Needed on kernels older than 5.11 only; a no-op on newer ones.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible CPUs: %w", err)
	}
	spec, err := loadLanmonitor()
	if err != nil {
		return nil, fmt.Errorf("load program spec: %w", err)
	}
	slots := cfg.MaxTrackedSources
	if uint64(cpus+1)*uint64(slots) > math.MaxUint32 {
		// The counters array is indexed by a 32-bit (stripe * slots + slot).
		return nil, fmt.Errorf("%d tracked sources on %d possible CPUs: over 2^32 talker counters, track fewer sources", slots, cpus)
	}
	spec.Maps[lanmonitorMapLmSlotOf].MaxEntries = slots
	// A stripe per possible CPU and the carried stripe (talkers.go).
	spec.Maps[lanmonitorMapLmTalkerCounts].MaxEntries = uint32(cpus+1) * slots
	spec.Maps[lanmonitorMapLmTalkerAddrs].MaxEntries = slots
	spec.Maps[lanmonitorMapLmFreeSlots].MaxEntries = slots
	if err := spec.Variables[lanmonitorVarLmSlots].Set(slots); err != nil {
		return nil, fmt.Errorf("set talker capacity: %w", err)
	}
	// Two generations of every prefix (types.h: struct lm_config). The map
	// is not preallocated: memory follows the entries.
	spec.Maps[lanmonitorMapLmRules].MaxEntries = 2 * cfg.MaxPrefixes
	spec.Maps[lanmonitorMapLmFilter].MaxEntries = cfg.filterWords()
	spec.Maps[lanmonitorMapLmRuleStats].MaxEntries = cfg.MaxRules
	spec.Maps[lanmonitorMapLmSamples].MaxEntries = cfg.SampleRingBytes
	if err := spec.Variables[lanmonitorVarLmFilterWordMask].Set(cfg.filterWords() - 1); err != nil {
		return nil, fmt.Errorf("set filter size: %w", err)
	}

	opts := &ebpf.CollectionOptions{}
	var createdDir bool
	var before map[string]bool
	var old map[string]*ebpf.Map // pinned maps that do not match: replaced
	var oldTalkers map[string]*ebpf.Map
	if cfg.PinPath != "" {
		if _, err := os.Stat(cfg.PinPath); errors.Is(err, os.ErrNotExist) {
			createdDir = true
		}
		if err := os.MkdirAll(cfg.PinPath, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
		before = pinFiles(cfg.PinPath)
		old, err = checkPins(spec, cfg.PinPath)
		if err != nil {
			return nil, err
		}
		for _, name := range pinnedMaps {
			if old[name] == nil {
				spec.Maps[name].Pinning = ebpf.PinByName
			}
		}
		if oldTalkers, err = pinnedTalkers(spec, cfg.PinPath); err != nil {
			closeMaps(old)
			return nil, err
		}
		if len(oldTalkers) == 0 {
			// Adopted as they are, or none pinned yet.
			for _, name := range talkerMaps {
				spec.Maps[name].Pinning = ebpf.PinByName
			}
		}
		opts.Maps.PinPath = cfg.PinPath
	}
	defer closeMaps(old)
	defer func() { closeMaps(oldTalkers) }()

	d := &Datapath{cfg: cfg, cpus: cpus, filter: newRuleFilter(cfg.filterWords())}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		// Pins made by this call go; pins adopted from an earlier run stay.
		if cfg.PinPath != "" {
			removeNewPins(cfg.PinPath, before, createdDir)
		}
		var verr *ebpf.VerifierError
		switch {
		case errors.As(err, &verr):
			return nil, fmt.Errorf("load xdp program: %+v", verr)
		case errors.Is(err, ebpf.ErrMapIncompatible):
			return nil, fmt.Errorf("load xdp program: pinned maps in %s: %w: %w", cfg.PinPath, ErrIncompatiblePins, err)
		case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM):
			return nil, fmt.Errorf("load xdp program: %w (needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON: run as root)", err)
		}
		return nil, fmt.Errorf("load xdp program: %w", err)
	}
	if d.talkers, err = newTalkerTable(&d.objs, int(slots), cpus); err != nil {
		return nil, errors.Join(err, d.objs.Close())
	}
	// The pinned table (or none yet) is adopted unless another is carried.
	adoptTalkers := cfg.PinPath != "" && len(oldTalkers) == 0
	if len(oldTalkers) > 0 {
		names := slices.Sorted(maps.Keys(oldTalkers))
		d.replaced = append(d.replaced, names...)
		// carryTalkers owns the old maps from here.
		carry := oldTalkers
		oldTalkers = nil
		if carried, err := d.carryTalkers(carry); err != nil {
			return nil, errors.Join(err, d.Close())
		} else if carried {
			d.carried = append(d.carried, names...)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(old)) {
		d.replaced = append(d.replaced, name)
		if carried, err := d.carryOver(name, old[name]); err != nil {
			return nil, errors.Join(err, d.Close())
		} else if carried {
			d.carried = append(d.carried, name)
		}
	}
	if err := d.openGrace(); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	if adoptTalkers {
		if err := d.repairTalkers(); err != nil {
			return nil, errors.Join(err, d.Close())
		}
	}
	if err := d.adopt(); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// openGrace creates the map-in-map that waitGrace updates.
func (d *Datapath) openGrace() (err error) {
	inner := &ebpf.MapSpec{Name: "lm_grace_inner", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	if d.graceInner, err = ebpf.NewMap(inner); err != nil {
		return fmt.Errorf("create grace-period map: %w", err)
	}
	d.grace, err = ebpf.NewMap(&ebpf.MapSpec{Name: "lm_grace", Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: inner})
	if err != nil {
		d.graceInner.Close()
		return fmt.Errorf("create grace-period map: %w", err)
	}
	return nil
}

// waitGrace returns once every run of the program that started before the
// call has ended. Updating an element of an array of maps from user space
// makes the kernel call synchronize_rcu() before returning (kernel/bpf/
// syscall.c: maybe_wait_bpf_programs; the kernel's BPF selftests use it
// the same way, testing_helpers.c: kern_sync_rcu), and an XDP program runs
// inside an RCU read-side critical section. Typically a few milliseconds.
func (d *Datapath) waitGrace() error {
	if err := d.grace.Put(uint32(0), d.graceInner); err != nil {
		return fmt.Errorf("wait for an RCU grace period: %w", err)
	}
	return nil
}

// ErrIncompatiblePins means the maps pinned by an earlier run hold what
// this program cannot read (checkPins lets through maps of the right type,
// sizes and flags; this is for their content): the caller may load without
// pins, move the XDP link over, and Pin the new maps instead.
var ErrIncompatiblePins = errors.New("pinned maps do not match")

// ruleMaps are read together: if one of them does not match this program,
// none of them is adopted.
var ruleMaps = []string{lanmonitorMapLmRules, lanmonitorMapLmFilter, lanmonitorMapLmSettings}

// checkPins opens the maps pinned in dir and returns those that do not
// match spec (map type, key size, value size, flags or capacity: what
// cilium/ebpf's MapSpec.Compatible compares), open, by name; the caller
// closes them. If one of ruleMaps does not match, all pinned ruleMaps are
// returned. Maps not returned are adopted by the load.
// Errors: a pin that exists but cannot be opened.
func checkPins(spec *ebpf.CollectionSpec, dir string) (map[string]*ebpf.Map, error) {
	old := map[string]*ebpf.Map{}
	pinned := map[string]*ebpf.Map{}
	defer func() {
		for name, m := range pinned {
			if old[name] == nil {
				m.Close()
			}
		}
	}()
	for _, name := range pinnedMaps {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		pinned[name] = m
		if spec.Maps[name].Compatible(m) != nil {
			old[name] = m
		}
	}
	for _, name := range ruleMaps {
		if old[name] != nil {
			for _, n := range ruleMaps {
				if pinned[n] != nil {
					old[n] = pinned[n]
				}
			}
			break
		}
	}
	return old, nil
}

// Replaced names the pinned maps that did not match this program and were
// replaced by new ones at Load; the caller pins the new ones (Pin) once the
// interface runs the new program. Nil when every pin was adopted. The talker
// table's maps are replaced together, as the rule maps are.
func (d *Datapath) Replaced() []string { return d.replaced }

// CarriedOver names the replaced maps whose contents were copied into the
// new ones at Load: the talker table (from one of another capacity, or from
// the legacy lm_talkers of releases up to 0.3), the rule counters when only
// their capacity or flags changed (frames the old program counts after the
// copy are not carried), and the global counters when the old value is a
// prefix of the new one (fields are only ever appended to struct lm_stats).
func (d *Datapath) CarriedOver() []string { return d.carried }

// carryOver copies what the replaced map old holds into its new twin when
// the layouts allow, and reports whether it did. Errors: a failed read or
// write of a map whose layout allowed the copy.
func (d *Datapath) carryOver(name string, old *ebpf.Map) (bool, error) {
	switch name {
	case lanmonitorMapLmRuleStats:
		return copyEntries[uint32, lanmonitorLmRuleCounters](old, d.objs.LmRuleStats, d.cpus)
	case lanmonitorMapLmGlobalStats:
		return d.carryGlobalStats(old)
	}
	return false, nil // rules, filter and settings are written from the configuration
}

// copyEntries copies every entry of the per-CPU hash old into dst when
// both have the same type, key size and value size (K and V), and reports
// whether it did.
func copyEntries[K, V any](old, dst *ebpf.Map, cpus int) (bool, error) {
	if old.Type() != dst.Type() || old.KeySize() != dst.KeySize() || old.ValueSize() != dst.ValueSize() {
		return false, nil
	}
	const batch = 1024
	keys := make([]K, batch)
	vals := make([]V, batch*cpus)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := old.BatchLookup(&cursor, keys, vals, nil)
		if n > 0 {
			if _, uerr := dst.BatchUpdate(keys[:n], vals[:n*cpus], nil); uerr != nil {
				return false, fmt.Errorf("copy map entries: %w", uerr)
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("read old map: %w", err)
		}
	}
}

// carryGlobalStats copies the global counters of an older struct lm_stats
// (a prefix of this one: fields are only appended) into the new map.
func (d *Datapath) carryGlobalStats(old *ebpf.Map) (bool, error) {
	newSize := d.objs.LmGlobalStats.ValueSize()
	if old.Type() != ebpf.PerCPUArray || old.KeySize() != 4 || old.ValueSize() > newSize || old.ValueSize()%8 != 0 {
		return false, nil
	}
	// One []uint64 array per CPU, as many words as the old struct has.
	words := int(old.ValueSize() / 8)
	per := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(words, reflect.TypeFor[uint64]())), d.cpus, d.cpus)
	if err := old.Lookup(uint32(0), per.Interface()); err != nil {
		return false, fmt.Errorf("read old global counters: %w", err)
	}
	out := make([]lanmonitorLmStats, d.cpus)
	for cpu := range d.cpus {
		b := make([]byte, newSize)
		for w := range words {
			binary.NativeEndian.PutUint64(b[8*w:], per.Index(cpu).Index(w).Uint())
		}
		if _, err := binary.Decode(b, binary.NativeEndian, &out[cpu]); err != nil {
			return false, fmt.Errorf("decode old global counters: %w", err)
		}
	}
	if err := d.objs.LmGlobalStats.Update(uint32(0), out, ebpf.UpdateAny); err != nil {
		return false, fmt.Errorf("copy global counters: %w", err)
	}
	return true, nil
}

// pinnedMaps are the maps pinned under Config.PinPath and adopted when they
// match; the talker table (talkerMaps) is pinned too, and adopted or
// replaced as a whole (pinnedTalkers); the ring buffer holds nothing worth
// keeping across a restart.
var pinnedMaps = []string{lanmonitorMapLmRules, lanmonitorMapLmFilter,
	lanmonitorMapLmRuleStats, lanmonitorMapLmGlobalStats, lanmonitorMapLmSettings}

func pinFiles(dir string) map[string]bool {
	out := map[string]bool{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		out[e.Name()] = true
	}
	return out
}

func removeNewPins(dir string, before map[string]bool, createdDir bool) {
	for name := range pinFiles(dir) {
		if !before[name] {
			os.Remove(filepath.Join(dir, name))
		}
	}
	if createdDir {
		os.Remove(dir)
	}
}

// Pin pins the maps by name into dir (a bpffs directory, created if needed),
// replacing pins of the same names, and makes dir this Datapath's PinPath.
// A talker table carried over at Load first gets what the old program
// counted since the copy (finishCarry): call Pin once the interface runs
// this program.
// Maps adopted from pins in dir at Load stay pinned as they are.
// Used after loading without pins because the old ones were incompatible.
func (d *Datapath) Pin(dir string) error {
	if err := d.finishCarry(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	for _, m := range d.pinnable() {
		path := filepath.Join(dir, m.name)
		if m.m.IsPinned() && d.cfg.PinPath == dir {
			// Adopted from this very pin. Removing it and pinning again
			// would lose it: cilium/ebpf's Map.Pin to the path the map
			// was loaded from does nothing.
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("replace pin %s: %w", path, err)
		}
		if err := m.m.Pin(path); err != nil {
			return fmt.Errorf("pin %s: %w", path, err)
		}
	}
	if err := os.Remove(filepath.Join(dir, legacyTalkers)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pin of %s: %w", legacyTalkers, err)
	}
	d.cfg.PinPath = dir
	d.replaced = nil
	return nil
}

type namedMap struct {
	name string
	m    *ebpf.Map
}

func (d *Datapath) pinnable() []namedMap {
	return []namedMap{
		{lanmonitorMapLmSlotOf, d.objs.LmSlotOf},
		{lanmonitorMapLmTalkerCounts, d.objs.LmTalkerCounts},
		{lanmonitorMapLmTalkerAddrs, d.objs.LmTalkerAddrs},
		{lanmonitorMapLmFreeSlots, d.objs.LmFreeSlots},
		{lanmonitorMapLmSlotNext, d.objs.LmSlotNext},
		{lanmonitorMapLmRules, d.objs.LmRules},
		{lanmonitorMapLmFilter, d.objs.LmFilter},
		{lanmonitorMapLmRuleStats, d.objs.LmRuleStats},
		{lanmonitorMapLmGlobalStats, d.objs.LmGlobalStats},
		{lanmonitorMapLmSettings, d.objs.LmSettings},
	}
}

// adopt rebuilds the Go mirror of rules, filter and settings from the maps,
// which are empty unless they were pinned by an earlier run. If that run
// died while writing the generation not in force, the generation is
// completed from the one in force (which stays in force meanwhile).
func (d *Datapath) adopt() error {
	var zero uint32
	if err := d.objs.LmSettings.Lookup(zero, &d.settings); err != nil {
		return fmt.Errorf("read settings: %w", err)
	}
	if d.settings.Gen > 1 {
		return fmt.Errorf("pinned settings name rule generation %d: %w", d.settings.Gen, ErrIncompatiblePins)
	}
	read := d.settings
	d.written = &read
	for g := range uint32(2) {
		m, err := d.readGen(g)
		if err != nil {
			return err
		}
		d.gens[g] = m
		for k := range m {
			d.filter.add(k.inGen(g))
		}
	}
	if err := d.writeFilter(); err != nil {
		return err
	}
	// The length bits follow from the rules; rewrite them in case an
	// earlier run died between writing entries and bits.
	for g := range 2 {
		d.settings.Lengths[g] = lengthBits(d.gens[g])
	}
	if err := d.writeSettings(); err != nil {
		return err
	}
	// Counters of every rule in force (a replaced counter map is empty).
	zeros := make([]lanmonitorLmRuleCounters, d.cpus)
	for id := range ruleIDs(d.active()) {
		if err := d.objs.LmRuleStats.Update(id, zeros, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("create counters of rule %d: %w", id, err)
		}
	}
	if !maps.Equal(d.gens[0], d.gens[1]) {
		// An earlier run died while writing the generation not in force.
		cur := d.active()
		return d.commit(cur, nil, nil)
	}
	d.gens[1-d.settings.Gen&1] = d.active()
	return nil
}

// Program returns the XDP program, to attach it or to run it with
// BPF_PROG_TEST_RUN. It stays owned by the Datapath.
func (d *Datapath) Program() *ebpf.Program { return d.objs.LanmonitorXdp }

// SamplesMap returns the ring buffer of flow samples (see ReadSample).
func (d *Datapath) SamplesMap() *ebpf.Map { return d.objs.LmSamples }

// Config returns the sizes the program was loaded with.
func (d *Datapath) Config() Config { return d.cfg }

// Close releases the program and the maps (pins stay). Returns every error
// met, joined.
func (d *Datapath) Close() error {
	if c := d.talkers.carry; c != nil {
		closeMaps(c.old)
	}
	return errors.Join(
		d.objs.LanmonitorXdp.Close(),
		d.objs.LmSlotOf.Close(),
		d.objs.LmTalkerCounts.Close(),
		d.objs.LmTalkerAddrs.Close(),
		d.objs.LmFreeSlots.Close(),
		d.objs.LmSlotNext.Close(),
		d.objs.LmRules.Close(),
		d.objs.LmFilter.Close(),
		d.objs.LmRuleStats.Close(),
		d.objs.LmGlobalStats.Close(),
		d.objs.LmSettings.Close(),
		d.objs.LmSamples.Close(),
		d.grace.Close(),
		d.graceInner.Close(),
	)
}

// Unpin removes the maps' pins (when loaded with a PinPath) and the pin
// directory if it is then empty.
func (d *Datapath) Unpin() error {
	if d.cfg.PinPath == "" {
		return nil
	}
	var err error
	for _, m := range d.pinnable() {
		err = errors.Join(err, m.m.Unpin())
	}
	// The talker table's pins, even when this Datapath copied the table
	// from them and has not pinned its own yet (Replaced).
	for _, name := range append(slices.Clone(talkerMaps), legacyTalkers) {
		if rmErr := os.Remove(filepath.Join(d.cfg.PinPath, name)); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
	}
	// The directory stays when something else (a link pin) still lives there.
	if rmErr := os.Remove(d.cfg.PinPath); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) && !errors.Is(rmErr, syscall.ENOTEMPTY) {
		err = errors.Join(err, rmErr)
	}
	return err
}

// SetInterfaceMAC tells the program the interface's own MAC address: frames
// to it (and to broadcast/multicast addresses) count as local, others as
// snooped. Only local frames are ever dropped.
func (d *Datapath) SetInterfaceMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("interface mac %q: want 6 bytes, got %d", mac, len(mac))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.settings.IfMac[:], mac)
	return d.writeSettings()
}

// SetPromiscuous says whether the interface is meant to be promiscuous:
// when not, frames addressed to other hosts are ignored (counted only as
// FilteredSnooped), as a NIC's MAC filter would drop them.
func (d *Datapath) SetPromiscuous(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if on {
		d.settings.Flags |= flagPromiscuous
	} else {
		d.settings.Flags &^= flagPromiscuous
	}
	return d.writeSettings()
}

// flagPromiscuous is LM_FLAG_PROMISCUOUS of types.h.
const flagPromiscuous = 1 << 0

// SetSampleRate sets flow sampling to 1 in n packets; 0 turns it off.
func (d *Datapath) SetSampleRate(n uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.settings.SampleRate = n
	return d.writeSettings()
}

// writeSettings writes d.settings to lm_settings. The kernel copies an
// array map's value in place (kernel/bpf/arraymap.c: array_map_update_elem,
// copy_map_value, a memcpy), so a frame may read a value half old, half
// new. gen lies before the lengths in struct lm_config: a write that flips
// gen and changes lengths at once could show a frame the new gen with that
// generation's old lengths. A flip must therefore change gen alone (see
// commit); writeSettings refuses any other flip.
// Errors: such a flip (a bug of ours), or the kernel refusing the update.
func (d *Datapath) writeSettings() error {
	if w := d.written; w != nil && w.Gen != d.settings.Gen {
		rest := *w
		rest.Gen = d.settings.Gen
		if rest != d.settings {
			return fmt.Errorf("write settings: a flip of the rule generation %d -> %d must change nothing else", w.Gen, d.settings.Gen)
		}
	}
	if err := d.objs.LmSettings.Update(uint32(0), &d.settings, ebpf.UpdateAny); err != nil {
		d.written = nil // maybe written, maybe not
		return fmt.Errorf("write settings: %w", err)
	}
	w := d.settings
	d.written = &w
	return nil
}

// Stats returns the global counters summed over CPUs.
func (d *Datapath) Stats() (Stats, error) {
	var per []lanmonitorLmStats
	if err := d.objs.LmGlobalStats.Lookup(uint32(0), &per); err != nil {
		return Stats{}, fmt.Errorf("read global counters: %w", err)
	}
	var s Stats
	for i := range per {
		s.add(&per[i])
	}
	return s, nil
}

// RuleCounters returns the counters of every rule, summed over CPUs, keyed
// by rule ID.
func (d *Datapath) RuleCounters() (map[uint32]RuleCounters, error) {
	const batch = 1024
	keys := make([]uint32, batch)
	vals := make([]lanmonitorLmRuleCounters, batch*d.cpus)
	out := map[uint32]RuleCounters{}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.LmRuleStats.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			var c RuleCounters
			for cpu := range d.cpus {
				v := &vals[i*d.cpus+cpu]
				c.Matched += v.Matched
				c.Dropped += v.Dropped
				c.Exempted += v.Exempted
			}
			out[keys[i]] = c
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read rule counters: %w", err)
		}
	}
}

// ReadSample decodes one record read from SamplesMap.
func ReadSample(raw []byte) (FlowSample, error) {
	var s lanmonitorLmFlowSample
	if _, err := binary.Decode(raw, binary.NativeEndian, &s); err != nil {
		return FlowSample{}, fmt.Errorf("decode flow sample: %w", err)
	}
	return FlowSample{
		Src:      Addr(s.Src.Bytes).NetIP(),
		Dst:      Addr(s.Dst.Bytes).NetIP(),
		SrcPort:  s.SrcPort,
		DstPort:  s.DstPort,
		Protocol: s.Protocol,
		Local:    s.Flags&sampleLocal != 0,
		Fragment: s.Flags&sampleFragment != 0,
		Dropped:  s.Verdict == xdpDrop,
		RuleID:   s.RuleId,
		FrameLen: s.FrameLen,
		Ifindex:  s.Ifindex,
	}, nil
}

// Flags of lm_flow_sample (types.h) and XDP verdicts (linux/bpf.h).
const (
	sampleLocal    = 1 << 0
	sampleFragment = 1 << 1
	xdpDrop        = 1
)
