#!/usr/bin/env bash
# hack/cluster/down.sh (make cluster-down): tears down the cluster of
# hack/cluster/up.sh. It stops only the processes up.sh recorded (by PID and
# start time) and the containers and shims of its containerd, unmounts and
# removes the cluster's directories, cgroups, lab interface and namespace,
# restores the sysctls kubelet changed, /sys/fs/bpf's mount propagation and
# the nft ruleset, then compares the host with the record taken before
# cluster-up and fails listing any difference (sysctls, mounts, nft
# ruleset, cgroups, directories, interfaces, processes).
#
# With nothing up it says so. KEEP_LOGS=DIR copies the cluster's logs first.
set -euo pipefail
cd "$(dirname "$0")/../.."

[[ $EUID -eq 0 ]] || {
	echo "cluster-down: needs root: sudo make cluster-down" >&2
	exit 1
}
: "${GO:=go}"
# Rebuild the helper only if it is missing: down must work even while the
# tree does not compile.
if [[ ! -x bin/lmcluster ]]; then
	"$GO" build -o bin/lmcluster ./hack/cluster
fi
exec bin/lmcluster down ${KEEP_LOGS:+--keep-logs "$KEEP_LOGS"}
