// Package fakeagent simulates lanmonitor node agents for controller tests
// and benchmarks against a real API server. An Agent behaves like the real
// agent in Kubernetes mode, minus the datapath: it watches its own
// LanMonitorNode through a cache narrowed to that object (field selector on
// metadata.name), "applies" a new spec after a configurable delay, and writes
// the node's status with a merge patch of the status subresource: at once
// when what is applied changed, otherwise at most once per report interval
// and only when something changed. What it reports (interfaces, talkers,
// totals, per-rule counters) is set by the test.
package fakeagent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// FieldManager is the field manager of the simulated agents' writes.
const FieldManager = "lanmonitor-agent"

// Shared holds what the agents of one test share: the API server
// connection (one HTTP client and REST mapper, as separate processes would
// not share them but tests should not open 100 of each).
type Shared struct {
	Config     *rest.Config
	Scheme     *runtime.Scheme
	HTTPClient *http.Client
	Mapper     meta.RESTMapper
	Client     client.Client
}

// NewShared prepares the shared connection.
func NewShared(cfg *rest.Config, scheme *runtime.Scheme) (*Shared, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, hc)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme, HTTPClient: hc, Mapper: mapper})
	if err != nil {
		return nil, err
	}
	return &Shared{Config: cfg, Scheme: scheme, HTTPClient: hc, Mapper: mapper, Client: c}, nil
}

// Interface is what the simulated datapath measures on one monitored
// interface. Zero values report an attached native-mode interface with no traffic.
type Interface struct {
	Interface        string // resolved name; default: the spec's, else "eth0"
	NotAttached      bool
	XDPMode          lanmonitorv1alpha1.XDPMode // default Native
	TopTalkers       []lanmonitorv1alpha1.Talker
	Totals           lanmonitorv1alpha1.TrafficTotals
	BitsPerSecond    int64
	PacketsPerSecond int64
}

// Counters are the simulated per-rule counters of one IPBlock.
type Counters struct {
	Matched, Dropped int64
	Exempted         []string
}

// Options tune an Agent.
type Options struct {
	// ApplyDelay returns how long applying a new spec takes (the datapath
	// update); nil means no delay.
	ApplyDelay func() time.Duration
	// ReportInterval overrides the interval of the periodic report
	// (default: the shortest reportInterval of the spec).
	ReportInterval time.Duration
}

// Agent is one simulated node agent.
type Agent struct {
	Node string

	sh     *Shared
	opts   Options
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{}
	cache  cache.Cache

	mu         sync.Mutex
	ifaces     map[string]Interface // by monitor
	counters   map[string]Counters  // by IPBlock name
	issued     map[string]int64     // by IPBlock name: highest generation a write reporting it applied was issued for
	lastStatus *lanmonitorv1alpha1.LanMonitorNodeStatus
	lastUID    types.UID
	lastWrite  time.Time

	writes atomic.Int64
	errs   atomic.Int64
}

// Start starts an agent for node; it runs until Stop.
func Start(ctx context.Context, sh *Shared, node string, opts Options) (*Agent, error) {
	c, err := cache.New(sh.Config, cache.Options{
		Scheme:     sh.Scheme,
		Mapper:     sh.Mapper,
		HTTPClient: sh.HTTPClient,
		ByObject: map[client.Object]cache.ByObject{
			&lanmonitorv1alpha1.LanMonitorNode{}: {Field: fields.OneTermEqualSelector("metadata.name", node)},
		},
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	a := &Agent{
		Node: node, sh: sh, opts: opts, cancel: cancel, cache: c,
		done: make(chan struct{}), wake: make(chan struct{}, 1),
		ifaces: map[string]Interface{}, counters: map[string]Counters{}, issued: map[string]int64{},
	}
	inf, err := c.GetInformer(ctx, &lanmonitorv1alpha1.LanMonitorNode{})
	if err != nil {
		cancel()
		return nil, err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.poke() },
		UpdateFunc: func(_, _ any) { a.poke() },
		DeleteFunc: func(any) { a.poke() },
	}); err != nil {
		cancel()
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		cancel()
		return nil, errors.New("fakeagent: cache did not sync")
	}
	go a.run(ctx)
	return a, nil
}

// Stop stops the agent and waits for it.
func (a *Agent) Stop() {
	a.cancel()
	<-a.done
}

// SetInterface sets what the agent reports for monitor; it is written with
// the next periodic report.
func (a *Agent) SetInterface(monitor string, r Interface) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ifaces[monitor] = r
}

// SetCounters sets the per-rule counters reported for an IPBlock.
func (a *Agent) SetCounters(block string, c Counters) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counters[block] = c
}

// Issued returns the highest generation of block that a status write
// reporting it applied was issued for (the write may still be in flight).
func (a *Agent) Issued(block string) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.issued[block]
}

// Writes returns the number of successful status writes.
func (a *Agent) Writes() int64 { return a.writes.Load() }

// Errors returns the number of failed status writes.
func (a *Agent) Errors() int64 { return a.errs.Load() }

// LastStatus returns a copy of the last status written.
func (a *Agent) LastStatus() *lanmonitorv1alpha1.LanMonitorNodeStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastStatus.DeepCopy()
}

