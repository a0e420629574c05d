#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, idempotently:
# Debian packages (redis-server, postgresql), the Python package with its dev extras, the Dapr JS
# SDK for the compatibility tier, the Dapr Python/Go/Java SDK runners for its gRPC part
# (scripts/compat-sdks.sh: a venv, a Go binary and a Maven build, cached outside the checkout), and the Go-built kube-apiserver/etcd/kubectl/helm (cached
# outside the checkout by scripts/k8s-tools.sh). Safe to re-run; fast when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*"; }

have_pg() {
  command -v initdb >/dev/null 2>&1 || [ -x /usr/local/bin/initdb ] || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
have_pg || missing+=(postgresql)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  # The Debian postgresql package starts a cluster of its own; the tests start their own servers.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop postgresql redis-server 2>/dev/null || true; fi
  service postgresql stop 2>/dev/null || true
  service redis-server stop 2>/dev/null || true
fi

# --cluster: what the real-pod tier (tests/cluster, `make cluster`) needs on top.
if [ "${1:-}" = "--cluster" ]; then
  cluster_missing=()
  for pkg in containerd runc containernetworking-plugins buildah mmdebstrap; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || cluster_missing+=("$pkg")
  done
  if [ ${#cluster_missing[@]} -gt 0 ]; then
    log "apt-get install ${cluster_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${cluster_missing[@]}" >/dev/null
  fi
  # The Debian package starts a system containerd; the cluster runs its own.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop containerd 2>/dev/null || true; fi
  log "Go-built Kubernetes tools incl. kubelet, controller-manager, scheduler"
  bash scripts/k8s-tools.sh --cluster
  exit 0
fi

log "pip install -e '.[dev]'"
python3 -m pip install --disable-pip-version-check -q -e '.[dev]'

if [ -f tests/compat/js/package.json ]; then
  if [ ! -d tests/compat/js/node_modules/@dapr/dapr ]; then
    log "npm ci (Dapr JS SDK for the compatibility tier)"
    (cd tests/compat/js && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

log "Dapr Python/Go/Java SDK runners for the gRPC compat tier (cached in \${STATECAR_CACHE:-~/.cache/statecar})"
bash scripts/compat-sdks.sh all >/dev/null

log "Go-built Kubernetes tools (cached in \${STATECAR_CACHE:-~/.cache/statecar})"
bash scripts/k8s-tools.sh

log "daprd, the reference for the interop tier and bench/ (cached in \${STATECAR_CACHE:-~/.cache/statecar})"
bash scripts/daprd.sh >/dev/null
