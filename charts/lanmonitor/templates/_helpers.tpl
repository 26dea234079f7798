{{/*
Name of the chart, for the app.kubernetes.io/name label.
*/}}
{{- define "lanmonitor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, the prefix of every object's name. Truncated at
63 characters minus the longest suffix the templates add ("-controller"),
so that every name stays a valid DNS label. A release whose name contains the
chart name is used as is ("lanmonitor" gives lanmonitor-controller,
lanmonitor-agent).
*/}}
{{- define "lanmonitor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "lanmonitor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. Call with (dict "ctx" $ "component" "agent").
*/}}
{{- define "lanmonitor.labels" -}}
helm.sh/chart: {{ include "lanmonitor.chart" .ctx }}
{{ include "lanmonitor.selectorLabels" . }}
{{- if .ctx.Chart.AppVersion }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: lanmonitor
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (immutable in a Deployment or DaemonSet: never add to them).
Call with (dict "ctx" $ "component" "agent").
*/}}
{{- define "lanmonitor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lanmonitor.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Name of the controller's ServiceAccount.
*/}}
{{- define "lanmonitor.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (printf "%s-controller" (include "lanmonitor.fullname" .)) .Values.controller.serviceAccount.name }}
{{- else }}
{{- .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the agent's ServiceAccount.
*/}}
{{- define "lanmonitor.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (printf "%s-agent" (include "lanmonitor.fullname" .)) .Values.agent.serviceAccount.name }}
{{- else }}
{{- .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference of a component: repository:tag, the tag defaulting to the
chart's appVersion. Call with (dict "ctx" $ "image" .Values.agent.image).
*/}}
{{- define "lanmonitor.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/*
The agent's capabilities: BPF and PERFMON to load the XDP program, NET_ADMIN
to attach it and set promiscuity; SYS_RESOURCE only on request, for kernels
older than 5.11 that charge BPF memory to RLIMIT_MEMLOCK.
*/}}
{{- define "lanmonitor.agent.capabilities" -}}
- BPF
- NET_ADMIN
- PERFMON
{{- if .Values.agent.sysResourceCapability }}
- SYS_RESOURCE
{{- end }}
{{- end }}

{{/*
Whether the ServiceMonitor CRD is served, or the user forces it.
*/}}
{{- define "lanmonitor.serviceMonitor.available" -}}
{{- if or .Values.serviceMonitor.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") }}true{{ end }}
{{- end }}

{{/*
Guards against contradictory values. Rendered once, from validate.yaml;
each guard fails the install with what to change.
*/}}
{{- define "lanmonitor.validate" -}}
{{- if not .Values.agent.hostNetwork }}
{{- fail "agent.hostNetwork=false is not supported: the agent attaches XDP to the node's own interfaces, which it only sees in the node's network namespace" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not (include "lanmonitor.serviceMonitor.available" .)) }}
{{- fail "serviceMonitor.enabled=true but the cluster does not serve monitoring.coreos.com/v1 ServiceMonitor: install the Prometheus Operator CRDs first, or set serviceMonitor.force=true (for example with helm template, which cannot see the cluster)" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.controller.metrics.service.enabled) }}
{{- fail "serviceMonitor.enabled=true needs controller.metrics.service.enabled=true: the ServiceMonitor selects the metrics Service" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.agent.metrics.service.enabled) }}
{{- fail "serviceMonitor.enabled=true needs agent.metrics.service.enabled=true: the ServiceMonitor selects the metrics Service" }}
{{- end }}
{{- if and (not .Values.controller.serviceAccount.create) (not .Values.controller.serviceAccount.name) }}
{{- fail "controller.serviceAccount.create=false needs controller.serviceAccount.name: the ServiceAccount the chart binds its RBAC to" }}
{{- end }}
{{- if and (not .Values.agent.serviceAccount.create) (not .Values.agent.serviceAccount.name) }}
{{- fail "agent.serviceAccount.create=false needs agent.serviceAccount.name: the ServiceAccount the chart binds its RBAC to" }}
{{- end }}
{{- range .Values.controller.extraArgs }}
{{- if regexMatch "^--?(leader-elect|leader-election-id|leader-election-namespace|metrics-bind-address|metrics-cert-dir|dashboard-bind-address|dashboard-interval|dashboard-cert-dir|health-probe-bind-address)(=|$)" . }}
{{- fail (printf "controller.extraArgs: %s is set by the chart (probes, Services and leader election RBAC depend on it)" .) }}
{{- end }}
{{- end }}
{{- range .Values.agent.extraArgs }}
{{- if regexMatch "^--?(listen|log-format|log-level|node-name|kubeconfig|pin-root|max-prefixes|max-rules|netns|tls-cert-dir)(=|$)" . }}
{{- fail (printf "agent.extraArgs: %s is set by the chart (use the agent.* value for it: agent.listenAddresses, agent.tls; --node-name, --kubeconfig and --netns are fixed)" .) }}
{{- end }}
{{- end }}
{{- end }}
