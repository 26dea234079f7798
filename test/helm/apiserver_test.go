package helm

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

const fieldOwner = client.FieldOwner("lanmonitor-helm-test")

var (
	schemeOnce sync.Once
	testScheme *runtime.Scheme

	adminOnce   sync.Once
	adminClient client.WithWatch
	adminErr    error
)

// scheme knows the built-in types, lanmonitor.io and
// apiextensions.k8s.io (CustomResourceDefinitions).
func scheme() *runtime.Scheme {
	schemeOnce.Do(func() {
		testScheme = testenv.Scheme()
		utilruntime.Must(apiextensionsv1.AddToScheme(testScheme))
	})
	return testScheme
}

// admin is a client of the API server's administrator.
func admin(t testing.TB) client.WithWatch {
	t.Helper()
	adminOnce.Do(func() { adminClient, adminErr = client.NewWithWatch(env.Config, client.Options{Scheme: scheme()}) })
	if adminErr != nil {
		t.Fatal(adminErr)
	}
	return adminClient
}

// warnings collects the API server's warnings (PodSecurity's among them).
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

// warningClient is a client whose warnings are collected rather than logged.
func warningClient(t testing.TB) (client.Client, *warnings) {
	t.Helper()
	w := &warnings{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = nil
	cfg.WarningHandlerWithContext = w
	c, err := client.New(cfg, client.Options{Scheme: scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c, w
}

// createNamespace creates a namespace with Pod Security labels.
func createNamespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := admin(t).Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// installServiceMonitorCRD installs a minimal monitoring.coreos.com/v1
// ServiceMonitor CRD (no schema: the Prometheus Operator's own CRD is not a
// dependency of this repository), so that the chart's ServiceMonitors can be
// sent to the API server.
var serviceMonitorOnce sync.Once

func installServiceMonitorCRD(t testing.TB) {
	t.Helper()
	serviceMonitorOnce.Do(func() {
		t.Log("installing a minimal ServiceMonitor CRD (schemaless) for the ServiceMonitor dry-runs")
		crd := &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: "servicemonitors.monitoring.coreos.com"},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: "monitoring.coreos.com",
				Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "servicemonitors", Singular: "servicemonitor", Kind: "ServiceMonitor", ListKind: "ServiceMonitorList"},
				Scope: apiextensionsv1.NamespaceScoped,
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
					Name: "v1", Served: true, Storage: true,
					Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
						Type: "object", XPreserveUnknownFields: ptrTo(true),
					}},
				}},
			},
		}
		ctx := context.Background()
		if err := admin(t).Create(ctx, crd); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create ServiceMonitor CRD: %v", err)
		}
		testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, "ServiceMonitor CRD served", func() error {
			var l unstructured.UnstructuredList
			l.SetAPIVersion("monitoring.coreos.com/v1")
			l.SetKind("ServiceMonitorList")
			return admin(t).List(ctx, &l)
		})
	})
}

func ptrTo[T any](v T) *T { return &v }

// TestDryRun renders every value set and sends every rendered object, CRDs
// included, to the API server with server-side apply and dryRun=All: the
// API server's own validation and admission, without changing anything.
// The namespace warns on the restricted Pod Security Standard, so the
// controller Deployment must come back without warnings.
func TestDryRun(t *testing.T) {
	ctx := context.Background()
	c, warn := warningClient(t)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			ns := "helm-" + vs.name
			createNamespace(t, ns, map[string]string{
				"pod-security.kubernetes.io/enforce": "privileged",
				"pod-security.kubernetes.io/warn":    "restricted",
			})
			objs := decode(t, template(t, release, ns, append([]string{"--include-crds"}, vs.args...)...))
			kinds := map[string]int{}
			for _, o := range objs {
				if o.GetKind() == "ServiceMonitor" {
					installServiceMonitorCRD(t)
				}
				warn.take()
				if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), fieldOwner, client.ForceOwnership, client.DryRunAll); err != nil {
					t.Errorf("dry-run apply %s %s: %v", o.GetKind(), o.GetName(), err)
					continue
				}
				kinds[o.GetKind()]++
				w := warn.take()
				switch {
				case (o.GetKind() == "Deployment" || o.GetKind() == "Job") && vs.controllerWarning != "":
					// The drain hook Job runs like the controller.
					if len(w) != 1 || w[0] != vs.controllerWarning {
						t.Errorf("%s %s: API server warnings %q, want exactly %q", o.GetKind(), o.GetName(), w, vs.controllerWarning)
					}
				case o.GetKind() == "DaemonSet":
					// Host network, hostPath and capabilities are what the
					// agent is for: log what restricted would refuse.
					t.Logf("agent DaemonSet against the restricted profile (expected): %s", strings.Join(w, "; "))
				default:
					if len(w) > 0 {
						t.Errorf("%s %s: API server warnings: %s", o.GetKind(), o.GetName(), strings.Join(w, "; "))
					}
				}
			}
			t.Logf("accepted: %v", kinds)
			if kinds["CustomResourceDefinition"] != 3 || kinds["DaemonSet"] != 1 || kinds["Deployment"] != 1 {
				t.Errorf("accepted %v, want 3 CRDs, a DaemonSet and a Deployment", kinds)
			}
		})
	}
}

