# lanmonitor Makefile. `make help` lists the targets.
#
# Tools are built from the Go module proxy and cached by version outside the
# clone (hack/tools.sh), so a fresh machine needs only Go, gcc, git and apt.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

GO ?= go
BIN := $(CURDIR)/bin
PKGS := ./...

# Clang used to regenerate the committed BPF objects (Debian bookworm's default).
CLANG ?= clang-14
export BPF_CLANG := $(CLANG)
export BPF_CFLAGS := -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Demo

.PHONY: demo
demo: build ## Run lanmonitor on a lab LAN against a real kube-apiserver; prints kubectl get every report interval; Ctrl-C tears down (root).
	$(GO) build -o $(BIN)/demo ./hack/demo
	$(BIN)/demo run

.PHONY: demo-up
demo-up: build ## Start the demo in the background and print the KUBECONFIG to use (root).
	$(GO) build -o $(BIN)/demo ./hack/demo
	$(BIN)/demo up

.PHONY: demo-down
demo-down: ## Tear the background demo down.
	$(GO) build -o $(BIN)/demo ./hack/demo
	$(BIN)/demo down

##@ Local cluster (root)

IMAGE_TAG ?= dev

.PHONY: images
images: ## Build the controller and agent images into bin/images/ (no Docker, no registry); import them into the local cluster's containerd if it runs.
	$(GO) run ./hack/images -out $(BIN)/images -tag $(IMAGE_TAG)

.PHONY: cluster-up
cluster-up: ## Start a real single-node Kubernetes cluster here (containerd, etcd, control plane, kubelet on 127.0.0.1) with the lab interface lmlan0.
	hack/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Tear the local cluster down and check the host is as it was before cluster-up.
	hack/cluster/down.sh

.PHONY: e2e-cluster
e2e-cluster: ## helm install into the running local cluster and test it end to end (make cluster-up first).
	LANMONITOR_CLUSTER=existing $(GO) test -count=1 -v -timeout 15m ./test/cluster/

##@ Development

.PHONY: generate
generate: generate-bpf manifests ## Regenerate all generated code (bpf2go output, deepcopy, CRDs, RBAC).

.PHONY: generate-bpf
generate-bpf: ## Compile the XDP programs with clang and regenerate the bpf2go Go bindings (needs clang-14, libbpf-dev).
	@command -v $(CLANG) >/dev/null || { echo "$(CLANG) not found: apt-get install clang-14 libbpf-dev" >&2; exit 1; }
	$(GO) generate ./bpf/...

.PHONY: manifests
manifests: ## Regenerate deepcopy, CRDs and RBAC with controller-gen.
	@if [ -d api/v1alpha1 ] && ls api/v1alpha1/*.go >/dev/null 2>&1; then \
	  $(GO) tool controller-gen object paths=./api/... && \
	  $(GO) tool controller-gen crd rbac:roleName=lanmonitor-controller paths=./api/... paths=./controllers/... output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac; \
	fi
	charts/lanmonitor/hack/sync-crds.sh
	$(GO) run ./hack/crdref > docs/api-reference.md

.PHONY: verify
verify: ## Check that generated files match their sources, that code is formatted and that vendored uPlot matches its SHA256SUMS.
	hack/verify.sh

.PHONY: fmt
fmt: ## gofmt the Go code.
	gofmt -w $$(git ls-files '*.go' | grep -v '_bpfe[lb]\.go$$')

.PHONY: vet
vet: ## go vet.
	$(GO) vet $(PKGS)

.PHONY: build
build: ## Build the binaries into bin/.
	$(GO) build -o $(BIN)/ ./cmd/...

##@ Test

.PHONY: test
test: ## Run every test (as root: loads XDP into this kernel, starts a real kube-apiserver).
	hack/test.sh

.PHONY: bench
bench: ## Run the benchmarks and print the ratio tables (results go in docs/benchmarks.md).
	hack/bench.sh
