#!/usr/bin/env bash
# Copyright The LanMonitor Authors.
# SPDX-License-Identifier: Apache-2.0
#
# hack/tools.sh builds the external binaries LanMonitor's tests and demos need
# (Kubernetes control plane and node binaries, etcd, helm) from the Go module
# proxy alone, and caches them by version outside the clone so that CI jobs,
# demos and several clones on one machine reuse them.
#
# Usage: hack/tools.sh controlplane|cluster|helm
#
# All progress output goes to stderr; the last (and only) line on stdout is the
# result path, so callers can do:
#
#   export KUBEBUILDER_ASSETS="$(hack/tools.sh controlplane)"
#   HELM="$(hack/tools.sh helm)"
#
# Cache layout (CACHE = ${LANMONITOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lanmonitor}):
#
#   $CACHE/k8s/<kube version>/       kube-apiserver, etcd, kube-controller-manager,
#                                    kube-scheduler, kubelet, kubectl (binaries only,
#                                    usable as envtest BinaryAssetsDirectory)
#   $CACHE/helm/<helm version>/helm
#   $CACHE/stamps/...                one stamp per binary, written only after a
#                                    successful build; a binary without a matching
#                                    stamp is rebuilt
#   $CACHE/src/...                   generated scratch Go modules used for the builds
#   $CACHE/locks/...                 flock(1) lock files
#
# Delete $CACHE (or one of its version directories) to force a rebuild.

set -euo pipefail

# Pinned versions. The LANMONITOR_*_VERSION overrides exist for trying an
# upgrade locally; CI and the docs assume the defaults.
readonly KUBE_VERSION="${LANMONITOR_KUBE_VERSION:-v1.37.2}"
readonly ETCD_VERSION="${LANMONITOR_ETCD_VERSION:-v3.6.16}"
readonly HELM_VERSION="${LANMONITOR_HELM_VERSION:-v3.19.5}"

readonly CACHE="${LANMONITOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lanmonitor}"
readonly KUBE_DIR="$CACHE/k8s/$KUBE_VERSION"
readonly HELM_DIR="$CACHE/helm/$HELM_VERSION"

# Commands of k8s.io/kubernetes the scratch module is prepared for. All of them
# are recorded in the scratch module at once, so its go.sum is the same no
# matter which target ran first; only the requested ones are compiled.
readonly KUBE_ALL_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
readonly CONTROLPLANE_KUBE_CMDS=(kube-apiserver)

# Bump when the build recipe changes in a way that should invalidate caches.
readonly RECIPE_REV=1

# Files to remove if the script exits early (partial build outputs).
CLEANUP=()

