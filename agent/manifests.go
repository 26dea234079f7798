package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/config/crd"
	"github.com/lanmonitor/lanmonitor/internal/crdvalidate"
)

// Manifests are the LanMonitor and IPBlock objects read from files.
type Manifests struct {
	Monitors []v1alpha1.LanMonitor
	Blocks   []v1alpha1.IPBlock
}

// NewValidator returns a validator for lanmonitor's CRDs as they are
// installed in a cluster (embedded from config/crd/bases).
func NewValidator() (*crdvalidate.Validator, error) {
	return crdvalidate.New(crd.FS, crd.LanMonitors, crd.IPBlocks)
}

// LoadManifests reads LanMonitor and IPBlock manifests (YAML, several
// documents per file allowed) from files, validates and defaults each with the
// CRDs' schema and CEL rules exactly as the API server does, and returns them.
// Errors name the file, the document, the object and every invalid field; on
// error nothing is returned.
func LoadManifests(v *crdvalidate.Validator, files []string) (*Manifests, error) {
	out := &Manifests{}
	var errs []error
	names := map[string]string{}
	for _, file := range slices.Compact(slices.Sorted(slices.Values(files))) {
		objects := 0
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
		for doc := 1; ; doc++ {
			chunk, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: document %d: %w", file, doc, err))
				break
			}
			if len(bytes.TrimSpace(chunk)) == 0 || isComments(chunk) {
				continue
			}
			objects++
			var obj map[string]any
			if err := yaml.Unmarshal(chunk, &obj); err != nil {
				errs = append(errs, fmt.Errorf("%s: document %d: %w", file, doc, err))
				continue
			}
			kind, _ := obj["kind"].(string)
			name, _ := nestedString(obj, "metadata", "name")
			where := fmt.Sprintf("%s: document %d (%s %q)", file, doc, kind, name)
			if fe := v.Validate(obj); len(fe) > 0 {
				errs = append(errs, fmt.Errorf("%s: %w", where, fe.ToAggregate()))
				continue
			}
			key := kind + "/" + name
			if prev, dup := names[key]; dup {
				errs = append(errs, fmt.Errorf("%s: %s %q is also defined in %s", where, kind, name, prev))
				continue
			}
			names[key] = fmt.Sprintf("%s document %d", file, doc)
			switch kind {
			case "LanMonitor":
				var m v1alpha1.LanMonitor
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &m); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", where, err))
					continue
				}
				out.Monitors = append(out.Monitors, m)
			case "IPBlock":
				var b v1alpha1.IPBlock
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &b); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", where, err))
					continue
				}
				out.Blocks = append(out.Blocks, b)
			default:
				errs = append(errs, fmt.Errorf("%s: kind %q: standalone mode reads LanMonitor and IPBlock only", where, kind))
			}
		}
		if objects == 0 {
			// Most likely caught while an editor rewrites it in place;
			// applying it would lift every block.
			errs = append(errs, fmt.Errorf("%s: no LanMonitor or IPBlock in the file (empty, or being written?)", file))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// StandaloneConfig turns manifests into the Config of iface at time now: at
// most one LanMonitor (none means its defaults; its nodeSelector is ignored,
// and its interface, if set, must be iface); every IPBlock not expired at now
// (nodeSelectors ignored), with a rule ID derived from its name (see
// assignRuleIDs). It also returns when the next IPBlock expires (zero if
// none), so the caller can apply the config again then.
func StandaloneConfig(iface string, mf *Manifests, now time.Time, maxRules uint32) (Config, time.Time, error) {
	return standaloneConfig(iface, mf, now, maxRules, nil)
}

// standaloneConfig is StandaloneConfig that also leaves out the blocks seen
// expired before (lifted, which it updates: a clock stepped back does not
// enforce them again) and forgets the lifted blocks the manifests no longer
// hold.
func standaloneConfig(iface string, mf *Manifests, now time.Time, maxRules uint32, lifted liftedBlocks) (Config, time.Time, error) {
	cfg := Config{Interface: iface, Promiscuous: true}
	switch len(mf.Monitors) {
	case 0:
	case 1:
		m := mf.Monitors[0]
		s := m.Spec
		if s.Interface != "" && s.Interface != iface {
			return Config{}, time.Time{}, fmt.Errorf("LanMonitor %q: spec.interface is %q but --interface is %q", m.Name, s.Interface, iface)
		}
		var err error
		if cfg, err = InterfaceConfig(iface, s); err != nil {
			return Config{}, time.Time{}, fmt.Errorf("LanMonitor %q: %w", m.Name, err)
		}
	default:
		return Config{}, time.Time{}, fmt.Errorf("%d LanMonitors given (%s, %s): standalone mode takes at most one", len(mf.Monitors), mf.Monitors[0].Name, mf.Monitors[1].Name)
	}

	var next time.Time
	var live []v1alpha1.IPBlock
	for name := range lifted {
		if !slices.ContainsFunc(mf.Blocks, func(b v1alpha1.IPBlock) bool { return b.Name == name }) {
			delete(lifted, name)
		}
	}
	for _, b := range mf.Blocks {
		if b.Spec.ExpiresAt != nil {
			exp := b.Spec.ExpiresAt.Time
			if lifted.expired(&b, now) {
				continue
			}
			if next.IsZero() || exp.Before(next) {
				next = exp
			}
		}
		live = append(live, b)
	}
	if len(live) > int(maxRules) {
		return Config{}, time.Time{}, fmt.Errorf("%d IPBlocks: more than the %d rules an interface holds (--max-rules)", len(live), maxRules)
	}
	names := make([]string, len(live))
	for i, b := range live {
		names[i] = b.Name
	}
	ids := assignRuleIDs(names, nil, maxRules)
	for _, b := range live {
		blk, err := BlockFromAPI(b.Name, ids[b.Name], b.Generation, b.Spec)
		if err != nil {
			return Config{}, time.Time{}, err
		}
		cfg.Blocks = append(cfg.Blocks, blk)
	}
	return cfg, next, nil
}

// InterfaceConfig converts a LanMonitor spec (defaults applied) into the
// Config of iface, without blocks.
func InterfaceConfig(iface string, s v1alpha1.LanMonitorSpec) (Config, error) {
	cfg := Config{
		Interface: iface, Promiscuous: s.Promiscuous == nil || *s.Promiscuous, XDPMode: s.XDPMode,
		TopN: int(s.TopN), MaxTrackedSources: uint32(s.MaxTrackedSources), FlowSampling: uint32(s.FlowSampling),
	}
	if s.ReportInterval != nil {
		cfg.ReportInterval = s.ReportInterval.Duration
	}
	var err error
	if cfg.InternalCIDRs, err = ParsePrefixes(s.InternalCIDRs); err != nil {
		return Config{}, fmt.Errorf("spec.internalCIDRs: %w", err)
	}
	if cfg.ProtectedCIDRs, err = ParsePrefixes(s.ProtectedCIDRs); err != nil {
		return Config{}, fmt.Errorf("spec.protectedCIDRs: %w", err)
	}
	return cfg.WithDefaults(), nil
}

// BlockFromAPI converts an IPBlock spec into a Block with the given rule ID.
func BlockFromAPI(name string, ruleID uint32, generation int64, s v1alpha1.IPBlockSpec) (Block, error) {
	cidrs, err := ParsePrefixes(s.CIDRs)
	if err != nil {
		return Block{}, fmt.Errorf("IPBlock %q: spec.cidrs: %w", name, err)
	}
	b := Block{Name: name, RuleID: ruleID, Generation: generation, Direction: s.Direction, Mode: s.Mode, CIDRs: cidrs}
	if b.Direction == "" {
		b.Direction = DirectionSource
	}
	if b.Mode == "" {
		b.Mode = BlockModeEnforce
	}
	return b, nil
}

// ParsePrefixes parses CIDRs and bare addresses (a host prefix).
func ParsePrefixes(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for i, s := range ss {
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("[%d]: %q is not an IPv4 or IPv6 address or CIDR", i, s)
		}
		out = append(out, p)
	}
	return out, nil
}

