package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/internal/version"
)

// FieldManager is the field manager of the agent's status writes.
const FieldManager = "lanmonitor-agent"

// KubernetesOptions configure RunKubernetes.
type KubernetesOptions struct {
	// NodeName is this node's name (from the downward API).
	NodeName string
	// RESTConfig reaches the API server.
	RESTConfig *rest.Config
	// Serving says where and how the JSON API, the dashboard, /metrics and
	// the probes are served: by default HTTPS, every request but the
	// probes authenticated by TokenReview and authorized by
	// SubjectAccessReview (secureserve.Agent).
	Serving Serving
	// CleanupOnExit detaches and restores every interface when ctx ends.
	// By default the datapath stays (pinned) for the next agent pod to
	// adopt, so a pod restart or an upgrade never stops enforcement; the
	// interfaces are released when the LanMonitorNode stops naming them.
	CleanupOnExit bool
	// Manager options (pin root, network namespace, map sizes, logger,
	// the kernel).
	Manager Options
	// TuneMemoryLimit retunes the Go runtime's soft memory limit after each
	// blocklist change (see the function): for an agent that has its
	// process to itself, as lanmonitor-agent does. Agents sharing a process
	// (a benchmark of many simulated nodes) leave it off: each retune
	// forces a collection of the whole process's heap.
	TuneMemoryLimit bool
	// StatusSettle is how long the agent waits before writing its status,
	// plus up to as much again at random (see DefaultStatusSettle): zero
	// means DefaultStatusSettle, a negative value writes at once.
	StatusSettle time.Duration
	// HTTPClient and Mapper, when set, are shared with other agents of the
	// same process instead of each opening its own (many simulated nodes
	// in one benchmark; build the client from KubernetesRESTConfig); nil
	// means the agent's own, from RESTConfig.
	HTTPClient *http.Client
	Mapper     meta.RESTMapper
}

// KubernetesRESTConfig returns a copy of cfg with the agent's connection
// settings: response compression off. The API server gzips a watch stream
// that starts with its initial list (client-go's WatchList; the API
// server's WatchListCompression, kubernetes/kubernetes#140140) for its whole
// life, one gzip stream per watcher, so every IPBlock event would be
// compressed once per node; the events are small and the nodes near the API
// server (kubernetes/kubernetes#112296 added DisableCompression for such
// clients). Measured in BenchmarkController (docs/benchmarks.md).
func KubernetesRESTConfig(cfg *rest.Config) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.DisableCompression = true
	return out
}

// retryEvery is how often a failed interface is tried again.
const retryEvery = 5 * time.Second

