package helm

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// valueSet is a representative set of values: each is linted, rendered and
// applied with server-side dry-run (apiserver_test.go).
type valueSet struct {
	name string
	args []string
	// controllerWarning is the PodSecurity warning (against restricted)
	// the controller Deployment gets; none when empty.
	controllerWarning string
}

var valueSets = []valueSet{
	{"defaults", nil, ""},
	{"never-pull", []string{
		// A cluster without a registry (issue 6): images imported into
		// containerd, never pulled.
		"--set", "controller.image.repository=docker.io/library/lanmonitor-controller",
		"--set", "controller.image.tag=dev-0123abc",
		"--set", "controller.image.pullPolicy=Never",
		"--set", "agent.image.repository=docker.io/library/lanmonitor-agent",
		"--set", "agent.image.tag=dev-4567def",
		"--set", "agent.image.pullPolicy=Never",
	}, ""},
	{"servicemonitor", []string{
		"--set", "serviceMonitor.enabled=true",
		"--set", "serviceMonitor.force=true",
		"--set", "serviceMonitor.interval=30s",
		"--set", "serviceMonitor.scrapeTimeout=10s",
		"--set", "serviceMonitor.labels.release=prometheus",
		"--set-json", `serviceMonitor.metricRelabelings=[{"action":"drop","sourceLabels":["__name__"],"regex":"go_gc_.*"}]`,
	}, ""},
	{"sys-resource", []string{"--set", "agent.sysResourceCapability=true"}, ""},
	{"tolerations", []string{
		"--set-json", `agent.tolerations=[{"key":"node-role.kubernetes.io/control-plane","operator":"Exists","effect":"NoSchedule"},{"key":"lan","operator":"Equal","value":"only","effect":"NoExecute"}]`,
	}, ""},
	{"no-pod-network", []string{
		// A cluster without kube-proxy or pod networking (issue 6): both
		// components on the host network, reaching the API server on the
		// node's loopback.
		"--set", "controller.hostNetwork=true",
		"--set-json", `controller.extraEnv=[{"name":"KUBERNETES_SERVICE_HOST","value":"127.0.0.1"},{"name":"KUBERNETES_SERVICE_PORT","value":"6443"}]`,
		"--set-json", `agent.extraEnv=[{"name":"KUBERNETES_SERVICE_HOST","value":"127.0.0.1"},{"name":"KUBERNETES_SERVICE_PORT","value":"6443"}]`,
	}, `would violate PodSecurity "restricted:latest": host namespaces (hostNetwork=true)`},
	{"knobs", []string{
		"--set", "fullnameOverride=lm",
		"--set", "commonLabels.team=net",
		"--set-json", `imagePullSecrets=[{"name":"regcred"}]`,
		"--set", "controller.replicas=2",
		"--set", "controller.logLevel=debug",
		"--set-json", `controller.extraArgs=["--kube-api-qps=50","--node-workers=8"]`,
		"--set", "controller.serviceAccount.create=false",
		"--set", "controller.serviceAccount.name=existing-controller",
		"--set", "controller.priorityClassName=system-cluster-critical",
		"--set", "controller.podAnnotations.a=b",
		"--set", "agent.logLevel=debug",
		"--set", "agent.port=19470",
		"--set", "agent.maxPrefixes=1048576",
		"--set", "agent.maxRules=8192",
		"--set", "agent.goMemLimit=120MiB",
		"--set", "agent.resources.limits.memory=512Mi",
		"--set", "agent.bpffs.hostPath=/run/bpffs",
		"--set-json", `agent.extraArgs=["--cleanup-on-exit"]`,
		"--set-json", `agent.extraEnv=[{"name":"TZ","value":"UTC"}]`,
		"--set", "agent.serviceAccount.name=custom-agent",
		"--set", "agent.serviceAccount.annotations.x=y",
		"--set", "agent.nodeRestriction.enabled=false",
		"--set", "agent.metrics.service.enabled=false",
		"--set", "controller.metrics.service.enabled=false",
		"--set", "agent.updateStrategy.rollingUpdate.maxUnavailable=10%",
	}, ""},
}

func TestLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", chartDir(t), "--namespace", namespace}, vs.args...)
			out, stderr, err := runHelm(t, args...)
			if err != nil || !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint --strict %s: %v\n%s%s", strings.Join(vs.args, " "), err, out, stderr)
			}
			// helm lint reports a template's `fail` as INFO and passes:
			// the guards are tested with helm template (TestGuards).
			if strings.Contains(out, "Fail:") {
				t.Fatalf("helm lint: a guard failed:\n%s", out)
			}
		})
	}
}

// TestAgentDaemonSetSecurity asserts the exact security-relevant settings
// of the agent pod: what a reviewer would check by hand.
func TestAgentDaemonSetSecurity(t *testing.T) {
	for _, tc := range []struct {
		name        string
		args        []string
		caps        []corev1.Capability
		tolerations []corev1.Toleration
	}{
		{
			name:        "defaults",
			caps:        []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON"},
			tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		},
		{
			name:        "sys-resource",
			args:        []string{"--set", "agent.sysResourceCapability=true"},
			caps:        []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"},
			tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		},
		{
			name: "tolerations",
			args: []string{"--set-json", `agent.tolerations=[{"key":"lan","operator":"Equal","value":"only","effect":"NoExecute"}]`},
			caps: []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON"},
			tolerations: []corev1.Toleration{{
				Key: "lan", Operator: corev1.TolerationOpEqual, Value: "only", Effect: corev1.TaintEffectNoExecute,
			}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ds appsv1.DaemonSet
			typed(t, find(t, decode(t, template(t, release, namespace, tc.args...)), "DaemonSet", "-agent"), &ds)
			pod := ds.Spec.Template.Spec
			if !pod.HostNetwork {
				t.Error("hostNetwork is not true")
			}
			if pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
				t.Errorf("dnsPolicy = %q, want ClusterFirstWithHostNet", pod.DNSPolicy)
			}
			if pod.PriorityClassName != "system-node-critical" {
				t.Errorf("priorityClassName = %q, want system-node-critical", pod.PriorityClassName)
			}
			if pod.HostPID || pod.HostIPC {
				t.Error("hostPID or hostIPC set")
			}
			if !reflect.DeepEqual(pod.Tolerations, tc.tolerations) {
				t.Errorf("tolerations = %+v, want %+v", pod.Tolerations, tc.tolerations)
			}
			if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
				t.Fatalf("%d containers and %d init containers, want 1 and 0", len(pod.Containers), len(pod.InitContainers))
			}
			c := pod.Containers[0]
			if got, want := append(slices.Clone(c.Command), c.Args...), []string{
				"/lanmonitor-agent", "kubernetes", "--listen=$(HOST_IP):9470", "--listen=127.0.0.1:9470", "--log-format=json", "--log-level=info",
			}; !slices.Equal(got, want) {
				t.Errorf("command and args = %q, want %q", got, want)
			}
			// $(HOST_IP) is the node's InternalIP, from the downward API.
			if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "HOST_IP" }); i < 0 ||
				c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != "status.hostIP" {
				t.Errorf("env = %+v, want HOST_IP from status.hostIP", c.Env)
			}
			for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Host != "127.0.0.1" {
					t.Errorf("probe %+v, want HTTPS on 127.0.0.1", p)
				}
			}

			sc := c.SecurityContext
			if sc == nil || sc.Capabilities == nil {
				t.Fatal("no container securityContext.capabilities")
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Error("privileged: true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation is not false")
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Error("readOnlyRootFilesystem is not true")
			}
			if !slices.Equal(sc.Capabilities.Add, tc.caps) {
				t.Errorf("capabilities.add = %q, want exactly %q", sc.Capabilities.Add, tc.caps)
			}
			if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("capabilities.drop = %q, want [ALL]", sc.Capabilities.Drop)
			}
			uid := sc.RunAsUser
			if uid == nil && pod.SecurityContext != nil {
				uid = pod.SecurityContext.RunAsUser
			}
			if uid == nil || *uid != 0 {
				t.Errorf("runAsUser = %v, want 0", uid)
			}
			// The runtime's default AppArmor profile denies writes under
			// /sys/fs/** (the pins).
			if sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
				t.Errorf("appArmorProfile = %+v, want Unconfined", sc.AppArmorProfile)
			}
			if pod.SecurityContext == nil || pod.SecurityContext.SeccompProfile == nil ||
				pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Error("pod seccompProfile is not RuntimeDefault")
			}

			var nodeName *corev1.EnvVar
			for i := range c.Env {
				if c.Env[i].Name == "NODE_NAME" {
					nodeName = &c.Env[i]
				}
			}
			if nodeName == nil || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil ||
				nodeName.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
				t.Errorf("NODE_NAME = %+v, want valueFrom.fieldRef.fieldPath spec.nodeName", nodeName)
			}

			for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				path := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[name]
				if p == nil || p.HTTPGet == nil {
					t.Errorf("%s probe is not an HTTP GET", name)
					continue
				}
				if p.HTTPGet.Host != "127.0.0.1" || p.HTTPGet.Port.IntValue() != 9470 || p.HTTPGet.Path != path {
					t.Errorf("%s probe = %s:%s%s, want 127.0.0.1:9470%s", name, p.HTTPGet.Host, p.HTTPGet.Port.String(), p.HTTPGet.Path, path)
				}
			}

			if c.Resources.Limits.Memory().IsZero() {
				t.Error("no memory limit")
			}

			if len(pod.Volumes) != 1 || len(c.VolumeMounts) != 1 {
				t.Fatalf("volumes %+v, mounts %+v: want only bpffs", pod.Volumes, c.VolumeMounts)
			}
			v, m := pod.Volumes[0], c.VolumeMounts[0]
			if v.HostPath == nil || v.HostPath.Path != "/sys/fs/bpf" || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory {
				t.Errorf("volume = %+v, want hostPath /sys/fs/bpf of type Directory", v)
			}
			if m.Name != v.Name || m.MountPath != "/sys/fs/bpf" || m.ReadOnly ||
				m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
				t.Errorf("mount = %+v, want %s read-write at /sys/fs/bpf with HostToContainer", m, v.Name)
			}
		})
	}
}

