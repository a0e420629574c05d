#!/usr/bin/env bash
# Build the project's Dockerfile, unmodified, into an image the local cluster can run.
#
#   scripts/cluster/image.sh            build (or reuse) and print the archive's path, then
#                                       the image reference, on the last two lines
#
# No registry image can be pulled here, so the Dockerfile's FROM image is made locally:
# mmdebstrap (Debian bookworm, minbase + python3, python3-venv, python-is-python3,
# ca-certificates), imported with `buildah from scratch` + `add` + `commit`, and tagged as the
# FROM name. Then `buildah bud --layers` builds the Dockerfile with runc (crun refuses hybrid
# cgroups), the host's CA bundle and pip.conf mounted read-only into RUN steps only (pip goes
# through a TLS-re-signing proxy only the host trusts; nothing of it lands in the image).
#
# Cache (outside the checkout), ${STATECAR_CACHE:-~/.cache/statecar}/image/:
#   storage/               buildah's image store: the base image and every Dockerfile layer;
#                          a source-only change reuses everything above `COPY contract/`
#   base-<key>.stamp       the base image for this key exists (key = suite + package list +
#                          mmdebstrap version), so it is made once per machine
#   statecar-<id>.tar      the built image as a docker-archive, ready for `ctr images import`
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE="${STATECAR_CACHE:-$HOME/.cache/statecar}/image"
STORE=(--root "$CACHE/storage" --runroot "${STATECAR_BUILDAH_RUNROOT:-/run/statecar-buildah}" --storage-driver overlay)
RUNTIME=/usr/sbin/runc
SUITE=bookworm
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
FROM_NAME="$(sed -n 's/^FROM \([^ ]*\) AS builder.*/\1/p' Dockerfile | head -n1)"
REPO="${STATECAR_IMAGE_REPO:-localhost/statecar}"

log() { printf '[image] %s\n' "$*" >&2; }
bah() { buildah "${STORE[@]}" "$@"; }

mkdir -p "$CACHE"
exec 8>"$CACHE/build.lock"
flock 8

[[ -n "$FROM_NAME" ]] || { log "no 'FROM … AS builder' in the Dockerfile"; exit 1; }
case "$FROM_NAME" in */*) FULL_FROM="$FROM_NAME" ;; *) FULL_FROM="docker.io/library/$FROM_NAME" ;; esac

# --- the base image ------------------------------------------------------------------------
key="$(printf '%s\n' "$SUITE" "$PACKAGES" "$FULL_FROM" "$(dpkg-query -W -f '${Version}' mmdebstrap)" | sha256sum | cut -c1-16)"
if [[ -f "$CACHE/base-$key.stamp" ]] && bah inspect --type image "$FULL_FROM" >/dev/null 2>&1; then
  log "base $FULL_FROM: cached ($key)"
else
  log "base $FULL_FROM: mmdebstrap $SUITE + $PACKAGES (minutes, once per machine)"
  start=$SECONDS
  tar="$CACHE/base-$key.tar"
  rm -rf "$tar" "$CACHE/base-$key.tmp.tar"
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/{doc,man,locale}/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --aptopt='Apt::Install-Recommends "false"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" "$CACHE/base-$key.tmp.tar" http://deb.debian.org/debian
  mv -f "$CACHE/base-$key.tmp.tar" "$tar"
  c="$(bah from scratch)"
  bah add "$c" "$tar" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$c"
  bah commit --quiet --rm "$c" "$FULL_FROM" >/dev/null
  c=""
  rm -f "$tar" "$CACHE"/base-*.stamp
  touch "$CACHE/base-$key.stamp"
  log "base built in $((SECONDS - start))s"
fi

# --- a Redis image for the cluster tier's backend pod (`image.sh redis`) -------------------------
if [[ "${1:-}" == "redis" ]]; then
  ref=localhost/statecar-redis:bookworm
  archive="$CACHE/redis-$key.tar"
  if [[ ! -f "$archive" ]]; then
    start=$SECONDS
    c="$(bah from --pull=false "$FULL_FROM")"
    bah run --runtime "$RUNTIME" --network host --isolation oci "$c" -- sh -c \
      'apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null && rm -rf /var/lib/apt/lists/*' >&2
    bah config --user 999:999 --entrypoint '["redis-server"]' --cmd '' "$c"
    bah commit --quiet --rm "$c" "$ref" >/dev/null
    bah push --quiet "$ref" "docker-archive:$archive.tmp:$ref" >&2
    mv -f "$archive.tmp" "$archive"
    log "redis image built in $((SECONDS - start))s"
  fi
  echo "$archive"
  echo "$ref"
  exit 0
fi

# --- the Dockerfile ----------------------------------------------------------------------------
start=$SECONDS
log "buildah bud --layers (Dockerfile unmodified)"
mounts=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
[[ -f /etc/pip.conf ]] && mounts+=(--volume /etc/pip.conf:/etc/pip.conf:ro)
bah bud --quiet --layers --pull=false --runtime "$RUNTIME" --network host --isolation oci \
  "${mounts[@]}" --tag "$REPO:build" -f Dockerfile . >&2
id="$(bah inspect --type image --format '{{.FromImageID}}' "$REPO:build")"
id="${id#sha256:}"
ref="$REPO:${id:0:12}"
bah tag "$REPO:build" "$ref"
archive="$CACHE/statecar-${id:0:12}.tar"
if [[ ! -f "$archive" ]]; then
  bah push --quiet "$ref" "docker-archive:$archive.tmp:$ref" >&2
  mv -f "$archive.tmp" "$archive"
  # Keep the three newest archives, and drop the tags of the older builds (the layer cache
  # itself stays: it is what makes a source-only rebuild quick).
  ls -1t "$CACHE"/statecar-*.tar | tail -n +4 | xargs -r rm -f
  for old in $(bah images --format '{{.Name}}:{{.Tag}}' | grep -E "^$REPO:[0-9a-f]{12}\$" || true); do
    [[ -f "$CACHE/statecar-${old##*:}.tar" ]] || bah rmi "$old" >/dev/null 2>&1 || true
  done
fi
log "image $ref built in $((SECONDS - start))s"
echo "$archive"
echo "$ref"
