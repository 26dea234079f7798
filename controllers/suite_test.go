package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/controllers"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

// env is the API server shared by the tests of this package. Tests run one
// at a time, each with its own controller, and remove what they created.
var env *testenv.Env

func TestMain(m *testing.M) {
	var w io.Writer = io.Discard
	if os.Getenv("LANMONITOR_TEST_LOG") != "" {
		w = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(w), zap.UseDevMode(true)))
	testenv.Main(m, &env)
}

// writeCounter counts the controller's API writes by verb and kind:
// successful ones under "verb *pkg.Kind[/sub]", failed ones (conflicts
// included) under "failed verb *pkg.Kind[/sub]".
type writeCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (w *writeCounter) add(verb string, obj client.Object, sub string, err error) error {
	key := fmt.Sprintf("%s %T", verb, obj)
	if sub != "" {
		key += "/" + sub
	}
	if err != nil {
		key = "failed " + key
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.counts[key]++
	return err
}

func (w *writeCounter) snapshot() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int, len(w.counts))
	for k, v := range w.counts {
		out[k] = v
	}
	return out
}

// noWatch makes the manager's client (which does not watch) fit interceptor.NewClient.
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("the manager's client does not watch")
}

// controller is a running controller manager.
type controller struct {
	writes *writeCounter
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error // what the manager returned
}

// controllerConfig is the controller's connection: the production client
// rate limits (the command's --kube-api-qps and --kube-api-burst defaults).
func controllerConfig() *rest.Config {
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 100, 200
	return cfg
}

// startController starts the controllers in a new manager, with leader
// election when elect is set, and stops it when the test ends.
func startController(t testing.TB, elect bool) *controller {
	t.Helper()
	return startControllerWith(t, elect, controllers.Options{})
}

// startControllerWith is startController with the controllers' options.
func startControllerWith(t testing.TB, elect bool, opts controllers.Options) *controller {
	t.Helper()
	wc := &writeCounter{counts: map[string]int{}}
	mgr, err := ctrl.NewManager(controllerConfig(), ctrl.Options{
		Scheme:                        env.Scheme,
		Cache:                         controllers.CacheOptions(),
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                elect,
		LeaderElectionID:              "lanmonitor-controller.lanmonitor.io",
		LeaderElectionNamespace:       metav1.NamespaceDefault,
		LeaderElectionReleaseOnCancel: true,
		// Several managers run in one test binary.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		NewClient: func(cfg *rest.Config, o client.Options) (client.Client, error) {
			c, err := client.New(cfg, o)
			if err != nil {
				return nil, err
			}
			return interceptor.NewClient(noWatch{c}, interceptor.Funcs{
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					return wc.add("create", obj, "", c.Create(ctx, obj, opts...))
				},
				Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
					return wc.add("update", obj, "", c.Update(ctx, obj, opts...))
				},
				Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
					return wc.add("patch", obj, "", c.Patch(ctx, obj, p, opts...))
				},
				Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
					return wc.add("delete", obj, "", c.Delete(ctx, obj, opts...))
				},
				SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
					return wc.add("patch", obj, sub, c.SubResource(sub).Patch(ctx, obj, p, opts...))
				},
				SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
					return wc.add("update", obj, sub, c.SubResource(sub).Update(ctx, obj, opts...))
				},
			}), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(mgr, opts); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &controller{writes: wc, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		c.stop()
		if c.err != nil {
			t.Errorf("controller manager: %v", c.err)
		}
	})
	return c
}

// stop stops the manager and waits for it; calling it again is a no-op.
func (c *controller) stop() {
	c.once.Do(func() {
		c.cancel()
		c.err = <-c.done
	})
}