func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Agent) run(ctx context.Context) {
	defer close(a.done)
	var applied *lanmonitorv1alpha1.LanMonitorNode // the spec in the "datapath"
	tick := time.NewTimer(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		case <-tick.C:
		}
		var lmn lanmonitorv1alpha1.LanMonitorNode
		if err := a.cache.Get(ctx, client.ObjectKey{Name: a.Node}, &lmn); err != nil {
			applied = nil // no LanMonitorNode: nothing to run
			tick.Reset(time.Second)
			continue
		}
		fresh := applied == nil || applied.UID != lmn.UID || applied.Generation != lmn.Generation
		if fresh {
			if a.opts.ApplyDelay != nil {
				select {
				case <-ctx.Done():
					return
				case <-time.After(a.opts.ApplyDelay()):
				}
				// Apply the newest spec, which may have moved on meanwhile.
				if err := a.cache.Get(ctx, client.ObjectKey{Name: a.Node}, &lmn); err != nil {
					continue
				}
			}
			applied = lmn.DeepCopy()
		}
		interval := a.interval(applied)
		tick.Reset(interval)
		if err := a.report(ctx, &lmn, applied, fresh, interval); err != nil && ctx.Err() == nil {
			a.errs.Add(1)
		}
	}
}

// interval is the report interval: the override, else the spec's shortest.
func (a *Agent) interval(spec *lanmonitorv1alpha1.LanMonitorNode) time.Duration {
	if a.opts.ReportInterval > 0 {
		return a.opts.ReportInterval
	}
	d := time.Duration(0)
	for _, i := range spec.Spec.Interfaces {
		if d == 0 || i.ReportInterval.Duration < d {
			d = i.ReportInterval.Duration
		}
	}
	if d <= 0 {
		d = lanmonitorv1alpha1.DefaultReportInterval
	}
	return d
}

// report computes the status from the applied spec and what was set, and
// writes it if it changed: at once when a new spec was just applied (fresh),
// else at most once per interval.
func (a *Agent) report(ctx context.Context, current, applied *lanmonitorv1alpha1.LanMonitorNode, fresh bool, interval time.Duration) error {
	a.mu.Lock()
	st := lanmonitorv1alpha1.LanMonitorNodeStatus{ObservedGeneration: applied.Generation}
	for _, is := range applied.Spec.Interfaces {
		r := a.ifaces[is.Monitor]
		name := r.Interface
		if name == "" {
			name = is.Interface
		}
		if name == "" {
			name = "eth0"
		}
		mode := r.XDPMode
		if mode == "" {
			mode = lanmonitorv1alpha1.XDPModeNative
		}
		talkers := slices.Clone(r.TopTalkers)
		if len(talkers) > int(is.TopN) {
			talkers = talkers[:is.TopN]
		}
		st.Interfaces = append(st.Interfaces, lanmonitorv1alpha1.NodeInterfaceStatus{
			Monitor: is.Monitor, Interface: name, Ifindex: 2, Attached: !r.NotAttached, XDPMode: mode,
			Promiscuous: is.Promiscuous, TopTalkers: talkers, Totals: r.Totals,
			TrackedSources: int64(len(r.TopTalkers)), TrackedSourcesCapacity: int64(is.MaxTrackedSources),
			BitsPerSecond: r.BitsPerSecond, PacketsPerSecond: r.PacketsPerSecond,
			Rate: lanmonitorv1alpha1.FormatBitRate(r.BitsPerSecond),
		})
	}
	for _, ref := range applied.Spec.IPBlocks {
		c := a.counters[ref.Name]
		st.IPBlocks = append(st.IPBlocks, lanmonitorv1alpha1.NodeIPBlockStatus{
			Name: ref.Name, RuleID: ref.RuleID, Generation: ref.Generation,
			MatchedPackets: c.Matched, DroppedPackets: c.Dropped, ExemptedAddresses: c.Exempted,
		})
	}
	last := a.lastStatus
	if last == nil || a.lastUID != current.UID {
		last = current.Status.DeepCopy() // what a previous agent (or object) had
	}
	prev := last.DeepCopy()
	prev.LastReportTime = nil
	if equality.Semantic.DeepEqual(*prev, st) || (!fresh && time.Since(a.lastWrite) < interval) {
		a.mu.Unlock()
		return nil
	}
	for _, b := range st.IPBlocks {
		a.issued[b.Name] = max(a.issued[b.Name], b.Generation)
	}
	a.mu.Unlock()

	now := metav1.Now()
	st.LastReportTime = &now
	base := &lanmonitorv1alpha1.LanMonitorNode{ObjectMeta: metav1.ObjectMeta{Name: a.Node}, Status: *last}
	obj := base.DeepCopy()
	obj.Status = st
	if err := a.sh.Client.Status().Patch(ctx, obj, client.MergeFrom(base), client.FieldOwner(FieldManager)); err != nil {
		return fmt.Errorf("patch LanMonitorNode %q status: %w", a.Node, err)
	}
	a.writes.Add(1)
	a.mu.Lock()
	a.lastStatus = st.DeepCopy()
	a.lastUID = current.UID
	a.lastWrite = time.Now()
	a.mu.Unlock()
	return nil
}
