#!/usr/bin/env bash
# Copy the CRDs of crds/ (the single source of truth) into the Helm chart, byte for byte.
#
#   scripts/sync-chart-crds.sh          copy; prints what changed
#   scripts/sync-chart-crds.sh --check  change nothing; exit 1 if the chart's copy differs
#
# The chart keeps its copy in charts/statecar/files/crds/, NOT in charts/statecar/crds/: the
# chart renders the CRD as a template from that file so that `helm upgrade` upgrades it (Helm
# never upgrades anything in a chart's crds/ folder). charts/statecar/README.md explains why.
# tests/unit/test_chart.py fails when the copy drifts, and names this script.
set -euo pipefail
cd "$(dirname "$0")/.."

SOURCE_DIR=crds
TARGET_DIR=charts/statecar/files/crds
check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

mkdir -p "$TARGET_DIR"
status=0
shopt -s nullglob
for source in "$SOURCE_DIR"/*.yaml; do
  target="$TARGET_DIR/$(basename "$source")"
  if cmp -s "$source" "$target"; then
    continue
  fi
  if $check; then
    echo "out of date: $target (run scripts/sync-chart-crds.sh)" >&2
    status=1
  else
    cp "$source" "$target"
    echo "updated: $target"
  fi
done
# A CRD removed from crds/ must leave the chart too, or the chart would keep installing it.
for target in "$TARGET_DIR"/*.yaml; do
  if [[ ! -e "$SOURCE_DIR/$(basename "$target")" ]]; then
    if $check; then
      echo "stale: $target has no source in $SOURCE_DIR/" >&2
      status=1
    else
      rm -- "$target"
      echo "removed: $target"
    fi
  fi
done
exit "$status"