// RunKubernetes is `lanmonitor-agent kubernetes`: the agent of one node. It
// watches its LanMonitorNode and its Node (caches narrowed to those two
// objects) and every IPBlock, decides itself which IPBlocks apply (their
// nodeSelector against the Node's labels; expiresAt against its wall
// clock), runs one Manager per monitored interface, and writes
// the node's report into the LanMonitorNode status: soon after what is
// applied changes (a new IPBlock generation, an interface attached or lost;
// StatusSettle), otherwise at most once per report interval, and never when
// nothing changed. It needs no leader election: it only ever writes its own
// node's status.
func RunKubernetes(ctx context.Context, o KubernetesOptions) error {
	if o.NodeName == "" {
		return errors.New("node name: set NODE_NAME (the downward API's spec.nodeName) or --node-name")
	}
	if o.Manager.Node == "" {
		o.Manager.Node = o.NodeName
	}
	o.Manager.setDefaults()
	o.RESTConfig = KubernetesRESTConfig(o.RESTConfig)
	if o.StatusSettle == 0 {
		o.StatusSettle = DefaultStatusSettle
	}
	if err := o.Manager.Kernel.CheckPrivileges(); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := errors.Join(v1alpha1.AddToScheme(scheme), corev1.AddToScheme(scheme)); err != nil {
		return err
	}
	a := &nodeAgent{o: o, log: o.Manager.Logger.With("node", o.NodeName), clock: clock.RealClock{},
		managers: map[string]*Manager{}, failures: map[string]string{}, wake: make(chan struct{}, 1), writeWake: make(chan struct{}, 1)}
	if !o.Serving.Disabled {
		lns, err := o.Serving.bind()
		if err != nil {
			return err
		}
		defer closeListeners(lns)
		guard, err := o.Serving.kubernetesGuard(o.RESTConfig, o.NodeName, o.Manager.Logger)
		if err != nil {
			return err
		}
		// Served from the start: /healthz answers while the agent waits
		// for the API server (a liveness probe does not restart it),
		// /readyz is 503 until the first sync, the API lists no
		// interface until then.
		reg := prometheus.NewRegistry()
		reg.MustRegister(NewCollector(a.list), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		srv, err := o.Serving.start(ctx, a.log, lns, NewHandler(a.list, reg, a.ready), guard, o.NodeName)
		if err != nil {
			return err
		}
		defer srv.shutdown()
		a.log.Info("kubernetes agent running", "listen", lns[0].Addr().String(), "scheme", srv.scheme())
	}

	// cache.New asks the API server for its resources. An agent started
	// during an API server outage waits for it rather than exit: nothing is
	// attached, replaced or unpinned before the first sync, so the pinned
	// datapath goes on enforcing what it did.
	var (
		c   cache.Cache
		err error
	)
	for backoff := 500 * time.Millisecond; ; backoff = min(2*backoff, retryEvery) {
		c, err = cache.New(o.RESTConfig, cache.Options{
			Scheme: scheme, HTTPClient: o.HTTPClient, Mapper: o.Mapper,
			ByObject: map[client.Object]cache.ByObject{
				&v1alpha1.LanMonitorNode{}: {Field: fields.OneTermEqualSelector("metadata.name", o.NodeName)},
				&corev1.Node{}:             {Field: fields.OneTermEqualSelector("metadata.name", o.NodeName)},
			},
		})
		if err == nil {
			break
		}
		o.Manager.Logger.Warn("API server not reachable yet; the pinned datapath keeps enforcing until the first sync", "error", err, "retryIn", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("cache: %w", err)
		case <-time.After(backoff):
		}
	}
	cl, err := client.New(o.RESTConfig, client.Options{Scheme: scheme, HTTPClient: o.HTTPClient, Mapper: o.Mapper})
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	a.cache, a.client = c, cl
	for _, obj := range []client.Object{&v1alpha1.LanMonitorNode{}, &v1alpha1.IPBlock{}, &corev1.Node{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer: %w", err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { a.poke() }, UpdateFunc: func(_, _ any) { a.poke() }, DeleteFunc: func(any) { a.poke() },
		}); err != nil {
			return err
		}
	}
	cacheCtx, stopCache := context.WithCancel(ctx)
	defer stopCache()
	go c.Start(cacheCtx)
	if !c.WaitForCacheSync(ctx) {
		return errors.New("cache did not sync with the API server")
	}
	var writer sync.WaitGroup
	defer writer.Wait()
	writer.Go(func() { a.writeStatus(ctx) })
	return errors.Join(a.run(ctx), a.closeAll(o.CleanupOnExit))
}

// nodeAgent runs the managers of one node.
type nodeAgent struct {
	o      KubernetesOptions
	log    *slog.Logger
	cache  client.Reader // the cache of RunKubernetes
	client client.Client
	wake   chan struct{}
	// clock is the wall clock expiresAt is compared with (see expiry.go).
	clock clock.PassiveClock

	mu       sync.Mutex
	managers map[string]*Manager // by monitor
	failures map[string]string   // by monitor: why its interface is not running
	retryAt  time.Time

	appliedBlocks string                 // blockGenerations of the last sync
	parsed        map[string]cachedBlock // by IPBlock name: the blocks of the last sync
	lifted        liftedBlocks           // the IPBlocks seen expired: never enforced again
	// ruleIDs are this node's rule IDs, by IPBlock name: kept while the
	// block applies, taken back from the LanMonitorNode status after a
	// restart (nil until then), so that counters pinned under an ID stay
	// the block's.
	ruleIDs map[string]uint32
	// overCapacity are the IPBlocks that apply but do not fit in the
	// datapath's rules (sorted by name): reported, not enforced.
	overCapacity []string

	synced     bool                           // the first sync is done (ready)
	lastStatus *v1alpha1.LanMonitorNodeStatus // the status last written
	lastUID    types.UID
	lastWrite  time.Time
	// pending is the newest status to write (writeStatus writes it, so
	// that applying a change never waits for the API server); writeWake
	// tells writeStatus; gone is the UID of a LanMonitorNode the API
	// server says is deleted.
	pending   *statusWrite
	writeWake chan struct{}
	gone      types.UID
}