// TestImages checks image references and pull policies, including
// imagePullPolicy Never for a cluster without a registry.
func TestImages(t *testing.T) {
	objs := decode(t, template(t, release, namespace, valueSets[1].args...))
	var ds appsv1.DaemonSet
	var dep appsv1.Deployment
	typed(t, find(t, objs, "DaemonSet", "-agent"), &ds)
	typed(t, find(t, objs, "Deployment", "-controller"), &dep)
	for _, c := range []struct {
		got    corev1.Container
		image  string
		policy corev1.PullPolicy
	}{
		{ds.Spec.Template.Spec.Containers[0], "docker.io/library/lanmonitor-agent:dev-4567def", corev1.PullNever},
		{dep.Spec.Template.Spec.Containers[0], "docker.io/library/lanmonitor-controller:dev-0123abc", corev1.PullNever},
	} {
		if c.got.Image != c.image || c.got.ImagePullPolicy != c.policy {
			t.Errorf("%s: image %s (%s), want %s (%s)", c.got.Name, c.got.Image, c.got.ImagePullPolicy, c.image, c.policy)
		}
	}

	// The default tag is the chart's appVersion.
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	data, err := os.ReadFile(filepath.Join(chartDir(t), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sigsyaml.Unmarshal(data, &chart); err != nil {
		t.Fatal(err)
	}
	objs = decode(t, template(t, release, namespace))
	typed(t, find(t, objs, "DaemonSet", "-agent"), &ds)
	typed(t, find(t, objs, "Deployment", "-controller"), &dep)
	if got, want := ds.Spec.Template.Spec.Containers[0].Image, "lanmonitor-agent:"+chart.AppVersion; got != want {
		t.Errorf("agent image %s, want %s", got, want)
	}
	if got, want := dep.Spec.Template.Spec.Containers[0].Image, "lanmonitor-controller:"+chart.AppVersion; got != want {
		t.Errorf("controller image %s, want %s", got, want)
	}
}

// TestController checks the controller's arguments, probes and the
// restricted-profile security context.
func TestController(t *testing.T) {
	var dep appsv1.Deployment
	typed(t, find(t, decode(t, template(t, release, namespace)), "Deployment", "-controller"), &dep)
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if got, want := append(slices.Clone(c.Command), c.Args...), []string{
		"/lanmonitor-controller", "--leader-elect=true", "--leader-election-namespace=" + namespace,
		"--metrics-bind-address=:8443", "--dashboard-bind-address=:9480", "--dashboard-interval=5s",
		"--health-probe-bind-address=:8081", "--zap-log-level=info",
	}; !slices.Equal(got, want) {
		t.Errorf("command and args = %q, want %q", got, want)
	}
	for name, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Port.String() != "health" {
			t.Errorf("probe %s = %+v, want GET %s on port health", name, p, name)
		}
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if !reflect.DeepEqual(ports, map[string]int32{"metrics": 8443, "dashboard": 9480, "health": 8081}) {
		t.Errorf("ports = %v, want metrics 8443, dashboard 9480 and health 8081", ports)
	}
	if pod.ServiceAccountName != "lanmonitor-controller" {
		t.Errorf("serviceAccountName = %q", pod.ServiceAccountName)
	}
	if dep.Spec.Strategy.Type != "" || dep.Spec.Strategy.RollingUpdate != nil {
		t.Errorf("strategy = %+v, want the default rolling update on the pod network", dep.Spec.Strategy)
	}
	// On the host network a surge pod could not bind the node's ports
	// beside the old one: the rollout replaces the pod instead.
	var hostDep appsv1.Deployment
	typed(t, find(t, decode(t, template(t, release, namespace, "--set", "controller.hostNetwork=true")), "Deployment", "-controller"), &hostDep)
	if ru := hostDep.Spec.Strategy.RollingUpdate; hostDep.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
		ru.MaxSurge == nil || ru.MaxSurge.String() != "0" || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "1" {
		t.Errorf("hostNetwork: strategy = %+v, want RollingUpdate with maxSurge 0, maxUnavailable 1", hostDep.Spec.Strategy)
	}
	// The API server's PodSecurity admission checks the restricted profile
	// for real (TestPodAdmission); this names the settings.
	if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("container securityContext = %+v", sc)
	}
}

// TestServices checks both metrics Services and the ServiceMonitors.
func TestServices(t *testing.T) {
	objs := decode(t, template(t, release, namespace, valueSets[2].args...))
	for _, tc := range []struct {
		suffix string
		port   int32
	}{{"-controller-metrics", 8443}, {"-agent-metrics", 9470}} {
		var svc corev1.Service
		typed(t, find(t, objs, "Service", tc.suffix), &svc)
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != tc.port ||
			svc.Spec.Ports[0].TargetPort.String() != "metrics" {
			t.Errorf("Service %s ports = %+v, want metrics %d", svc.Name, svc.Spec.Ports, tc.port)
		}
	}
	if n := count(objs, "ServiceMonitor"); n != 2 {
		t.Errorf("%d ServiceMonitors, want 2", n)
	}
	sm := find(t, objs, "ServiceMonitor", "-agent")
	eps, _, _ := unstructuredSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("agent ServiceMonitor endpoints = %v", eps)
	}
	ep := eps[0].(map[string]any)
	if ep["port"] != "metrics" || ep["interval"] != "30s" || ep["scrapeTimeout"] != "10s" || ep["scheme"] != "https" ||
		ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" ||
		!reflect.DeepEqual(ep["tlsConfig"], map[string]any{"insecureSkipVerify": true}) {
		t.Errorf("agent ServiceMonitor endpoint = %v", ep)
	}
	if sm.GetLabels()["release"] != "prometheus" {
		t.Errorf("ServiceMonitor labels = %v, want release=prometheus", sm.GetLabels())
	}

	// The dashboard Service forwards to the controller's dashboard port.
	var dash corev1.Service
	typed(t, find(t, objs, "Service", "-dashboard"), &dash)
	if len(dash.Spec.Ports) != 1 || dash.Spec.Ports[0].Port != 9480 || dash.Spec.Ports[0].TargetPort.String() != "dashboard" ||
		dash.Spec.ClusterIP != "" || dash.Spec.Selector["app.kubernetes.io/component"] != "controller" {
		t.Errorf("dashboard Service %+v", dash.Spec)
	}

	// Without the Services nothing is rendered for Prometheus.
	objs = decode(t, template(t, release, namespace,
		"--set", "agent.metrics.service.enabled=false", "--set", "controller.metrics.service.enabled=false",
		"--set", "controller.dashboard.enabled=false"))
	if n := count(objs, "Service") + count(objs, "ServiceMonitor"); n != 0 {
		t.Errorf("%d Services and ServiceMonitors with both disabled", n)
	}
}

