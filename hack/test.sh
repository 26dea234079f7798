#!/usr/bin/env bash
# hack/test.sh: every test of the project (`make test`).
#
# As root it loads the XDP program into this kernel and builds lab networks
# in network namespaces it creates and deletes; controller tests run against a
# real kube-apiserver and etcd built by hack/tools.sh (cached by version).
# Tests that need root skip with a message when not root, or fail when
# LANMONITOR_REQUIRE_PRIVILEGED=1 (CI).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${GO:=go}"
: "${FUZZTIME:=300000x}"

# The control plane for the controller tests (built once, then cached).
KUBEBUILDER_ASSETS="$(hack/tools.sh controlplane)"
HELM="$(hack/tools.sh helm)"
export KUBEBUILDER_ASSETS HELM

echo "== go test ./..." >&2
"$GO" test -count=1 -timeout 20m ./...

# A count, not a duration: with a duration, go1.26's fuzz coordinator can
# report its own deadline as a failure ("context deadline exceeded", no
# crasher written; golang/go#75804, fixed in go1.27). 300,000 runs take
# about 10 s here.
echo "== fuzz the XDP program (-fuzztime ${FUZZTIME})" >&2
"$GO" test -count=1 -run '^$' -fuzz '^FuzzFrames$' -fuzztime "$FUZZTIME" ./bpf/