// statusWrite is a status to write into LanMonitorNode name (UID uid);
// base is the status it had, for when the agent has written none yet.
type statusWrite struct {
	name   string
	uid    types.UID
	status v1alpha1.LanMonitorNodeStatus
	base   *v1alpha1.LanMonitorNodeStatus
}

func (a *nodeAgent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// list returns the managers in monitor order, for the API and metrics.
func (a *nodeAgent) list() []*Manager {
	a.mu.Lock()
	defer a.mu.Unlock()
	names := make([]string, 0, len(a.managers))
	for n := range a.managers {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*Manager, len(names))
	for i, n := range names {
		out[i] = a.managers[n]
	}
	return out
}

// ready: the cache synced and every interface asked for runs.
func (a *nodeAgent) ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.synced {
		return errors.New("waiting for the first sync with the API server")
	}
	for monitor, why := range a.failures {
		return fmt.Errorf("monitor %s: %s", monitor, why)
	}
	for monitor, m := range a.managers {
		if state, msg := m.State(); state != StateAttached {
			return fmt.Errorf("monitor %s: %s: %s", monitor, state, msg)
		}
	}
	return nil
}

// maxIdle bounds the time between two syncs without any event: the
// safety net for what no watch reports (a new default route moving the
// monitored interface), and the bound on how late a clock step or a
// suspend, which no timer sees, can make an IPBlock's expiry. Syncs of an
// unchanged configuration are cheap: the blocks are cached by generation
// and Manager.Apply skips a configuration already in force.
const maxIdle = time.Minute

