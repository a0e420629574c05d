#!/usr/bin/env bash
# Build and cache the binaries the e2e tier runs as local processes:
#   kube-apiserver, kubectl  (k8s.io/kubernetes)
#   kubelet, kube-controller-manager, kube-scheduler  (k8s.io/kubernetes; only with --cluster,
#                            for the tests/cluster tier that runs real pods)
#   etcd                     (go.etcd.io/etcd/server/v3)
#   helm                     (helm.sh/helm/v3/cmd/helm)
#
# Everything lives OUTSIDE the checkout, under ${STATECAR_CACHE:-$HOME/.cache/statecar}:
#   bin/<name>-<version>   the built binary (never half-written: built to a temp name, renamed)
#   bin/<name>             symlink to the versioned binary selected by this script
#   go/                    GOPATH / GOMODCACHE (module downloads, reused across runs)
#   go-build/              GOCACHE (compiled packages, reused across runs)
#   build/<module>-<ver>/  throwaway Go modules used to build each tool
#   build.lock             held while building, so concurrent runs don't race
#
# Only the first run on a machine builds (minutes on two cores); later runs find the
# versioned binaries and return at once. The last line printed is the bin directory.
#
# Versions can be overridden: STATECAR_K8S_VERSION, STATECAR_ETCD_VERSION, STATECAR_HELM_VERSION.
set -euo pipefail

# --cluster: also build the node components the real-pod tier needs.
WITH_CLUSTER=0
[[ "${1:-}" == "--cluster" ]] && WITH_CLUSTER=1

K8S_VERSION="${STATECAR_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${STATECAR_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${STATECAR_HELM_VERSION:-v3.22.0}"

CACHE="${STATECAR_CACHE:-$HOME/.cache/statecar}"
BIN="$CACHE/bin"

log() { printf '[k8s-tools] %s\n' "$*" >&2; }

# --- fast path: everything already built and linked -> no go, no lock ------------------
link_ok() { # name version
  [[ -x "$BIN/$1-$2" && "$(readlink "$BIN/$1" 2>/dev/null || true)" == "$1-$2" ]]
}
CLUSTER_TOOLS=(kubelet kube-controller-manager kube-scheduler)
all_ok() {
  link_ok kube-apiserver "$K8S_VERSION" && link_ok kubectl "$K8S_VERSION" &&
    link_ok etcd "$ETCD_VERSION" && link_ok helm "$HELM_VERSION" || return 1
  if [[ $WITH_CLUSTER == 1 ]]; then
    local t
    for t in "${CLUSTER_TOOLS[@]}"; do link_ok "$t" "$K8S_VERSION" || return 1; done
  fi
}
if all_ok; then
  echo "$BIN"
  exit 0
fi

# --- toolchain and environment ------------------------------------------------------
GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else log "no Go toolchain found (set GO=/path/to/go)"; exit 1
  fi
fi

mkdir -p "$BIN" "$CACHE/build" "$CACHE/go" "$CACHE/go-build"
export GOPATH="$CACHE/go"
export GOMODCACHE="$CACHE/go/pkg/mod"
export GOCACHE="$CACHE/go-build"
export GOTOOLCHAIN=local      # never try to download another toolchain
export GOFLAGS=-mod=mod       # the throwaway modules get their go.sum filled in on the fly
export CGO_ENABLED=0
export GOWORK=off
unset GOBIN GOOS GOARCH

NICE=()
command -v nice >/dev/null 2>&1 && NICE=(nice -n 10)

# Serialize builds across concurrent invocations (e.g. two test sessions).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/build.lock"
  if ! flock -n 9; then
    log "another k8s-tools.sh is building in $CACHE; waiting for it"
    flock 9
  fi
  if all_ok; then echo "$BIN"; exit 0; fi
  # We hold the lock: temp outputs left by a killed earlier run are garbage now.
  rm -f "$BIN"/.*.tmp.* "$BIN"/.*.link.*
fi

