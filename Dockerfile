# syntax=docker/dockerfile:1
#
# One image for both programs: `statecar operator` (the Deployment of charts/statecar) and
# `statecar sidecar` (what the injector puts into pods, same image). Build from the repository
# root:
#
#   docker build -t ghcr.io/statecar/statecar:0.1.0 .
#
# Two stages: the builder makes a virtual environment with the package and all its extras; the
# runtime stage copies only that environment onto the same slim Python base (same base, so the
# interpreter the venv points to is at the same path). No compilers, no pip, no build files in
# the final image. tests/unit/test_dockerfile.py replays the builder's commands on this machine.

# --- builder ------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

# Where the environment is built; the runtime stage copies this exact path.
ENV VIRTUAL_ENV=/opt/statecar \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Only what the wheel is built from (.dockerignore excludes everything else), copied in the
# order it changes least to most, so source edits reuse the cached layers above them.
COPY pyproject.toml README.md ./
COPY contract/ contract/
COPY operator/ operator/
COPY sidecar/ sidecar/
COPY cli/ cli/

# A regular (not editable) install: the wheel's files, byte-compiled by pip, so nothing is ever
# compiled (written) at run time under a read-only root filesystem. pip itself is removed: the
# final image installs nothing.
RUN python -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install ".[all]" \
 && "$VIRTUAL_ENV/bin/pip" uninstall --yes pip \
 && "$VIRTUAL_ENV/bin/statecar" --version

# --- runtime ------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="statecar" \
      org.opencontainers.image.description="A Dapr-compatible state API sidecar and its kopf operator/injector (one image)." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/statecar/statecar" \
      org.opencontainers.image.url="https://github.com/statecar/statecar" \
      org.opencontainers.image.vendor="statecar"

# The numeric user the chart and the injector run as (runAsUser 65532), owning the one
# directory the programs may write to when the root filesystem is writable (local `docker run`;
# in a cluster an emptyDir is mounted there and the root filesystem is read-only).
RUN install -d -o 65532 -g 65532 -m 0750 /var/lib/statecar

COPY --from=builder /opt/statecar /opt/statecar

# PYTHONDONTWRITEBYTECODE: never try to write .pyc files (the root filesystem is read-only;
# the venv is already compiled). PYTHONUNBUFFERED: logs reach `kubectl logs` at once.
# MALLOC_MMAP_THRESHOLD_: glibc's mmap threshold fixed at its initial 128 KiB, so freed large
# request buffers go back to the system (statecar_sidecar/memory.py); glibc applies it at exec,
# so the sidecar does not load ctypes to call mallopt during its cold start.
ENV VIRTUAL_ENV=/opt/statecar \
    PATH="/opt/statecar/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    HOME=/var/lib/statecar

WORKDIR /var/lib/statecar
# Numeric, so the kubelet can enforce runAsNonRoot without looking the name up.
USER 65532:65532

# 3500 state API and 50001 its gRPC API (sidecar, loopback), 9090 sidecar health and metrics, 9443 operator webhook,
# 8080 operator /healthz and /readyz.
EXPOSE 3500 50001 9090 9443 8080

# The console script itself is PID 1: no shell, so SIGTERM reaches the program. The chart runs
# `operator` (the default here); the injector runs `statecar sidecar` from the same image.
ENTRYPOINT ["statecar"]
CMD ["operator"]