// run syncs on every event of the watched objects (poke) and otherwise
// only when something is due: the next status report, a retry of a failed
// interface, an IPBlock's expiresAt, or maxIdle.
func (a *nodeAgent) run(ctx context.Context) error {
	for {
		wait, err := a.sync(ctx)
		if err != nil && ctx.Err() == nil {
			a.log.Error("sync", "error", err)
			wait = min(wait, time.Second) // an API error: try again soon
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-a.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// sync makes the managers match the LanMonitorNode and reports. It
// returns how long the agent may sleep until something is due.
func (a *nodeAgent) sync(ctx context.Context) (time.Duration, error) {
	now := a.clock.Now()
	var lmn v1alpha1.LanMonitorNode
	err := a.cache.Get(ctx, client.ObjectKey{Name: a.o.NodeName}, &lmn)
	if apierrors.IsNotFound(err) {
		lmn = v1alpha1.LanMonitorNode{} // nothing selects this node
	} else if err != nil {
		return maxIdle, err
	}
	a.mu.Lock()
	gone := lmn.UID != "" && a.gone == lmn.UID
	a.mu.Unlock()
	if gone {
		// The API server said the object is deleted, though the cache,
		// still catching up (after an API server outage its watch may
		// back off for a while), has it: nothing selects this node.
		lmn = v1alpha1.LanMonitorNode{}
	}
	var node corev1.Node
	if err := a.cache.Get(ctx, client.ObjectKey{Name: a.o.NodeName}, &node, client.UnsafeDisableDeepCopy); err != nil && !apierrors.IsNotFound(err) {
		return maxIdle, err
	}
	blocks, expiry, err := a.blocks(ctx, &lmn, labels.Set(node.Labels), now)
	if err != nil {
		return maxIdle, err
	}
	fresh := a.reconcile(lmn.Spec.Interfaces, blocks)
	if gens := blockGenerations(blocks); fresh || gens != a.appliedBlocks {
		a.appliedBlocks = gens
		if a.o.TuneMemoryLimit {
			TuneMemoryLimit() // after a blocklist change: the heap's size changed
		}
	}
	wait := expiryWait(now, expiry)
	a.mu.Lock()
	a.synced = true
	if len(a.failures) > 0 {
		wait = min(wait, max(time.Until(a.retryAt), 0)+10*time.Millisecond)
	}
	a.mu.Unlock()
	if lmn.Name == "" {
		return wait, nil
	}
	// The managers report every interval; the status follows them.
	wait = min(wait, reportInterval(lmn.Spec.Interfaces))
	a.report(&lmn, blocks, fresh)
	return wait, nil
}

// cachedBlock is a Block built from one generation of an IPBlock.
type cachedBlock struct {
	ruleID     uint32
	generation int64
	block      Block
}

// blocks are the IPBlocks that apply to this node at now (wall clock):
// every IPBlock whose nodeSelector matches the node's labels, once the
// node is monitored at all (its LanMonitorNode names an interface). A
// block that is being deleted, expired at now, or seen expired before
// (a.lifted: a clock stepped back does not enforce it again) is left out;
// past the datapath's rule capacity, the newest blocks are left out (and
// logged). expiry is the earliest expiresAt still to come (zero: none).
// Blocks are parsed once per generation and rule ID (a.parsed).
func (a *nodeAgent) blocks(ctx context.Context, lmn *v1alpha1.LanMonitorNode, nodeLabels labels.Set, now time.Time) ([]Block, time.Time, error) {
	var (
		out    []Block
		expiry time.Time
	)
	if a.lifted == nil {
		a.lifted = liftedBlocks{}
	}
	// The cache's own objects, not copies (100,000 CIDRs would be copied
	// on every sync): only read here.
	var list v1alpha1.IPBlockList
	if err := a.cache.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, time.Time{}, err
	}
	exists := make(map[string]*v1alpha1.IPBlock, len(list.Items))
	var applicable []*v1alpha1.IPBlock
	for i := range list.Items {
		ipb := &list.Items[i]
		exists[ipb.Name] = ipb
		if len(lmn.Spec.Interfaces) == 0 || ipb.DeletionTimestamp != nil {
			continue
		}
		sel, err := v1alpha1.NodeSelector(ipb.Spec.NodeSelector)
		if err != nil || !sel.Matches(nodeLabels) {
			continue
		}
		if e := ipb.Spec.ExpiresAt; e != nil {
			if a.lifted.expired(ipb, now) {
				continue
			}
			if expiry.IsZero() || e.Time.Before(expiry) {
				expiry = e.Time
			}
		}
		applicable = append(applicable, ipb)
	}
	// A lifted block is remembered while the same object and generation
	// exist, forgotten once it is deleted or changed.
	for name, k := range a.lifted {
		if ipb := exists[name]; ipb == nil || ipb.UID != k.uid || ipb.Generation != k.generation {
			delete(a.lifted, name)
		}
	}
	if capacity := min(int(a.o.Manager.MaxRules), v1alpha1.MaxNodeIPBlocks); len(applicable) > capacity {
		slices.SortFunc(applicable, func(x, y *v1alpha1.IPBlock) int {
			return cmp.Or(x.CreationTimestamp.Compare(y.CreationTimestamp.Time), cmp.Compare(x.Name, y.Name))
		})
		over := make([]string, 0, len(applicable)-capacity)
		for _, ipb := range applicable[capacity:] {
			over = append(over, ipb.Name)
		}
		slices.Sort(over)
		if !slices.Equal(over, a.overCapacity) {
			a.log.Error("more IPBlocks apply than the datapath holds rules (--max-rules); the newest are not enforced",
				"ipBlocks", len(applicable), "rules", capacity, "first", applicable[capacity].Name)
		}
		a.overCapacity = over
		applicable = applicable[:capacity]
	} else {
		a.overCapacity = nil
	}

	// Rule IDs: each block keeps its own; after a restart, the ones this
	// node reported (the counters pinned under them are the block's).
	if a.ruleIDs == nil {
		a.ruleIDs = map[string]uint32{}
		for _, r := range lmn.Status.IPBlocks {
			a.ruleIDs[r.Name] = uint32(r.RuleID)
		}
	}
	names := make([]string, len(applicable))
	for i, ipb := range applicable {
		names[i] = ipb.Name
	}
	a.ruleIDs = assignRuleIDs(names, a.ruleIDs, a.o.Manager.MaxRules)

	parsed := make(map[string]cachedBlock, len(applicable))
	for _, ipb := range applicable {
		id := a.ruleIDs[ipb.Name]
		c, ok := a.parsed[ipb.Name]
		if !ok || c.ruleID != id || c.generation != ipb.Generation {
			b, err := BlockFromAPI(ipb.Name, id, ipb.Generation, ipb.Spec)
			if err != nil {
				a.log.Error("IPBlock not applied", "ipblock", ipb.Name, "error", err)
				continue
			}
			c = cachedBlock{ruleID: id, generation: ipb.Generation, block: b}
		}
		parsed[ipb.Name] = c
		out = append(out, c.block)
	}
	a.parsed = parsed
	slices.SortFunc(out, func(x, y Block) int { return cmp.Compare(x.RuleID, y.RuleID) })
	return out, expiry, nil
}

// blockGenerations identifies a blocklist by its blocks' names and
// generations.
func blockGenerations(blocks []Block) string {
	var b strings.Builder
	for _, blk := range blocks {
		fmt.Fprintf(&b, "%s/%d,", blk.Name, blk.Generation)
	}
	return b.String()
}

// reconcile starts, reconfigures and stops managers. It reports whether
// what runs changed (so the status should be written soon, not at the next
// report interval).
func (a *nodeAgent) reconcile(specs []v1alpha1.NodeInterfaceSpec, blocks []Block) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	wanted := map[string]bool{}
	retry := time.Now().After(a.retryAt)
	inUse := map[string]string{} // interface -> monitor
	for monitor, m := range a.managers {
		inUse[m.Config().Interface] = monitor
	}
	for _, is := range specs {
		wanted[is.Monitor] = true
		cfg, err := a.interfaceConfig(is, blocks)
		if err != nil {
			changed = a.fail(is.Monitor, err.Error()) || changed
			continue
		}
		if m, ok := a.managers[is.Monitor]; ok {
			if m.Config().Interface == cfg.Interface {
				if err := m.Apply(cfg); err != nil {
					changed = a.fail(is.Monitor, "apply: "+err.Error()) || changed
				} else if _, failed := a.failures[is.Monitor]; failed {
					delete(a.failures, is.Monitor)
					changed = true
				}
				continue
			}
			// The interface moved (e.g. a new default route).
			a.stop(is.Monitor, true)
			delete(inUse, m.Config().Interface)
			changed = true
		}
		if other, taken := inUse[cfg.Interface]; taken && other != is.Monitor {
			changed = a.fail(is.Monitor, fmt.Sprintf("interface %s is already monitored by %s on this node", cfg.Interface, other)) || changed
			continue
		}
		if _, failed := a.failures[is.Monitor]; failed && !retry {
			continue
		}
		m, err := Start(cfg, a.o.Manager)
		if err != nil {
			changed = a.fail(is.Monitor, err.Error()) || changed
			a.retryAt = time.Now().Add(retryEvery)
			continue
		}
		a.managers[is.Monitor] = m
		inUse[cfg.Interface] = is.Monitor
		delete(a.failures, is.Monitor)
		changed = true
	}
	for monitor := range a.managers {
		if !wanted[monitor] {
			a.stop(monitor, true)
			changed = true
		}
	}
	for monitor := range a.failures {
		if !wanted[monitor] {
			delete(a.failures, monitor)
			changed = true
		}
	}
	return changed
}

// fail records why a monitor's interface does not run; it reports whether
// that is news. Called with a.mu held.
func (a *nodeAgent) fail(monitor, why string) bool {
	if a.failures[monitor] == why {
		return false
	}
	a.log.Error("interface not running", "monitor", monitor, "error", why)
	a.failures[monitor] = why
	return true
}

// stop closes a manager; with cleanup the interface is left as found.
// Called with a.mu held.
func (a *nodeAgent) stop(monitor string, cleanup bool) {
	if err := a.managers[monitor].Close(cleanup); err != nil {
		a.log.Error("release interface", "monitor", monitor, "error", err)
	}
	delete(a.managers, monitor)
}

func (a *nodeAgent) closeAll(cleanup bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	for monitor, m := range a.managers {
		err = errors.Join(err, m.Close(cleanup))
		delete(a.managers, monitor)
	}
	if cleanup {
		a.log.Info("stopped: programs detached, pins removed, promiscuity restored")
	} else {
		a.log.Info("stopped: programs left attached and pinned for the next agent")
	}
	return err
}

// interfaceConfig is the Config of one LanMonitorNode interface; an empty
// interface name means the interface of the default route.
func (a *nodeAgent) interfaceConfig(is v1alpha1.NodeInterfaceSpec, blocks []Block) (Config, error) {
	name := is.Interface
	if name == "" {
		var err error
		if name, err = a.o.Manager.Kernel.DefaultRouteInterface(); err != nil {
			return Config{}, err
		}
	}
	spec := v1alpha1.LanMonitorSpec{
		Interface: name, Promiscuous: &is.Promiscuous, XDPMode: is.XDPMode, InternalCIDRs: is.InternalCIDRs,
		TopN: is.TopN, ReportInterval: &is.ReportInterval, MaxTrackedSources: is.MaxTrackedSources,
		ProtectedCIDRs: is.ProtectedCIDRs, FlowSampling: is.FlowSampling,
	}
	cfg, err := InterfaceConfig(name, spec)
	if err != nil {
		return Config{}, err
	}
	cfg.Blocks = blocks
	return cfg, nil
}

// report has the status written when it changed: soon when fresh
// (writeStatus waits StatusSettle), otherwise at most once per report
// interval.
func (a *nodeAgent) report(lmn *v1alpha1.LanMonitorNode, blocks []Block, fresh bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.status(lmn, blocks)
	last := a.lastStatus
	if last == nil || a.lastUID != lmn.UID {
		last = &lmn.Status
		fresh = true
	}
	prev := last.DeepCopy()
	prev.LastReportTime = nil
	interval := reportInterval(lmn.Spec.Interfaces)
	if equality.Semantic.DeepEqual(*prev, st) || (!fresh && !appliedChanged(prev, &st) && time.Since(a.lastWrite) < interval) {
		return
	}
	a.pending = &statusWrite{name: lmn.Name, uid: lmn.UID, status: st, base: lmn.Status.DeepCopy()}
	select {
	case a.writeWake <- struct{}{}:
	default:
	}
}

// DefaultStatusSettle is how long writeStatus waits before a write, plus up
// to as much again at random (KubernetesOptions.StatusSettle). One API
// change (an IPBlock created) reaches every agent at once; without the
// wait, the first agents' status writes would compete with the API
// server's fan-out of that change to the others (each LanMonitorNode write
// is one more watch event, filtered against every agent's watch), and a
// thousand nodes would write in the same instant. Changes made together
// (kubectl apply of a directory) are reported in one write. Measured in
// BenchmarkController (docs/benchmarks.md).
const DefaultStatusSettle = 500 * time.Millisecond

// writeStatus writes the pending status, the newest one only, until ctx
// ends: StatusSettle (and up to as much again) after it is signalled, a
// merge patch of the status subresource from the status last written. A
// failed write is tried again a second later, unless a newer status
// replaced it; a LanMonitorNode that is gone (NotFound) releases every
// interface at the next sync.
func (a *nodeAgent) writeStatus(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.writeWake:
		}
		if d := a.o.StatusSettle; d > 0 {
			settle := time.NewTimer(d + rand.N(d))
			select {
			case <-ctx.Done():
				settle.Stop()
				return
			case <-settle.C:
			}
		}
		select { // the pending status taken below answers this signal too
		case <-a.writeWake:
		default:
		}
		a.mu.Lock()
		w := a.pending
		a.pending = nil
		var base *v1alpha1.LanMonitorNodeStatus
		if w != nil {
			base = w.base
			if a.lastStatus != nil && a.lastUID == w.uid {
				base = a.lastStatus.DeepCopy()
			}
		}
		a.mu.Unlock()
		if w == nil {
			continue
		}
		prev := base.DeepCopy()
		prev.LastReportTime = nil
		if equality.Semantic.DeepEqual(*prev, w.status) {
			continue // what the last write left
		}
		st := w.status
		now := metav1.Now()
		st.LastReportTime = &now
		old := &v1alpha1.LanMonitorNode{ObjectMeta: metav1.ObjectMeta{Name: w.name}, Status: *base}
		obj := old.DeepCopy()
		obj.Status = st
		err := a.client.Status().Patch(ctx, obj, client.MergeFrom(old), client.FieldOwner(FieldManager))
		switch {
		case err == nil:
			a.mu.Lock()
			a.lastStatus, a.lastUID, a.lastWrite = st.DeepCopy(), w.uid, time.Now()
			a.mu.Unlock()
		case apierrors.IsNotFound(err):
			a.log.Info("LanMonitorNode deleted; releasing every interface")
			a.mu.Lock()
			a.gone = w.uid
			a.mu.Unlock()
			a.poke()
		case ctx.Err() != nil:
			return
		default:
			a.log.Error("write the LanMonitorNode status; trying again in a second", "error", err)
			a.mu.Lock()
			if a.pending == nil {
				a.pending = w
			}
			a.mu.Unlock()
			time.AfterFunc(time.Second, func() {
				select {
				case a.writeWake <- struct{}{}:
				default:
				}
			})
		}
	}
}