func unstructuredSlice(obj map[string]any, fields ...string) ([]any, bool, error) {
	var cur any = obj
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = m[f]
	}
	s, ok := cur.([]any)
	return s, ok, nil
}

// agentRules is the agent's least privilege (issue 5): read LanMonitorNodes
// and IPBlocks, patch LanMonitorNode status. Nothing more.
var agentRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"ipblocks", "lanmonitornodes"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"lanmonitornodes/status"}, Verbs: []string{"patch"}},
}

// leaderElectionRules is what client-go's Lease lock and the event
// recorders use.
var leaderElectionRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
	{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"lanmonitor-controller.lanmonitor.io"}, Verbs: []string{"get", "update"}},
	{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
}

func TestRBAC(t *testing.T) {
	objs := decode(t, template(t, release, namespace))
	var agent, controller, drain rbacv1.ClusterRole
	var le, drainNS rbacv1.Role
	typed(t, find(t, objs, "ClusterRole", "-agent"), &agent)
	typed(t, find(t, objs, "ClusterRole", "-controller"), &controller)
	typed(t, find(t, objs, "Role", "-leader-election"), &le)
	typed(t, find(t, objs, "ClusterRole", "-drain"), &drain)
	typed(t, find(t, objs, "Role", "-drain"), &drainNS)
	wantDrain := []rbacv1.PolicyRule{{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"lanmonitornodes"}, Verbs: []string{"get", "list", "watch", "patch"}}}
	wantDrainNS := []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments/scale"}, ResourceNames: []string{find(t, objs, "Deployment", "-controller").GetName()}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"lanmonitor-controller.lanmonitor.io"}, Verbs: []string{"get"}},
	}
	if !reflect.DeepEqual(drain.Rules, wantDrain) || !reflect.DeepEqual(drainNS.Rules, wantDrainNS) {
		t.Errorf("drain hook rules:\n%s\n%s\nwant exactly:\n%s\n%s", rulesYAML(t, drain.Rules), rulesYAML(t, drainNS.Rules), rulesYAML(t, wantDrain), rulesYAML(t, wantDrainNS))
	}

	if !reflect.DeepEqual(agent.Rules, agentRules) {
		t.Errorf("agent ClusterRole rules:\n%s\nwant exactly:\n%s", rulesYAML(t, agent.Rules), rulesYAML(t, agentRules))
	}
	if !reflect.DeepEqual(le.Rules, leaderElectionRules) {
		t.Errorf("leader election Role rules:\n%s\nwant exactly:\n%s", rulesYAML(t, le.Rules), rulesYAML(t, leaderElectionRules))
	}
	if n := count(objs, "ClusterRole") + count(objs, "Role"); n != 8 {
		t.Errorf("%d ClusterRoles and Roles, want 8 (agent, controller, leader election, drain hook x2, CRD hook, metrics reader, dashboard viewer)", n)
	}
	// Reading what the agents and the controller serve.
	var metricsReader, viewer rbacv1.ClusterRole
	typed(t, find(t, objs, "ClusterRole", "-metrics-reader"), &metricsReader)
	typed(t, find(t, objs, "ClusterRole", "-dashboard-viewer"), &viewer)
	if want := []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}; !reflect.DeepEqual(metricsReader.Rules, want) {
		t.Errorf("metrics reader rules:\n%s", rulesYAML(t, metricsReader.Rules))
	}
	if want := []rbacv1.PolicyRule{
		{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"lanmonitornodes/traffic"}, Verbs: []string{"get"}},
		{APIGroups: []string{"lanmonitor.io"}, Resources: []string{"lanmonitors"}, Verbs: []string{"get", "list", "watch"}},
	}; !reflect.DeepEqual(viewer.Rules, want) {
		t.Errorf("dashboard viewer rules:\n%s", rulesYAML(t, viewer.Rules))
	}
	// Both service accounts may review tokens and access (and nothing else).
	var delegator rbacv1.ClusterRoleBinding
	typed(t, find(t, objs, "ClusterRoleBinding", "-auth-delegator"), &delegator)
	if delegator.RoleRef.Name != "system:auth-delegator" || len(delegator.Subjects) != 2 ||
		delegator.Subjects[0].Name != "lanmonitor-controller" || delegator.Subjects[1].Name != "lanmonitor-agent" {
		t.Errorf("auth delegator binding %+v", delegator)
	}

	// The controller's ClusterRole is generated by controller-gen from the
	// controllers' +kubebuilder:rbac markers; the chart must grant exactly
	// that.
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var generated rbacv1.ClusterRole
	if err := sigsyaml.UnmarshalStrict(data, &generated); err != nil {
		t.Fatalf("config/rbac/role.yaml: %v", err)
	}
	if !reflect.DeepEqual(controller.Rules, generated.Rules) {
		t.Errorf("the controller ClusterRole in charts/lanmonitor/templates/controller-rbac.yaml differs from config/rbac/role.yaml (make manifests); its rules must be:\n%s",
			rulesYAML(t, generated.Rules))
	}

	// Each ClusterRole is bound to its own ServiceAccount, in the release namespace.
	for _, component := range []string{"agent", "controller"} {
		var b rbacv1.ClusterRoleBinding
		typed(t, find(t, objs, "ClusterRoleBinding", "-"+component), &b)
		want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "lanmonitor-" + component, Namespace: namespace}}
		if b.RoleRef.Name != "lanmonitor-"+component || !reflect.DeepEqual(b.Subjects, want) {
			t.Errorf("ClusterRoleBinding %s: roleRef %s, subjects %+v", b.Name, b.RoleRef.Name, b.Subjects)
		}
	}
}