log "go: $("$GO" version)"
log "cache: $CACHE"

# Print a line every 30 s while a long build runs, so CI logs show life.
HEARTBEAT_PID=""
heartbeat_start() { # label
  local label="$1" start="$SECONDS"
  (
    trap 'exit 0' TERM
    while sleep 30; do
      printf '[k8s-tools]   ... still building %s (%ds)\n' "$label" "$((SECONDS - start))" >&2
    done
  ) &
  HEARTBEAT_PID=$!
}
heartbeat_stop() {
  if [[ -n "$HEARTBEAT_PID" ]]; then
    kill "$HEARTBEAT_PID" 2>/dev/null || true
    wait "$HEARTBEAT_PID" 2>/dev/null || true
    HEARTBEAT_PID=""
  fi
}
TMP_OUTPUTS=()
cleanup() {
  heartbeat_stop
  local f
  for f in "${TMP_OUTPUTS[@]+"${TMP_OUTPUTS[@]}"}"; do rm -f "$f"; done
}
trap cleanup EXIT

# Atomically point bin/<name> at bin/<name>-<version>.
link() { # name version
  ln -sfn "$1-$2" "$BIN/.$1.link.$$"
  mv -Tf "$BIN/.$1.link.$$" "$BIN/$1"
}

# build <name> <version> <moddir> <package> [ldflags...]
build() {
  local name="$1" version="$2" moddir="$3" pkg="$4"
  shift 4
  local out="$BIN/$name-$version"
  if [[ -x "$out" ]]; then
    link "$name" "$version"
    log "$name $version: cached"
    return 0
  fi
  local tmp="$BIN/.$name-$version.tmp.$$"
  TMP_OUTPUTS+=("$tmp")
  log "building $name $version from $pkg (this takes minutes on two cores)"
  local start="$SECONDS"
  heartbeat_start "$name"
  (
    cd "$moddir"
    "${NICE[@]}" "$GO" build -trimpath -ldflags="-s -w $*" -o "$tmp" "$pkg"
  ) || { heartbeat_stop; log "building $name failed"; return 1; }
  heartbeat_stop
  mv -f "$tmp" "$out"
  link "$name" "$version"
  log "built $name $version in $((SECONDS - start))s ($(du -h "$out" | cut -f1))"
}

# Write a file atomically unless it already has exactly this content.
write_file() { # path content
  if [[ -f "$1" && "$(cat "$1")" == "$2" ]]; then return 0; fi
  printf '%s\n' "$2" >"$1.tmp.$$"
  mv -f "$1.tmp.$$" "$1"
}

# A throwaway module's go.mod: rewritten only when the wanted header changes, so the
# requirements `go build -mod=mod` adds below it are kept between runs.
ensure_gomod() { # dir header
  local dir="$1" header="$2" stamp="$1/go.mod.header"
  mkdir -p "$dir"
  if [[ -f "$dir/go.mod" && -f "$stamp" && "$(cat "$stamp")" == "$header" ]]; then
    return 0
  fi
  rm -f "$dir/go.sum"
  write_file "$dir/go.mod" "$header"
  write_file "$stamp" "$header"
}