// podFrom makes a Pod of a workload's pod template, as its controller would.
func podFrom(name, ns string, tmpl corev1.PodTemplateSpec, nodeName string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: tmpl.Labels, Annotations: tmpl.Annotations},
		Spec:       *tmpl.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = nodeName
	return pod
}

// ensureServiceAccount creates (for real) the ServiceAccount a pod runs as:
// the ServiceAccount admission plugin refuses pods of a missing one.
func ensureServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if err := admin(t).Create(context.Background(), sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// TestPodAdmission creates (dry-run) the pods the Deployment and the
// DaemonSet would create, so that pod-only admission runs too: Priority
// (system-node-critical resolves), ServiceAccount, and PodSecurity in
// enforce mode. The controller pod passes restricted; the agent pod needs
// the privileged level (host network, hostPath, capabilities), which the
// chart's NOTES tell the user.
func TestPodAdmission(t *testing.T) {
	ctx := context.Background()
	objs := decode(t, template(t, release, namespace))
	var ds appsv1.DaemonSet
	var dep appsv1.Deployment
	typed(t, find(t, objs, "DaemonSet", "-agent"), &ds)
	typed(t, find(t, objs, "Deployment", "-controller"), &dep)

	for _, tc := range []struct {
		level   string
		pod     func(ns string) *corev1.Pod
		refused string // empty: admitted
	}{
		{"restricted", func(ns string) *corev1.Pod { return podFrom("controller", ns, dep.Spec.Template, "") }, ""},
		{"privileged", func(ns string) *corev1.Pod { return podFrom("agent", ns, ds.Spec.Template, "node-a") }, ""},
		{"baseline", func(ns string) *corev1.Pod { return podFrom("agent", ns, ds.Spec.Template, "node-a") }, "host namespaces (hostNetwork=true)"},
	} {
		ns := "helm-pods-" + tc.level
		pod := tc.pod(ns)
		t.Run(pod.Name+"-"+tc.level, func(t *testing.T) {
			createNamespace(t, ns, map[string]string{"pod-security.kubernetes.io/enforce": tc.level})
			ensureServiceAccount(t, ns, pod.Spec.ServiceAccountName)
			err := admin(t).Create(ctx, pod, client.DryRunAll)
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("%s pod refused in a %s namespace: %v", pod.Name, tc.level, err)
			case tc.refused != "" && err == nil:
				t.Fatalf("%s pod admitted in a %s namespace", pod.Name, tc.level)
			case tc.refused != "" && !strings.Contains(err.Error(), tc.refused):
				t.Fatalf("%s pod refused in a %s namespace for another reason: %v", pod.Name, tc.level, err)
			}
			if pod.Spec.PriorityClassName != "" && tc.refused == "" && (pod.Spec.Priority == nil || *pod.Spec.Priority == 0) {
				t.Errorf("priority of %s not resolved from %s", pod.Name, pod.Spec.PriorityClassName)
			}
		})
	}
}