// appliedChanged: an IPBlock generation applied, an attachment changed or
// the IPBlocks left out for capacity changed, which the controller waits
// for; counters alone are not.
func appliedChanged(prev, cur *v1alpha1.LanMonitorNodeStatus) bool {
	if len(prev.IPBlocks) != len(cur.IPBlocks) || len(prev.Interfaces) != len(cur.Interfaces) || prev.ObservedGeneration != cur.ObservedGeneration ||
		!slices.Equal(prev.IPBlocksOverCapacity, cur.IPBlocksOverCapacity) {
		return true
	}
	for i := range cur.IPBlocks {
		if prev.IPBlocks[i].Name != cur.IPBlocks[i].Name || prev.IPBlocks[i].Generation != cur.IPBlocks[i].Generation {
			return true
		}
	}
	for i := range cur.Interfaces {
		p, c := prev.Interfaces[i], cur.Interfaces[i]
		if p.Monitor != c.Monitor || p.Attached != c.Attached || p.XDPMode != c.XDPMode || p.Interface != c.Interface {
			return true
		}
	}
	return false
}

// reportInterval is the shortest report interval of the spec.
func reportInterval(specs []v1alpha1.NodeInterfaceSpec) time.Duration {
	d := DefaultReportInterval
	for i, is := range specs {
		if i == 0 || is.ReportInterval.Duration < d {
			d = is.ReportInterval.Duration
		}
	}
	return max(d, time.Second)
}