// assignRuleIDs gives each named block a rule ID in 1..span. A block keeps
// the ID it has in keep (when that ID is in range and no other kept block
// has it); the others take one from a hash of their name (FNV-1a), probing
// upward past the IDs in use, in name order. The caller makes sure there
// are at most span names. Without anything kept, a block's ID depends only
// on its name and the names it collides with, so it (and its pinned
// counters) survives agent restarts and reloads whatever other blocks come
// and go; what is kept makes that hold through collisions too.
func assignRuleIDs(names []string, keep map[string]uint32, span uint32) map[string]uint32 {
	names = slices.Clone(names)
	slices.Sort(names)
	used := map[uint32]bool{}
	ids := make(map[string]uint32, len(names))
	for _, n := range names {
		if id, ok := keep[n]; ok && id >= 1 && id <= span && !used[id] {
			used[id] = true
			ids[n] = id
		}
	}
	for _, n := range names {
		if _, ok := ids[n]; ok {
			continue
		}
		h := fnv.New32a()
		h.Write([]byte(n))
		id := h.Sum32()%span + 1
		for used[id] {
			id = id%span + 1
		}
		used[id] = true
		ids[n] = id
	}
	return ids
}

func nestedString(obj map[string]any, keys ...string) (string, bool) {
	var cur any = obj
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		cur = m[k]
	}
	s, ok := cur.(string)
	return s, ok
}

func isComments(chunk []byte) bool {
	for _, line := range bytes.Split(chunk, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return false
		}
	}
	return true
}
