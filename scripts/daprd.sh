#!/usr/bin/env bash
# Build and cache daprd, the reference every compatibility and speed claim is measured against.
#
# daprd is `github.com/dapr/dapr/cmd/daprd` at STATECAR_DAPRD_VERSION (default v1.18.1), built
# from the Go module proxy. dapr's go.mod carries replace directives, which a plain
# `go install module@version` refuses, so the build runs in a throwaway module (under
# $CACHE/build/daprd-<version>) that requires dapr and copies those directives from dapr's own
# go.mod. Its main package calls daprd's own `cmd/daprd/app.Run()`; the component registrations
# are dapr's own `cmd/daprd/components/*.go` files, copied from the module cache at build time
# and compiled with `-tags allcomponents`, but only the ones our tiers use (the state stores
# statecar serves, the local secret stores, Kubernetes name resolution). All 140 would pull in
# every cloud SDK and add tens of minutes to a cold CI run for components nobody here starts.
#
# Output: $CACHE/bin/daprd-<version> (built to a temp name, renamed) and the $CACHE/bin/daprd
# symlink. The last line printed is the binary's path. Only the first run on a machine builds.
#
# Running it: daprd standalone resolves names over mDNS by default, which multicasts beyond
# the machine. Always give it a Configuration with `nameResolution.component: kubernetes` and
# loopback listeners; tests/support/daprd.py does both.
set -euo pipefail

VERSION="${STATECAR_DAPRD_VERSION:-v1.18.1}"
CACHE="${STATECAR_CACHE:-$HOME/.cache/statecar}"
BIN="$CACHE/bin"
OUT="$BIN/daprd-$VERSION"
COMPONENTS=(state_redis state_postgres state_sqlite state_in-memory
  secretstores_local_file secretstores_local_env nameresolution_kubernetes)

log() { printf '[daprd] %s\n' "$*" >&2; }

if [[ -x "$OUT" && "$(readlink "$BIN/daprd" 2>/dev/null || true)" == "daprd-$VERSION" ]]; then
  echo "$OUT"
  exit 0
fi

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else log "no Go toolchain found (set GO=/path/to/go)"; exit 1
  fi
fi

mkdir -p "$BIN" "$CACHE/build" "$CACHE/go" "$CACHE/go-build"
export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/pkg/mod" GOCACHE="$CACHE/go-build"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOWORK=off
# sqlite is modernc.org/sqlite (pure Go), so no C toolchain is needed.
export CGO_ENABLED=0
unset GOBIN GOOS GOARCH

exec 9>"$CACHE/daprd-build.lock"
flock 9
if [[ -x "$OUT" ]]; then ln -sfn "daprd-$VERSION" "$BIN/daprd"; echo "$OUT"; exit 0; fi

start=$SECONDS
WORK="$CACHE/build/daprd-$VERSION"
rm -rf "$WORK"
mkdir -p "$WORK/components"
cd "$WORK"

log "fetching github.com/dapr/dapr@$VERSION's go.mod"
DAPR_DIR="$("$GO" mod download -json "github.com/dapr/dapr@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
DAPR_MOD="$("$GO" mod download -json "github.com/dapr/dapr@$VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -d "$DAPR_DIR" && -f "$DAPR_MOD" ]] || { log "could not download dapr $VERSION"; exit 1; }
GO_LINE="$(grep -m1 '^go ' "$DAPR_MOD")"

{
  echo "module statecar.local/daprd"
  echo
  echo "$GO_LINE"
  echo
  echo "require github.com/dapr/dapr $VERSION"
  echo
  # Every replace block of dapr's go.mod, verbatim (comments included).
  awk '/^replace \(/{inblock=1} inblock{print} inblock && /^\)/{inblock=0; print ""} /^replace [^(]/{print}' "$DAPR_MOD"
} >go.mod

cat >main.go <<'GO'
// daprd, as github.com/dapr/dapr/cmd/daprd builds it, with the components registered by
// ./components (dapr's own registration files, copied by scripts/daprd.sh).
package main

import (
	"github.com/dapr/dapr/cmd/daprd/app"

	_ "statecar.local/daprd/components"
)

func main() {
	app.Run()
}
GO
for c in "${COMPONENTS[@]}"; do
  cp "$DAPR_DIR/cmd/daprd/components/$c.go" components/
done
chmod -R u+w .

log "building daprd $VERSION (first run on this machine only; minutes on two cores)"
( while sleep 30; do log "  ... still building ($((SECONDS - start))s)"; done ) &
HB=$!
trap 'kill $HB 2>/dev/null || true; rm -f "$OUT.tmp.$$"' EXIT
nice -n 10 "$GO" mod tidy >/dev/null 2>&1 || true
nice -n 10 "$GO" build -trimpath -tags allcomponents -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${VERSION#v}" -o "$OUT.tmp.$$" .
mv "$OUT.tmp.$$" "$OUT"
ln -sfn "daprd-$VERSION" "$BIN/daprd"
log "built in $((SECONDS - start))s"
echo "$OUT"
