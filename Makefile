# statecar's entry points. `make test` is what CI runs (.ci/run) and what the README promises:
# it installs what it needs, lints, type-checks, and runs every tier against real servers.
PYTHON ?= python3

.PHONY: test bootstrap lint typecheck imports unit conformance compat hostile daprd interop e2e run bench \
	protos \
	bootstrap-cluster image cluster cluster-down cluster-status cluster-test

test: bootstrap bootstrap-cluster lint typecheck imports
	STATECAR_REQUIRE_SERVERS=1 STATECAR_CLUSTER_TESTS=1 $(PYTHON) -m pytest -p no:cacheprovider -q

bootstrap:
	bash scripts/bootstrap.sh

# Both read what to check, and how, from pyproject.toml alone ([tool.ruff], [tool.mypy]).
lint:
	$(PYTHON) -m ruff check
	$(PYTHON) -m ruff format --check

typecheck:
	$(PYTHON) -m mypy

imports:
	# The console script sits beside the interpreter, whatever PATH says.
	"$$($(PYTHON) -c 'import sys, pathlib; print(pathlib.Path(sys.executable).parent / "lint-imports")')"

unit:
	$(PYTHON) -m pytest -q tests/unit

conformance:
	$(PYTHON) -m pytest -q tests/conformance

compat:
	$(PYTHON) -m pytest -q tests/compat

hostile:
	$(PYTHON) -m pytest -q tests/hostile

# statecar daprd started with dapr run's exact argv: errors, metric, TTL, reload, fuzz, shutdown, memory.
daprd:
	$(PYTHON) -m pytest -q tests/daprd

# statecar and a real daprd (built by scripts/daprd.sh) over the same databases.
interop:
	bash scripts/daprd.sh >/dev/null
	STATECAR_REQUIRE_SERVERS=1 $(PYTHON) -m pytest -q tests/interop

e2e:
	$(PYTHON) -m pytest -q tests/e2e

run:
	statecar run

bench:
	$(PYTHON) bench/run.py

# Regenerate sidecar/statecar_sidecar/_protos from the vendored Dapr protos (protos/README.md);
# tests/unit/test_protos_generated.py fails when the committed code and this output differ.
protos:
	$(PYTHON) scripts/gen_protos.py

# --- real pods: a single-node cluster (containerd + runc + kubelet) on this machine -----------
# Needs root. See README "A real cluster on this machine".
bootstrap-cluster:
	bash scripts/bootstrap.sh --cluster

# The project's Dockerfile built with buildah on a locally made base image (cached).
image: bootstrap-cluster
	bash scripts/cluster/image.sh

# Bring up the cluster with the image imported and the chart installed, for a person.
cluster: bootstrap-cluster
	$(PYTHON) scripts/cluster/realcluster.py up --chart

cluster-down:
	$(PYTHON) scripts/cluster/realcluster.py down

cluster-status:
	$(PYTHON) scripts/cluster/realcluster.py status

# The tests/cluster tier (starts and removes its own cluster; `make cluster-down` first).
cluster-test: bootstrap-cluster
	STATECAR_CLUSTER_TESTS=1 $(PYTHON) -m pytest -p no:cacheprovider -q tests/cluster
