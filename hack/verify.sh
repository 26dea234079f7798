#!/usr/bin/env bash
# hack/verify.sh: checks that generated files match their sources
# (`make verify`): bpf2go output, deepcopy, CRDs, RBAC; and that Go code is
# gofmt-formatted and vet-clean; and that the vendored uPlot is the one
# recorded (internal/webui/vendor/uplot/SHA256SUMS). It regenerates in place
# and fails if that changed any tracked file, listing the differences.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
unformatted=$(git ls-files '*.go' | grep -v '_bpfe[lb]\.go$' | xargs gofmt -l)
if [[ -n "$unformatted" ]]; then
	echo "not gofmt-formatted:" >&2
	echo "$unformatted" >&2
	fail=1
fi

go vet ./...

if ! (cd internal/webui/vendor/uplot && sha256sum --check --strict --quiet SHA256SUMS); then
	echo "internal/webui/vendor/uplot differs from its SHA256SUMS (see its README.md to update it)" >&2
	fail=1
fi

make --no-print-directory generate >&2
if ! git diff --quiet --exit-code; then
	echo "generated files differ from the committed ones (run make generate and commit):" >&2
	git --no-pager diff --stat >&2
	fail=1
fi
untracked=$(git ls-files --others --exclude-standard -- bpf api config charts)
if [[ -n "$untracked" ]]; then
	echo "generated files not committed:" >&2
	echo "$untracked" >&2
	fail=1
fi
exit "$fail"