// rulesYAML formats rules as they would be pasted into a template.
func rulesYAML(t testing.TB, rules []rbacv1.PolicyRule) string {
	t.Helper()
	out, err := sigsyaml.Marshal(map[string]any{"rules": rules})
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestCRDs checks that crds/ is an exact copy of config/crd/bases/ (the
// CRDs controller-gen generates); charts/lanmonitor/hack/sync-crds.sh copies
// them.
func TestCRDs(t *testing.T) {
	src := filepath.Join(repoRoot(t), "config", "crd", "bases")
	dst := filepath.Join(chartDir(t), "crds")
	want, err := filepath.Glob(filepath.Join(src, "*.yaml"))
	if err != nil || len(want) == 0 {
		t.Fatalf("no CRDs in %s: %v", src, err)
	}
	got, err := filepath.Glob(filepath.Join(dst, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	base := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	if !slices.Equal(base(got), base(want)) {
		t.Fatalf("charts/lanmonitor/crds holds %q, config/crd/bases %q: run charts/lanmonitor/hack/sync-crds.sh", base(got), base(want))
	}
	for _, f := range want {
		a, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dst, filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("charts/lanmonitor/crds/%s differs from config/crd/bases: run charts/lanmonitor/hack/sync-crds.sh", filepath.Base(f))
		}
	}

	// helm template --include-crds renders them, verbatim.
	objs := decode(t, template(t, release, namespace, "--include-crds"))
	if n := count(objs, "CustomResourceDefinition"); n != len(want) {
		t.Errorf("%d CRDs rendered, want %d", n, len(want))
	}
}

// TestSchema checks that values.schema.json refuses wrong types, unknown
// enum values, unknown keys and a missing agent memory limit, naming the
// value.
func TestSchema(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--set", "agent.resources=lots"}, []string{"at '/agent/resources'", "got string, want object"}},
		{[]string{"--set", "agent.image.pullPolicy=Sometimes"}, []string{"at '/agent/image/pullPolicy'", "'Always', 'IfNotPresent', 'Never'"}},
		{[]string{"--set", "controller.image.pullPolicy=always"}, []string{"at '/controller/image/pullPolicy'"}},
		{[]string{"--set", "agent.resources.limits.memory=null"}, []string{"at '/agent/resources/limits'", "missing property 'memory'"}},
		{[]string{"--set", "agent.resources.limits.memory=lots"}, []string{"at '/agent/resources/limits/memory'"}},
		{[]string{"--set", "agent.logLevel=trace"}, []string{"at '/agent/logLevel'", "'debug', 'info', 'warn', 'error'"}},
		{[]string{"--set", "controller.logLevel=warn"}, []string{"at '/controller/logLevel'"}},
		{[]string{"--set", "agent.port=70000"}, []string{"at '/agent/port'"}},
		{[]string{"--set", "agent.hostNetwork=yes"}, []string{"at '/agent/hostNetwork'", "want boolean"}},
		{[]string{"--set", "agent.tolerations=all"}, []string{"at '/agent/tolerations'", "want array"}},
		{[]string{"--set", "agent.tolerationz[0].operator=Exists"}, []string{"at '/agent'", "'tolerationz' not allowed"}},
		{[]string{"--set", "agent.goMemLimit=100M"}, []string{"at '/agent/goMemLimit'"}},
		{[]string{"--set", "agent.bpffs.hostPath=sys/fs/bpf"}, []string{"at '/agent/bpffs/hostPath'"}},
		{[]string{"--set", "agent.updateStrategy.type=Recreate"}, []string{"at '/agent/updateStrategy/type'"}},
		{[]string{"--set", "agent.appArmorProfile.type=Enforce"}, []string{"at '/agent/appArmorProfile/type'"}},
		{[]string{"--set", "serviceMonitor.interval=30"}, []string{"at '/serviceMonitor/interval'"}},
		{[]string{"--set-json", `controller.extraArgs=[5]`}, []string{"at '/controller/extraArgs/0'", "want string"}},
		{[]string{"--set", "controller.replicas=-1"}, []string{"at '/controller/replicas'"}},
	} {
		t.Run(strings.Join(tc.args[1:], " "), func(t *testing.T) {
			msg := templateError(t, tc.args...)
			if !strings.Contains(msg, "values don't meet the specifications of the schema") {
				t.Errorf("not a schema error:\n%s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not contain %q:\n%s", w, msg)
				}
			}
		})
	}
}

// TestGuards checks the fail guards on contradictory values.
func TestGuards(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no host network", []string{"--set", "agent.hostNetwork=false"}, "agent.hostNetwork=false is not supported"},
		{"servicemonitor without crd", []string{"--set", "serviceMonitor.enabled=true"}, "serviceMonitor.enabled=true but the cluster does not serve monitoring.coreos.com/v1 ServiceMonitor"},
		{"servicemonitor without agent service", []string{"--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.force=true", "--set", "agent.metrics.service.enabled=false"}, "needs agent.metrics.service.enabled=true"},
		{"servicemonitor without controller service", []string{"--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.force=true", "--set", "controller.metrics.service.enabled=false"}, "needs controller.metrics.service.enabled=true"},
		{"unnamed existing agent sa", []string{"--set", "agent.serviceAccount.create=false"}, "agent.serviceAccount.create=false needs agent.serviceAccount.name"},
		{"unnamed existing controller sa", []string{"--set", "controller.serviceAccount.create=false"}, "controller.serviceAccount.create=false needs controller.serviceAccount.name"},
		{"agent listen in extraArgs", []string{"--set-json", `agent.extraArgs=["--listen=127.0.0.1:1"]`}, "agent.extraArgs: --listen=127.0.0.1:1 is set by the chart"},
		{"agent pin root in extraArgs", []string{"--set-json", `agent.extraArgs=["--pin-root","/x"]`}, "agent.extraArgs: --pin-root is set by the chart"},
		{"leader election off", []string{"--set-json", `controller.extraArgs=["--leader-elect=false"]`}, "controller.extraArgs: --leader-elect=false is set by the chart"},
		{"lease renamed", []string{"--set-json", `controller.extraArgs=["--leader-election-id=x"]`}, "controller.extraArgs: --leader-election-id=x is set by the chart"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if msg := templateError(t, tc.args...); !strings.Contains(msg, tc.want) {
				t.Errorf("error does not contain %q:\n%s", tc.want, msg)
			}
		})
	}

	// A cluster that serves ServiceMonitor needs no force.
	objs := decode(t, template(t, release, namespace, "--set", "serviceMonitor.enabled=true",
		"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"))
	if n := count(objs, "ServiceMonitor"); n != 2 {
		t.Errorf("%d ServiceMonitors with the CRD served, want 2", n)
	}
}