// cleanup deletes every lanmonitor object and every node, and waits until
// they are gone (envtest runs no garbage collector).
func cleanup(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	c := env.Client
	for _, o := range []client.Object{
		&lanmonitorv1alpha1.LanMonitor{}, &lanmonitorv1alpha1.IPBlock{},
		&lanmonitorv1alpha1.LanMonitorNode{}, &corev1.Node{},
	} {
		if err := c.DeleteAllOf(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete all %T: %v", o, err)
		}
	}
	eventually(t, 30*time.Second, func() error {
		for _, l := range []client.ObjectList{
			&lanmonitorv1alpha1.LanMonitorList{}, &lanmonitorv1alpha1.IPBlockList{},
			&lanmonitorv1alpha1.LanMonitorNodeList{}, &corev1.NodeList{},
		} {
			if err := c.List(ctx, l); err != nil {
				return err
			}
			if n := len(mustItems(l)); n > 0 {
				return fmt.Errorf("%d %T left", n, l)
			}
		}
		return nil
	})
}

func mustItems(l client.ObjectList) []any {
	switch l := l.(type) {
	case *lanmonitorv1alpha1.LanMonitorList:
		return anySlice(l.Items)
	case *lanmonitorv1alpha1.IPBlockList:
		return anySlice(l.Items)
	case *lanmonitorv1alpha1.LanMonitorNodeList:
		return anySlice(l.Items)
	case *corev1.NodeList:
		return anySlice(l.Items)
	}
	panic(fmt.Sprintf("unexpected %T", l))
}

func anySlice[T any](in []T) []any {
	out := make([]any, len(in))
	for i := range in {
		out[i] = in[i]
	}
	return out
}

// eventually polls f every 20ms until it returns nil, failing the test with
// f's last error after timeout.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	testenv.Eventually(t, timeout, 20*time.Millisecond, "condition", f)
}

// node describes a Node to create.
type node struct {
	name   string
	labels map[string]string
	ips    []string // InternalIP addresses
}

func createNodes(t testing.TB, nodes ...node) {
	t.Helper()
	ctx := context.Background()
	for _, n := range nodes {
		obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: n.labels}}
		for _, ip := range n.ips {
			obj.Status.Addresses = append(obj.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
		}
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
}

func create(t testing.TB, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
}

// lmnNames lists the LanMonitorNode names, sorted.
func lmnNames(t testing.TB) []string {
	t.Helper()
	var l lanmonitorv1alpha1.LanMonitorNodeList
	if err := env.Client.List(context.Background(), &l); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range l.Items {
		out = append(out, n.Name)
	}
	return out
}

// apiServerEndpoint waits for the API server to publish its endpoint in the
// `kubernetes` EndpointSlice and returns the first address.
func apiServerEndpoint(t testing.TB) string {
	t.Helper()
	var addr string
	eventually(t, 30*time.Second, func() error {
		var l discoveryv1.EndpointSliceList
		if err := env.Client.List(context.Background(), &l, client.InNamespace("default"),
			client.MatchingLabels{"kubernetes.io/service-name": "kubernetes"}); err != nil {
			return err
		}
		for _, s := range l.Items {
			for _, ep := range s.Endpoints {
				if len(ep.Addresses) > 0 {
					addr = ep.Addresses[0]
					return nil
				}
			}
		}
		return fmt.Errorf("no endpoint in %d kubernetes EndpointSlices", len(l.Items))
	})
	return addr
}

// observe calls fn, from one goroutine, with every version of every object
// of obj's kind that an informer sees (it re-watches when a watch ends),
// until the returned stop is called.
func observe(t testing.TB, obj client.Object, fn func(client.Object)) (stop func()) {
	t.Helper()
	c, err := cache.New(env.Config, cache.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	inf, err := c.GetInformer(ctx, obj)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // the informer calls handlers from one goroutine; this only orders stop
	call := func(o any) {
		if co, ok := o.(client.Object); ok {
			mu.Lock()
			defer mu.Unlock()
			fn(co)
		}
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    call,
		UpdateFunc: func(_, n any) { call(n) },
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Start(ctx)
	}()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("observer cache did not sync")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = inf.RemoveEventHandler(reg)
			cancel()
			<-done
			mu.Lock() // wait for a handler in progress
			mu.Unlock()
		})
	}
	t.Cleanup(stop)
	return stop
}