// TestInstall installs the chart for real with helm install, then checks
// that the RBAC it created is what the components need and no more, by
// acting as their ServiceAccounts (impersonation): the agent reads its
// LanMonitorNode and the IPBlocks and patches its own node's status, and
// nothing else; the controller's leader election works with its Role. Then
// helm upgrade and helm uninstall.
func TestInstall(t *testing.T) {
	ctx := context.Background()
	const rel, ns = "it", "helm-install"
	kubeconfig := writeKubeconfig(t)
	helm := func(args ...string) string {
		t.Helper()
		out, stderr, err := runHelm(t, append(args, "--kubeconfig", kubeconfig)...)
		if err != nil {
			t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
		}
		return out
	}
	out := helm("install", rel, chartDir(t), "--namespace", ns, "--create-namespace",
		"--set", "agent.image.pullPolicy=Never", "--set", "controller.image.pullPolicy=Never")
	if _, notes, ok := strings.Cut(out, "NOTES:\n"); !ok || !strings.Contains(notes, "capabilities BPF NET_ADMIN PERFMON:") ||
		!strings.Contains(notes, "daemonset/"+rel+"-lanmonitor-agent") {
		t.Errorf("helm install printed unexpected NOTES:\n%s", out)
	} else {
		t.Logf("NOTES:\n%s", notes)
	}
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			runHelm(t, "uninstall", rel, "--namespace", ns, "--kubeconfig", kubeconfig, "--no-hooks")
		}
	})

	// The objects the agent works on.
	for _, name := range []string{"node-a", "node-b"} {
		lmn := &lanmonitorv1alpha1.LanMonitorNode{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := admin(t).Create(ctx, lmn); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, name := range []string{"node-a", "node-b"} {
			admin(t).Delete(ctx, &lanmonitorv1alpha1.LanMonitorNode{ObjectMeta: metav1.ObjectMeta{Name: name}})
		}
	})

	agentSA := "system:serviceaccount:" + ns + ":" + rel + "-lanmonitor-agent"
	agentOn := func(node string) client.WithWatch {
		extra := map[string][]string{}
		if node != "" {
			extra["authentication.kubernetes.io/node-name"] = []string{node}
		}
		return impersonate(t, agentSA, ns, extra)
	}
	agent := agentOn("node-a")
	statusPatch := func(c client.Client, name string) error {
		lmn := &lanmonitorv1alpha1.LanMonitorNode{ObjectMeta: metav1.ObjectMeta{Name: name}}
		return c.Status().Patch(ctx, lmn, client.RawPatch(types.MergePatchType, []byte(`{"status":{"observedGeneration":1}}`)))
	}

	// The ValidatingAdmissionPolicy takes effect once the API server has
	// loaded it; until then the write to another node's object succeeds.
	testenv.Eventually(t, 20*time.Second, 100*time.Millisecond, "node restriction policy in effect", func() error {
		err := statusPatch(agent, "node-b")
		if err == nil {
			return fmt.Errorf("agent of node-a patched node-b's status")
		}
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "may only write the status of LanMonitorNode node-a") {
			t.Fatalf("agent of node-a patching node-b's status: %v, want the node restriction policy's refusal", err)
		}
		return nil
	})

	// What the agent may do.
	if err := statusPatch(agent, "node-a"); err != nil {
		t.Errorf("agent of node-a patching its status: %v", err)
	}
	var lmns lanmonitorv1alpha1.LanMonitorNodeList
	if err := agent.List(ctx, &lmns, client.MatchingFields{"metadata.name": "node-a"}); err != nil || len(lmns.Items) != 1 {
		t.Errorf("agent listing its LanMonitorNode by field selector: %d items, %v", len(lmns.Items), err)
	}
	var ipbs lanmonitorv1alpha1.IPBlockList
	if err := agent.List(ctx, &ipbs); err != nil {
		t.Errorf("agent listing IPBlocks: %v", err)
	}
	// Its own Node, whose labels decide which IPBlocks apply (absent here:
	// NotFound, not Forbidden).
	if err := agent.Get(ctx, client.ObjectKey{Name: "node-a"}, &corev1.Node{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("agent reading its Node: %v", err)
	}
	w, err := agent.Watch(ctx, &lanmonitorv1alpha1.LanMonitorNodeList{}, client.MatchingFields{"metadata.name": "node-a"})
	if err != nil {
		t.Errorf("agent watching LanMonitorNodes: %v", err)
	} else {
		w.Stop()
	}

	// What it may not do: RBAC refuses these outright.
	forbidden := map[string]error{}
	lmnA := &lanmonitorv1alpha1.LanMonitorNode{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	forbidden["patch LanMonitorNode spec"] = agent.Patch(ctx, lmnA, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`)))
	forbidden["create LanMonitorNode"] = agent.Create(ctx, &lanmonitorv1alpha1.LanMonitorNode{ObjectMeta: metav1.ObjectMeta{Name: "node-c"}})
	forbidden["delete LanMonitorNode"] = agent.Delete(ctx, lmnA)
	forbidden["update LanMonitorNode status"] = func() error {
		var cur lanmonitorv1alpha1.LanMonitorNode
		if err := admin(t).Get(ctx, client.ObjectKey{Name: "node-a"}, &cur); err != nil {
			return err
		}
		return agent.Status().Update(ctx, &cur)
	}()
	forbidden["list LanMonitors"] = agent.List(ctx, &lanmonitorv1alpha1.LanMonitorList{})
	forbidden["create IPBlock"] = agent.Create(ctx, &lanmonitorv1alpha1.IPBlock{ObjectMeta: metav1.ObjectMeta{Name: "x"},
		Spec: lanmonitorv1alpha1.IPBlockSpec{CIDRs: []string{"198.18.0.1"}}})
	forbidden["patch IPBlock status"] = agent.Status().Patch(ctx, &lanmonitorv1alpha1.IPBlock{ObjectMeta: metav1.ObjectMeta{Name: "x"}},
		client.RawPatch(types.MergePatchType, []byte(`{"status":{}}`)))
	forbidden["update Node"] = agent.Update(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	forbidden["list Secrets"] = agent.List(ctx, &corev1.SecretList{}, client.InNamespace(ns))
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) {
			t.Errorf("agent: %s: %v, want Forbidden", what, err)
		}
	}
	// A token without a node name (not bound to a pod) writes nothing.
	if err := statusPatch(agentOn(""), "node-a"); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "carries no node name") {
		t.Errorf("agent without a node name patching status: %v, want the policy's refusal", err)
	}

	// The controller: leader election as client-go does it, with the Role.
	controllerSA := "system:serviceaccount:" + ns + ":" + rel + "-lanmonitor-controller"
	leaderElect(t, impersonateConfig(controllerSA, ns, nil), ns)
	ctrl := impersonate(t, controllerSA, ns, nil)
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "lease-", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Lease", Namespace: ns, Name: "lanmonitor-controller.lanmonitor.io"},
		Reason:         "LeaderElection", Message: "test", Type: corev1.EventTypeNormal}
	if err := ctrl.Create(ctx, ev, client.DryRunAll); err != nil {
		t.Errorf("controller creating a core/v1 Event: %v", err)
	}
	now := metav1.NowMicro()
	ev2 := &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "lease-", Namespace: ns}, EventTime: now,
		ReportingController: "lanmonitor-controller", ReportingInstance: "x", Action: "Elect", Reason: "LeaderElection", Type: "Normal",
		Regarding: corev1.ObjectReference{Kind: "Lease", Namespace: ns, Name: "lanmonitor-controller.lanmonitor.io"}}
	if err := ctrl.Create(ctx, ev2, client.DryRunAll); err != nil {
		t.Errorf("controller creating an events.k8s.io/v1 Event: %v", err)
	}
	if err := ctrl.Get(ctx, client.ObjectKey{Namespace: ns, Name: "other-lease"}, &coordinationv1.Lease{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller reading another Lease: %v, want Forbidden", err)
	}
	// The generated ClusterRole, bound: a sample of what it grants.
	if err := ctrl.Create(ctx, &lanmonitorv1alpha1.LanMonitorNode{ObjectMeta: metav1.ObjectMeta{Name: "node-c"}}, client.DryRunAll); err != nil {
		t.Errorf("controller creating a LanMonitorNode: %v", err)
	}
	if err := ctrl.List(ctx, &corev1.NodeList{}); err != nil {
		t.Errorf("controller listing Nodes: %v", err)
	}

	// helm upgrade (a new agent image), then uninstall: nothing of the
	// release is left, the CRDs stay (Helm never deletes crds/).
	helm("upgrade", rel, chartDir(t), "--namespace", ns, "--reuse-values", "--set", "agent.image.tag=v0.1.1",
		"--no-hooks") // no kubelet here to run the pre-upgrade CRD Job (test/cluster runs it)
	var ds appsv1.DaemonSet
	if err := admin(t).Get(ctx, client.ObjectKey{Namespace: ns, Name: rel + "-lanmonitor-agent"}, &ds); err != nil {
		t.Fatal(err)
	}
	if img := ds.Spec.Template.Spec.Containers[0].Image; img != "lanmonitor-agent:v0.1.1" ||
		ds.Spec.Template.Spec.Containers[0].ImagePullPolicy != corev1.PullNever {
		t.Errorf("after upgrade: agent image %s (%s)", img, ds.Spec.Template.Spec.Containers[0].ImagePullPolicy)
	}
	// No kubelet runs the pre-delete drain Job here (test/cluster runs it
	// on a real node): skip hooks.
	helm("uninstall", rel, "--namespace", ns, "--wait", "--timeout", "30s", "--no-hooks")
	uninstalled = true
	left := leftovers(t, rel)
	if len(left) > 0 {
		t.Errorf("left after helm uninstall: %s", strings.Join(left, ", "))
	}
	var crds apiextensionsv1.CustomResourceDefinitionList
	if err := admin(t).List(ctx, &crds); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, crd := range crds.Items {
		if crd.Spec.Group == "lanmonitor.io" {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d lanmonitor.io CRDs after uninstall, want 3 (kept)", n)
	}
}

// impersonateConfig is the administrator's config acting as a
// ServiceAccount, with the groups the API server gives its tokens.
func impersonateConfig(user, ns string, extra map[string][]string) *rest.Config {
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: user,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		Extra:    extra,
	}
	cfg.WarningHandler = rest.NoWarnings{}
	return cfg
}

func impersonate(t testing.TB, user, ns string, extra map[string][]string) client.WithWatch {
	t.Helper()
	c, err := client.NewWithWatch(impersonateConfig(user, ns, extra), client.Options{Scheme: scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leaderElect acquires and releases the controller's Lease the way
// controller-runtime does (client-go's Lease lock, release on cancel).
func leaderElect(t testing.TB, cfg *rest.Config, ns string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, ns, "lanmonitor-controller.lanmonitor.io",
		cs.CoreV1(), cs.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: "helm-test"})
	if err != nil {
		t.Fatal(err)
	}
	// client-go's elector logs through klog; the outcome is checked below.
	klog.SetLogger(logr.Discard())
	defer klog.ClearLogger()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	led := false
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 100 * time.Millisecond,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { led = true; cancel() },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	le.Run(ctx)
	if !led {
		t.Fatal("controller ServiceAccount did not acquire the leader election Lease")
	}
	var lease coordinationv1.Lease
	if err := admin(t).Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "lanmonitor-controller.lanmonitor.io"}, &lease); err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" {
		t.Errorf("Lease still held by %q: the release (an update) failed", *lease.Spec.HolderIdentity)
	}
}

// leftovers lists the objects of a release that still exist, by its
// app.kubernetes.io/instance label, in every kind the chart renders.
func leftovers(t testing.TB, rel string) []string {
	t.Helper()
	ctx := context.Background()
	var left []string
	for _, gvk := range []string{
		"v1/ServiceAccount", "v1/Service", "apps/v1/Deployment", "apps/v1/DaemonSet",
		"rbac.authorization.k8s.io/v1/ClusterRole", "rbac.authorization.k8s.io/v1/ClusterRoleBinding",
		"rbac.authorization.k8s.io/v1/Role", "rbac.authorization.k8s.io/v1/RoleBinding",
		"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding",
	} {
		i := strings.LastIndex(gvk, "/")
		l := &unstructured.UnstructuredList{}
		l.SetAPIVersion(gvk[:i])
		l.SetKind(gvk[i+1:] + "List")
		if err := admin(t).List(ctx, l, client.MatchingLabels{"app.kubernetes.io/instance": rel}); err != nil {
			t.Fatalf("list %s: %v", gvk, err)
		}
		for _, o := range l.Items {
			left = append(left, gvk[i+1:]+" "+o.GetNamespace()+"/"+o.GetName())
		}
	}
	return left
}

// writeKubeconfig writes a kubeconfig for helm that reaches the test API
// server as its administrator.
func writeKubeconfig(t testing.TB) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: env.Config.CertData, ClientKeyData: env.Config.KeyData, Token: env.Config.BearerToken}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	cfg.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
