#!/usr/bin/env bash
# hack/bench.sh: the benchmarks (`make bench`), all in one run on this
# machine, each -count times, summarized by hack/benchreport into medians and
# ratios against the baselines measured in the same run. Paste the output
# into docs/benchmarks.md together with the machine it ran on.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${GO:=go}"
: "${COUNT:=5}"
: "${BENCH:=.}"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
{
	echo "kernel: $(uname -r)"
	echo "cpus: $(nproc)"
} >"$out"
# XDP per-packet costs: many iterations per measurement.
"$GO" test -run '^$' -bench "$BENCH" -skip TalkerLayouts -benchtime 2000000x -count "$COUNT" ./bpf/ | tee -a "$out" >&2
# Two layouts of the talker counters, read whole from Go (milliseconds each).
"$GO" test -run '^$' -bench TalkerLayouts -benchtime 20x -count "$COUNT" ./bpf/ | tee -a "$out" >&2
# Agent: blocklist sync, read and rank, memory, throughput over a veth.
"$GO" test -run '^$' -bench "$BENCH" -skip 'EventStream|AgentIdleCPU' -benchtime 3x -count "$COUNT" ./agent/ | tee -a "$out" >&2
# Agent: the dashboard stream, 0 and 100 SSE clients on one agent (windows of
# LANMONITOR_BENCH_WINDOW each, default 20s), once.
"$GO" test -run '^$' -bench EventStream -benchtime 1x -count 1 ./agent/ | tee -a "$out" >&2
# Agent: an idle node agent in Kubernetes mode (100k prefixes, 65,536
# sources, 10 s reports) against a real API server, CPU over a minute.
KUBEBUILDER_ASSETS="$(hack/tools.sh controlplane)" LANMONITOR_BENCH_WINDOW="${LANMONITOR_BENCH_WINDOW:-60s}" \
	"$GO" test -run '^$' -bench AgentIdleCPU -benchtime 1x -count 1 ./agent/ | tee -a "$out" >&2
# Dashboard: the agent's page open 10 minutes in headless Chromium (JS heap, page CPU).
"$GO" test -run '^$' -bench DashboardSoak -benchtime 1x -count 1 -timeout 30m ./internal/webui/ | tee -a "$out" >&2
# Controller: IPBlock propagation to 100 and 1,000 real agents (agent.RunKubernetes
# on kernel/fake) on a real API server, writes, CPU and memory.
KUBEBUILDER_ASSETS="$(hack/tools.sh controlplane)" \
	"$GO" test -run '^$' -bench Controller -benchtime 20x -count 1 -timeout 60m ./controllers/ | tee -a "$out" >&2
"$GO" run ./hack/benchreport <"$out"