usage() {
	cat >&2 <<EOF
Usage: ${0##*/} TARGET

Builds external tools from the Go module proxy and caches them under
  $CACHE
(set LANMONITOR_CACHE to change). Progress goes to stderr; the last line on
stdout is the result path.

Targets:
  controlplane  kube-apiserver $KUBE_VERSION and etcd $ETCD_VERSION; prints the
                directory (use as KUBEBUILDER_ASSETS / envtest BinaryAssetsDirectory)
  cluster       controlplane plus kube-controller-manager, kube-scheduler, kubelet
                and kubectl $KUBE_VERSION; prints the same directory
  helm          helm $HELM_VERSION; prints the path of the helm binary
EOF
}

# log MSG...: print a progress message to stderr.
log() {
	printf 'tools.sh: %s\n' "$*" >&2
}

# die MSG...: print an error to stderr and exit.
die() {
	log "error: $*"
	exit 1
}

# cleanup: remove partial outputs left by an interrupted build (EXIT trap).
cleanup() {
	if ((${#CLEANUP[@]})); then
		rm -rf -- "${CLEANUP[@]}"
	fi
}

# now: current time in seconds since the epoch (for build timings).
now() {
	date +%s
}

# stamp_path OUT: path of the stamp file that vouches for the binary at OUT.
stamp_path() {
	local out=$1
	printf '%s/stamps/%s.stamp' "$CACHE" "${out#"$CACHE"/}"
}

# is_fresh OUT RECIPE: succeed if OUT is an executable file and its stamp
# records exactly RECIPE (i.e. it was fully built with the current recipe).
is_fresh() {
	local out=$1 recipe=$2 stamp
	stamp=$(stamp_path "$out")
	[[ -x $out && -f $stamp && "$(<"$stamp")" == "$recipe" ]]
}

# write_stamp OUT RECIPE: record that OUT was built with RECIPE (atomically).
write_stamp() {
	local out=$1 recipe=$2 stamp
	stamp=$(stamp_path "$out")
	mkdir -p "${stamp%/*}"
	printf '%s\n' "$recipe" >"$stamp.tmp.$$"
	mv -f "$stamp.tmp.$$" "$stamp"
}

# invalidate OUT: remove OUT's stamp so a half-replaced OUT is never trusted.
invalidate() {
	rm -f -- "$(stamp_path "$1")"
}

# lock NAME: take an exclusive flock on $CACHE/locks/NAME.lock for the rest of
# the process (released automatically on exit). Waits if another invocation
# holds it, so concurrent runs build each thing once and never see a partial
# cache entry.
lock() {
	local name=$1 fd
	mkdir -p "$CACHE/locks"
	exec {fd}>"$CACHE/locks/$name.lock"
	if ! flock -n "$fd"; then
		log "waiting for lock $name (another tools.sh invocation is building)"
		flock "$fd"
	fi
}

# go_env: the environment all builds run with: module mode outside any
# workspace, and whatever GOPROXY/GOFLAGS the caller has.
go_env() {
	export GOWORK=off GO111MODULE=on
	command -v go >/dev/null || die "go not found in PATH"
}

# staging_version: the k8s.io/<staging> module version matching KUBE_VERSION
# (v1.37.2 -> v0.37.2).
staging_version() {
	printf 'v0.%s' "${KUBE_VERSION#v1.}"
}

# kube_ldflags: the version stamp Kubernetes' own build puts into its binaries;
# without it they report v0.0.0-master and clients fail to parse the version.
kube_ldflags() {
	local minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	printf '%s' "-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" \
		" -X k8s.io/component-base/version.gitMajor=1" \
		" -X k8s.io/component-base/version.gitMinor=$minor" \
		" -X k8s.io/component-base/version.gitTreeState=clean"
}

# kube_recipe NAME: the stamp contents for Kubernetes binary NAME.
kube_recipe() {
	printf 'rev=%s k8s.io/kubernetes/cmd/%s@%s cgo=0 ldflags=%s' \
		"$RECIPE_REV" "$1" "$KUBE_VERSION" "$(kube_ldflags)"
}

# etcd_recipe: the stamp contents for etcd.
etcd_recipe() {
	printf 'rev=%s go.etcd.io/etcd/server/v3/etcdmain@%s cgo=0' "$RECIPE_REV" "$ETCD_VERSION"
}

# helm_recipe: the stamp contents for helm.
helm_recipe() {
	printf 'rev=%s helm.sh/helm/v3/cmd/helm@%s cgo=0' "$RECIPE_REV" "$HELM_VERSION"
}

# kube_staging_modules GOMOD: print the modules that k8s.io/kubernetes's go.mod
# (file GOMOD) replaces with ./staging/... directories, one per line. Handles
# both the `replace ( ... )` block and single-line `replace a => b` forms.
kube_staging_modules() {
	awk '
		/^[ \t]*\/\// { next }
		/^replace[ \t]*\(/ { inblock = 1; next }
		inblock && /^[ \t]*\)/ { inblock = 0; next }
		{
			line = $0
			if (!inblock) {
				if (line !~ /^replace[ \t]/) next
				sub(/^replace[ \t]+/, "", line)
			}
			n = split(line, f, /[ \t]+/)
			for (i = 1; i <= n; i++) if (f[i] == "=>") break
			if (i < n && f[i + 1] ~ /^\.\/staging\//) {
				start = (f[1] == "") ? 2 : 1
				print f[start]
			}
		}
	' "$1"
}

# kube_godebug_settings GOMOD: print the godebug key=value settings of
# k8s.io/kubernetes's go.mod (they only apply to the main module, so the
# scratch module has to repeat them to behave like an upstream build).
kube_godebug_settings() {
	awk '
		/^godebug[ \t]*\(/ { inblock = 1; next }
		inblock && /^[ \t]*\)/ { inblock = 0; next }
		inblock && NF { print $1; next }
		/^godebug[ \t]/ { print $2 }
	' "$1"
}

# prepare_kube_module: generate (once per version/recipe) the scratch module
# $CACHE/src/k8s-<version> that requires k8s.io/kubernetes, replaces its staging
# modules with their published k8s.io/<m> v0.Y.Z versions, blank-imports the
# wanted commands from a build-tagged file and is `go mod tidy`-ed so that
# go.sum covers every dependency. Caller must hold the k8s lock.
prepare_kube_module() {
	local src="$CACHE/src/k8s-$KUBE_VERSION"
	local recipe gomod staging m setting n t0 edits
	recipe="rev=$RECIPE_REV k8s.io/kubernetes@$KUBE_VERSION cmds=${KUBE_ALL_CMDS[*]}"
	if [[ -f $src/go.sum && -f $CACHE/stamps/src/k8s-$KUBE_VERSION.stamp &&
		"$(<"$CACHE/stamps/src/k8s-$KUBE_VERSION.stamp")" == "$recipe" ]]; then
		return 0
	fi
	t0=$(now)
	log "preparing scratch module $src"
	rm -f -- "$CACHE/stamps/src/k8s-$KUBE_VERSION.stamp"
	rm -rf -- "$src"
	mkdir -p "$src" "$CACHE/stamps/src"

	gomod=$(cd "$src" && go list -m -f '{{.GoMod}}' "k8s.io/kubernetes@$KUBE_VERSION")
	[[ -f $gomod ]] || die "could not fetch go.mod of k8s.io/kubernetes@$KUBE_VERSION"
	staging=$(kube_staging_modules "$gomod")
	[[ -n $staging ]] || die "no ./staging replacements found in $gomod"

	edits=(-require="k8s.io/kubernetes@$KUBE_VERSION")
	while read -r m; do
		edits+=(-replace="$m=$m@$(staging_version)")
	done <<<"$staging"
	while read -r setting; do
		if [[ -n $setting ]]; then
			edits+=(-godebug="$setting")
		fi
	done < <(kube_godebug_settings "$gomod")

	(
		cd "$src"
		go mod init lanmonitor.local/tools/k8s
		go mod edit "${edits[@]}"
		{
			printf '//go:build tools\n\n'
			printf '// Package tools is generated by hack/tools.sh. It records the\n'
			printf '// k8s.io/kubernetes commands built from this module so that\n'
			printf '// `go mod tidy` puts all their dependencies into go.sum.\n'
			printf 'package tools\n\nimport (\n'
			for m in "${KUBE_ALL_CMDS[@]}"; do
				printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$m"
			done
			printf ')\n'
		} >tools.go
		go mod tidy >&2
	)
	n=$(wc -l <<<"$staging")
	printf '%s\n' "$recipe" >"$CACHE/stamps/src/k8s-$KUBE_VERSION.stamp"
	log "scratch module ready ($n staging modules replaced) in $(($(now) - t0))s"
}

# build_kube NAME...: build the named k8s.io/kubernetes commands into
# $KUBE_DIR, skipping those already built with the current recipe.
build_kube() {
	local name todo=() t0 tmp
	for name in "$@"; do
		is_fresh "$KUBE_DIR/$name" "$(kube_recipe "$name")" || todo+=("$name")
	done
	((${#todo[@]})) || return 0

	lock "k8s-$KUBE_VERSION"
	prepare_kube_module
	mkdir -p "$KUBE_DIR"
	for name in "${todo[@]}"; do
		# Leftovers of an interrupted build (only k8s-lock holders write these).
		rm -f -- "$KUBE_DIR/.$name.tmp."*
	done
	for name in "${todo[@]}"; do
		# Re-check under the lock: another invocation may have built it meanwhile.
		is_fresh "$KUBE_DIR/$name" "$(kube_recipe "$name")" && continue
		t0=$(now)
		if [[ $name == kube-apiserver ]]; then
			log "building $name $KUBE_VERSION (about 4-10 min cold on 2 cores)"
		else
			log "building $name $KUBE_VERSION"
		fi
		invalidate "$KUBE_DIR/$name"
		tmp="$KUBE_DIR/.$name.tmp.$$"
		CLEANUP+=("$tmp")
		(cd "$CACHE/src/k8s-$KUBE_VERSION" &&
			CGO_ENABLED=0 go build -trimpath -ldflags "$(kube_ldflags)" \
				-o "$tmp" "k8s.io/kubernetes/cmd/$name" >&2)
		mv -f -- "$tmp" "$KUBE_DIR/$name"
		write_stamp "$KUBE_DIR/$name" "$(kube_recipe "$name")"
		log "built $KUBE_DIR/$name in $(($(now) - t0))s"
	done
}

# build_etcd: build etcd into $KUBE_DIR from a scratch module whose main calls
# go.etcd.io/etcd/server/v3/etcdmain.Main, unless already built.
build_etcd() {
	local out="$KUBE_DIR/etcd" src="$CACHE/src/etcd-$ETCD_VERSION" t0 tmp
	is_fresh "$out" "$(etcd_recipe)" && return 0

	lock "etcd-$ETCD_VERSION"
	is_fresh "$out" "$(etcd_recipe)" && return 0
	t0=$(now)
	log "building etcd $ETCD_VERSION"
	invalidate "$out"
	rm -rf -- "$src"
	mkdir -p "$src" "$KUBE_DIR"
	tmp="$KUBE_DIR/.etcd.tmp.$$"
	CLEANUP+=("$tmp")
	(
		cd "$src"
		go mod init lanmonitor.local/tools/etcd
		cat >main.go <<'EOF'
// Command etcd is generated by hack/tools.sh: upstream etcd's server main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
EOF
		go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
		go mod tidy >&2
		CGO_ENABLED=0 go build -trimpath -o "$tmp" . >&2
	)
	mv -f -- "$tmp" "$out"
	write_stamp "$out" "$(etcd_recipe)"
	log "built $out in $(($(now) - t0))s"
}

# helm_ldflags: what helm's release Makefile stamps: the version (otherwise
# `helm version` says v3.19) and the Kubernetes version of its client-go
# (otherwise `helm template`/`lint` assume Kubernetes 1.20).
helm_ldflags() {
	local gomod cg major minor
	gomod=$(go list -m -f '{{.GoMod}}' "helm.sh/helm/v3@$HELM_VERSION")
	cg=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")
	[[ $cg =~ ^v0\.([0-9]+)\. ]] || die "cannot find k8s.io/client-go version in $gomod"
	major=1 minor=${BASH_REMATCH[1]}
	printf '%s' "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
		" -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
		" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major" \
		" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
		" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major" \
		" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
}

# build_helm: `go install helm.sh/helm/v3/cmd/helm@HELM_VERSION` into
# $HELM_DIR (via a temporary GOBIN, then renamed), unless already built.
build_helm() {
	local out="$HELM_DIR/helm" t0 gobin ldflags
	is_fresh "$out" "$(helm_recipe)" && return 0

	lock "helm-$HELM_VERSION"
	is_fresh "$out" "$(helm_recipe)" && return 0
	t0=$(now)
	log "building helm $HELM_VERSION"
	invalidate "$out"
	mkdir -p "$HELM_DIR"
	gobin="$HELM_DIR/.gobin.tmp.$$"
	CLEANUP+=("$gobin")
	ldflags=$(cd "$HELM_DIR" && helm_ldflags)
	(cd "$HELM_DIR" &&
		GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
			"helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2)
	mv -f -- "$gobin/helm" "$out"
	write_stamp "$out" "$(helm_recipe)"
	log "built $out in $(($(now) - t0))s"
}

main() {
	if (($# != 1)); then
		usage
		exit 2
	fi
	# Keep stdout for the result line only: everything else (including any
	# chatter from go) goes to stderr.
	exec 3>&1 1>&2
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	case $1 in
	controlplane)
		go_env
		build_kube "${CONTROLPLANE_KUBE_CMDS[@]}"
		build_etcd
		printf '%s\n' "$KUBE_DIR" >&3
		;;
	cluster)
		go_env
		build_kube "${KUBE_ALL_CMDS[@]}"
		build_etcd
		printf '%s\n' "$KUBE_DIR" >&3
		;;
	helm)
		go_env
		build_helm
		printf '%s\n' "$HELM_DIR/helm" >&3
		;;
	-h | --help | help)
		usage
		;;
	*)
		usage
		exit 2
		;;
	esac
}

main "$@"