// status is the node's report. An IPBlock is reported applied (with the
// generation of the IPBlock that is in the maps) only when every interface
// of the node runs with it. Called with a.mu held.
func (a *nodeAgent) status(lmn *v1alpha1.LanMonitorNode, blocks []Block) v1alpha1.LanMonitorNodeStatus {
	st := v1alpha1.LanMonitorNodeStatus{ObservedGeneration: lmn.Generation, AgentVersion: version.Version}
	allRunning := len(a.failures) == 0
	type sums struct{ matched, dropped int64 }
	perBlock := map[string]*sums{}
	exempted := map[string][]string{}
	for _, is := range lmn.Spec.Interfaces {
		ist := v1alpha1.NodeInterfaceStatus{Monitor: is.Monitor, Interface: is.Interface}
		m, ok := a.managers[is.Monitor]
		if !ok {
			ist.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: "NotRunning",
				Message: truncate(a.failures[is.Monitor]), ObservedGeneration: lmn.Generation}}
			st.Interfaces = append(st.Interfaces, ist)
			continue
		}
		r := m.Report()
		state, msg := m.State()
		ist.Interface, ist.Ifindex = r.Interface, int32(r.Ifindex)
		ist.Attached = state == StateAttached
		ist.XDPMode, ist.XDPModeReason = r.XDPMode, truncate(r.XDPModeReason)
		ist.Promiscuous = r.Promiscuous
		ist.BitsPerSecond, ist.PacketsPerSecond = int64(r.BitsPerSecond), int64(r.PacketsPerSecond)
		ist.Rate = v1alpha1.FormatBitRate(ist.BitsPerSecond)
		ist.TrackedSources, ist.TrackedSourcesCapacity = int64(r.TrackedSources), int64(r.TrackedSourcesCapacity)
		ist.Totals = v1alpha1.TrafficTotals{
			Packets: int64(r.Stats.Packets), Bytes: int64(r.Stats.Bytes), Dropped: int64(r.Stats.Dropped),
			Malformed: int64(r.Stats.Malformed), NonIP: int64(r.Stats.NonIP), Local: int64(r.Stats.Local), Snooped: int64(r.Stats.Snooped),
		}
		for _, t := range r.TopTalkers {
			ist.TopTalkers = append(ist.TopTalkers, v1alpha1.Talker{Address: t.Address.String(), Internal: t.Internal,
				Packets: int64(t.Packets), Bytes: int64(t.Bytes), BitsPerSecond: int64(t.BitsPerSecond), PacketsPerSecond: int64(t.PacketsPerSecond)})
		}
		cond := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Attached", Message: truncate(msg), ObservedGeneration: lmn.Generation}
		if state != StateAttached {
			cond.Status, cond.Reason = metav1.ConditionFalse, string(state)
			allRunning = false
		}
		ist.Conditions = []metav1.Condition{cond}
		for _, rr := range r.Rules {
			s := perBlock[rr.Name]
			if s == nil {
				s = &sums{}
				perBlock[rr.Name] = s
			}
			s.matched += int64(rr.Matched)
			s.dropped += int64(rr.Dropped)
			exempted[rr.Name] = mergeSorted(exempted[rr.Name], rr.ExemptedAddresses)
		}
		st.Interfaces = append(st.Interfaces, ist)
	}
	if allRunning && len(a.managers) > 0 {
		for _, b := range blocks {
			s := perBlock[b.Name]
			if s == nil {
				s = &sums{}
			}
			st.IPBlocks = append(st.IPBlocks, v1alpha1.NodeIPBlockStatus{Name: b.Name, RuleID: int32(b.RuleID), Generation: b.Generation,
				MatchedPackets: s.matched, DroppedPackets: s.dropped, ExemptedAddresses: exempted[b.Name]})
		}
	}
	if len(a.managers) > 0 {
		st.IPBlocksOverCapacity = slices.Clone(a.overCapacity[:min(len(a.overCapacity), v1alpha1.MaxNodeIPBlocksOverCapacity)])
	}
	ready := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "AllInterfacesAttached", ObservedGeneration: lmn.Generation}
	if !allRunning {
		ready.Status, ready.Reason = metav1.ConditionFalse, "InterfacesNotAttached"
	}
	st.Conditions = setCondition(lmn.Status.Conditions, ready)
	for i := range st.Interfaces {
		old := findInterface(lmn.Status.Interfaces, st.Interfaces[i].Monitor)
		st.Interfaces[i].Conditions = setCondition(old, st.Interfaces[i].Conditions[0])
	}
	return st
}

// setCondition sets c in a copy of conds as meta.SetStatusCondition does
// (lastTransitionTime kept unless the status changes), with times at the
// second precision the API server stores, so that an unchanged status
// compares equal to what was written.
func setCondition(conds []metav1.Condition, c metav1.Condition) []metav1.Condition {
	out := slices.Clone(conds)
	meta.SetStatusCondition(&out, c)
	for i := range out {
		out[i].LastTransitionTime = out[i].LastTransitionTime.Rfc3339Copy()
	}
	return out
}

func findInterface(list []v1alpha1.NodeInterfaceStatus, monitor string) []metav1.Condition {
	for _, i := range list {
		if i.Monitor == monitor {
			return i.Conditions
		}
	}
	return nil
}

func mergeSorted(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// truncate keeps a message within the API's 32768-character bound with room
// to spare.
func truncate(s string) string {
	if len(s) > 1024 {
		return s[:1021] + "..."
	}
	return s
}
