#!/usr/bin/env bash
# Install (once) the official Dapr SDKs the gRPC compat tier drives, OUTSIDE the checkout, under
# ${STATECAR_CACHE:-$HOME/.cache/statecar}, each keyed by its pinned version and lock file:
#   python-sdk/<hash>/   a venv with tests/compat/python_sdk/requirements.txt (exact pins)
#   go-sdk/<hash>/scenario   the Go runner (tests/compat/go_sdk, go.mod + go.sum pin the SDK),
#                        built with GOMODCACHE/GOCACHE under the same cache (shared with k8s-tools.sh)
#   java-sdk/<hash>/     the Java runner's jar + classpath (tests/compat/java_sdk/pom.xml; ~/.m2)
#
#   scripts/compat-sdks.sh [python|go|java|all]   -> prints "<sdk>=<path>" per SDK installed
#
# Cached: a second run returns at once. A failed install prints why and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${STATECAR_CACHE:-$HOME/.cache/statecar}
mkdir -p "$CACHE"

log() { printf '[compat-sdks] %s\n' "$*" >&2; }
key() { cat "$@" | sha256sum | cut -c1-12; }

python_sdk() {
  local req=tests/compat/python_sdk/requirements.txt
  local dir="$CACHE/python-sdk/$(key "$req")"
  if [ ! -f "$dir/.installed" ]; then
    log "Python SDK venv in $dir"
    rm -rf "$dir.tmp" && python3 -m venv "$dir.tmp"
    "$dir.tmp/bin/pip" install --disable-pip-version-check -q --no-deps -r "$req"
    "$dir.tmp/bin/pip" check >&2
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    # venvs hold absolute paths: rebuild the scripts' shebangs for the new place.
    sed -i "1s|$dir.tmp|$dir|" "$dir"/bin/* 2>/dev/null || true
    touch "$dir/.installed"
  fi
  echo "python=$dir/bin/python"
}

go_sdk() {
  local src=tests/compat/go_sdk
  local dir="$CACHE/go-sdk/$(key $src/go.mod $src/go.sum $src/main.go)"
  if [ ! -x "$dir/scenario" ]; then
    log "Go SDK runner in $dir"
    mkdir -p "$dir"
    (cd "$src" && GOMODCACHE="$CACHE/go" GOCACHE="$CACHE/go-build" GOFLAGS=-mod=mod \
      go build -trimpath -o "$dir/scenario.tmp" .)
    mv "$dir/scenario.tmp" "$dir/scenario"
  fi
  echo "go=$dir/scenario"
}

java_sdk() {
  local src=tests/compat/java_sdk
  local dir="$CACHE/java-sdk/$(key $src/pom.xml $(find $src/src -type f | sort))"
  if [ ! -f "$dir/classpath.txt" ]; then
    log "Java SDK runner in $dir"
    rm -rf "$dir" && mkdir -p "$dir"
    cp -r "$src/pom.xml" "$src/src" "$dir/"
    (cd "$dir" && mvn -q -B -Dstyle.color=never package -DskipTests \
      && mvn -q -B -Dstyle.color=never dependency:build-classpath -Dmdep.outputFile=classpath.tmp >&2 \
      && mv classpath.tmp classpath.txt)
  fi
  echo "java=$dir"
}

case "${1:-all}" in
  python) python_sdk ;;
  go) go_sdk ;;
  java) java_sdk ;;
  all) python_sdk; go_sdk; java_sdk ;;
  *) echo "usage: $0 [python|go|java|all]" >&2; exit 2 ;;
esac
