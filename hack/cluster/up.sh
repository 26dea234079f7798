#!/usr/bin/env bash
# hack/cluster/up.sh (make cluster-up): a real single-node Kubernetes cluster
# on this machine, for `helm install` of the chart with the agent as a
# kubelet-run DaemonSet pod.
#
# - Installs Debian's containerd, runc, containernetworking-plugins and
#   nftables with apt if missing (hack/cluster/deps.sh; they stay installed).
# - Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#   kubectl and etcd (hack/tools.sh cluster, cached by version), the cluster
#   helper (bin/lmcluster), the image builder (bin/lmimages) and the pause
#   image (bin/images/lanmonitor-pause-v1.tar).
# - Then `bin/lmcluster up`: records the host, starts containerd, etcd,
#   kube-apiserver, kube-controller-manager, kube-scheduler and kubelet on
#   127.0.0.1 with their files under /var/lib/lanmonitor-cluster and
#   /run/lanmonitor-cluster, creates the lab interface lmlan0 (a veth with
#   no address whose peer is in the lab namespace lmcluster-lan; refused
#   unless forwarding is off) and waits for the node to be Ready.
#
# A second run while a cluster is up says so and changes nothing. Tear down
# with hack/cluster/down.sh (make cluster-down). Root only.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf 'cluster-up: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[[ $EUID -eq 0 ]] || die "needs root (it starts kubelet and containerd): sudo make cluster-up"
: "${GO:=go}"
t0=$(date +%s)

hack/cluster/deps.sh

KUBE_DIR="$(hack/tools.sh cluster)"
"$GO" build -o bin/lmcluster ./hack/cluster
"$GO" build -o bin/lmimages ./hack/images
bin/lmimages -pause -out bin/images
log "binaries ready in $(($(date +%s) - t0))s"

exec bin/lmcluster up --kube-dir "$KUBE_DIR" --pause-image bin/images/lanmonitor-pause-v1.tar