# --- kube-apiserver + kubectl ---------------------------------------------------------
build_kubernetes() {
  local want=(kube-apiserver kubectl) t done_all=1
  [[ $WITH_CLUSTER == 1 ]] && want+=("${CLUSTER_TOOLS[@]}")
  for t in "${want[@]}"; do [[ -x "$BIN/$t-$K8S_VERSION" ]] || done_all=0; done
  if [[ $done_all == 1 ]]; then
    for t in "${want[@]}"; do link "$t" "$K8S_VERSION"; done
    log "${want[*]} $K8S_VERSION: cached"
    return 0
  fi
  local dir="$CACHE/build/kubernetes-$K8S_VERSION"
  local staging_version="v0.${K8S_VERSION#v1.}"   # v1.34.4 -> v0.34.4
  mkdir -p "$dir"

  # k8s.io/kubernetes requires its staging repos at v0.0.0 and replaces them with
  # ./staging paths (ignored outside its own repo); read that list from its go.mod and
  # replace each with the published v0.Y.Z tag instead.
  log "resolving k8s.io/kubernetes $K8S_VERSION"
  local kmod
  kmod="$(cd "$dir" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  if [[ -z "$kmod" || ! -f "$kmod" ]]; then
    log "could not download k8s.io/kubernetes@$K8S_VERSION"
    return 1
  fi
  local staging
  staging="$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$kmod" | sort -u)"
  if [[ -z "$staging" ]]; then
    log "found no staging replaces in $kmod"
    return 1
  fi
  local go_line
  go_line="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$kmod" | head -n1)"

  local header m
  header="// Throwaway module that builds kube-apiserver and kubectl $K8S_VERSION (k8s-tools.sh).
module statecar.local/k8s-tools/kubernetes

go ${go_line:-1.24.0}

godebug default=go${go_line%.*}

require k8s.io/kubernetes $K8S_VERSION

replace ("
  for m in $staging; do
    header+=$'\n'"	$m => $m $staging_version"
  done
  header+=$'\n'")"
  ensure_gomod "$dir" "$header"
  log "replacing $(wc -w <<<"$staging") staging modules with $staging_version"

  local base="k8s.io/component-base/version" cgo="k8s.io/client-go/pkg/version"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local vflags=() p
  for p in "$base" "$cgo"; do
    vflags+=("-X" "$p.gitVersion=$K8S_VERSION" "-X" "$p.gitMajor=1" "-X" "$p.gitMinor=$minor"
      "-X" "$p.gitTreeState=clean" "-X" "$p.buildDate=1970-01-01T00:00:00Z")
  done
  build kube-apiserver "$K8S_VERSION" "$dir" k8s.io/kubernetes/cmd/kube-apiserver "${vflags[@]}"
  build kubectl "$K8S_VERSION" "$dir" k8s.io/kubernetes/cmd/kubectl "${vflags[@]}"
  if [[ $WITH_CLUSTER == 1 ]]; then
    # Smallest first; all three reuse the packages kube-apiserver already compiled.
    build kube-scheduler "$K8S_VERSION" "$dir" k8s.io/kubernetes/cmd/kube-scheduler "${vflags[@]}"
    build kubelet "$K8S_VERSION" "$dir" k8s.io/kubernetes/cmd/kubelet "${vflags[@]}"
    build kube-controller-manager "$K8S_VERSION" "$dir" \
      k8s.io/kubernetes/cmd/kube-controller-manager "${vflags[@]}"
  fi
}

# --- etcd -------------------------------------------------------------------------------
build_etcd() {
  local dir="$CACHE/build/etcd-$ETCD_VERSION"
  # go.etcd.io/etcd/server/v3 has replace directives, so `go install ...@version` refuses it;
  # build its main package (server/main.go, the etcd binary) from a throwaway module.
  ensure_gomod "$dir" "// Throwaway module that builds etcd $ETCD_VERSION (k8s-tools.sh).
module statecar.local/k8s-tools/etcd

go 1.24.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  build etcd "$ETCD_VERSION" "$dir" go.etcd.io/etcd/server/v3
}

# --- helm -------------------------------------------------------------------------------
build_helm() {
  local dir="$CACHE/build/helm-$HELM_VERSION"
  ensure_gomod "$dir" "// Throwaway module that builds helm $HELM_VERSION (k8s-tools.sh).
module statecar.local/k8s-tools/helm

go 1.24.0

require helm.sh/helm/v3 $HELM_VERSION"
  build helm "$HELM_VERSION" "$dir" helm.sh/helm/v3/cmd/helm \
    -X "helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    -X "helm.sh/helm/v3/internal/version.gitTreeState=clean"
}

# Smallest first, so a failure in the big one still leaves the others usable.
build_etcd
build_helm
build_kubernetes

echo "$BIN"
