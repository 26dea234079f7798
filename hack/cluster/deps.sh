#!/usr/bin/env bash
# hack/cluster/deps.sh: installs the Debian packages the local cluster needs
# and that a fresh machine lacks: containerd (and ctr), runc,
# containernetworking-plugins (the loopback CNI plugin) and nftables (nft,
# with which the cluster records and restores the host's ruleset). They stay
# installed. With all of them present it changes nothing.
#
# hack/cluster/up.sh runs it first; so does test/cluster before it records
# the host, so that the record it compares against is taken with the tools
# the cluster will have: installing a package is not a change the cluster
# made. Root only.
set -euo pipefail

log() { printf 'cluster-deps: %s\n' "$*" >&2; }

need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/loopback ]] || need+=(containernetworking-plugins)
command -v nft >/dev/null || need+=(nftables)
((${#need[@]})) || exit 0

[[ $EUID -eq 0 ]] || {
	log "error: ${need[*]} missing and not root to install them: sudo $0"
	exit 1
}
log "installing ${need[*]} with apt"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${need[@]}" >&2; then
	apt-get update >&2
	apt-get install -y --no-install-recommends "${need[@]}" >&2
fi
