#!/usr/bin/env bash
# charts/lanmonitor/hack/sync-crds.sh: keeps the chart's crds/ an exact copy of
# the CustomResourceDefinitions controller-gen writes to config/crd/bases/.
#
#   sync-crds.sh          copy config/crd/bases/*.yaml to crds/, removing
#                         CRDs that no longer exist there
#   sync-crds.sh --check  change nothing; exit 1 and name every file that
#                         differs, is missing or is extra
#
# Helm installs crds/ on `helm install` only, verbatim (no templating), and
# never upgrades or deletes them; see the chart's NOTES.txt.
set -euo pipefail

chart="$(cd "$(dirname "$0")/.." && pwd)"
src="$chart/../../config/crd/bases"
dst="$chart/crds"

check=0
case "${1:-}" in
"") ;;
--check) check=1 ;;
*)
	echo "usage: ${0##*/} [--check]" >&2
	exit 2
	;;
esac

[[ -d "$src" ]] || { echo "${0##*/}: $src not found" >&2; exit 1; }
shopt -s nullglob
srcs=("$src"/*.yaml)
((${#srcs[@]})) || { echo "${0##*/}: no CRDs in $src" >&2; exit 1; }

fail=0
for f in "${srcs[@]}"; do
	name="${f##*/}"
	if ((check)); then
		if [[ ! -f "$dst/$name" ]]; then
			echo "missing: charts/lanmonitor/crds/$name" >&2
			fail=1
		elif ! cmp -s "$f" "$dst/$name"; then
			echo "differs: charts/lanmonitor/crds/$name (from config/crd/bases/$name)" >&2
			fail=1
		fi
	else
		mkdir -p "$dst"
		cmp -s "$f" "$dst/$name" 2>/dev/null || cp "$f" "$dst/$name"
	fi
done
for f in "$dst"/*.yaml; do
	name="${f##*/}"
	[[ -f "$src/$name" ]] && continue
	if ((check)); then
		echo "extra: charts/lanmonitor/crds/$name (not in config/crd/bases)" >&2
		fail=1
	else
		rm "$f"
	fi
done
if ((fail)); then
	echo "run charts/lanmonitor/hack/sync-crds.sh (or make manifests)" >&2
fi
exit "$fail"