// TestValuesDocumented checks that every value in values.yaml has a helm-docs
// `# --` comment. A documented map whose keys carry no `# --` comment of
// their own (a default like resources) is documented as a whole.
func TestValuesDocumented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	documented := func(k *yaml.Node) bool {
		for _, line := range strings.Split(k.HeadComment, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "# --") {
				return true
			}
		}
		return false
	}
	var walk func(path string, m *yaml.Node, required bool)
	walk = func(path string, m *yaml.Node, required bool) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			p := strings.TrimPrefix(path+"."+k.Value, ".")
			if !documented(k) {
				if required {
					t.Errorf("values.yaml:%d: %s has no `# --` comment", k.Line, p)
				}
				continue
			}
			if v.Kind != yaml.MappingNode {
				continue
			}
			// Children are documented one by one if any of them is.
			anyChild := false
			for j := 0; j < len(v.Content); j += 2 {
				anyChild = anyChild || documented(v.Content[j])
			}
			if anyChild {
				walk(p, v, true)
			}
		}
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		t.Fatal("values.yaml is not a mapping")
	}
	walk("", doc.Content[0], true)
}

// TestValuesFile renders with a values file, where YAML numbers reach the
// templates as float64: large ones must not come out as 1.048576e+06.
func TestValuesFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, []byte(`
controller:
  replicas: 3
agent:
  port: 19470
  maxPrefixes: 1048576
  maxRules: 100000
  terminationGracePeriodSeconds: 3000000
`), 0o600); err != nil {
		t.Fatal(err)
	}
	objs := decode(t, template(t, release, namespace, "-f", file))
	var ds appsv1.DaemonSet
	var dep appsv1.Deployment
	typed(t, find(t, objs, "DaemonSet", "-agent"), &ds)
	typed(t, find(t, objs, "Deployment", "-controller"), &dep)
	c := ds.Spec.Template.Spec.Containers[0]
	if want := []string{"--listen=$(HOST_IP):19470", "--listen=127.0.0.1:19470", "--log-format=json", "--log-level=info", "--max-prefixes=1048576", "--max-rules=100000"}; !slices.Equal(c.Args, want) {
		t.Errorf("agent args = %q, want %q", c.Args, want)
	}
	if p := c.ReadinessProbe.HTTPGet.Port.IntValue(); p != 19470 {
		t.Errorf("readiness probe port %d", p)
	}
	if g := ds.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g != 3000000 {
		t.Errorf("terminationGracePeriodSeconds = %v", g)
	}
	if r := dep.Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("replicas = %v", r)
	}
}
