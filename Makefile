# statecar's entry points. `make test` is what CI runs (.ci/run) and what the README promises:
# it installs what it needs, lints, type-checks, and runs every tier against real servers.
PYTHON ?= python3

.PHONY: test bootstrap lint typecheck imports unit conformance compat hostile e2e run bench protos

test: bootstrap lint typecheck imports
	STATECAR_REQUIRE_SERVERS=1 $(PYTHON) -m pytest -p no:cacheprovider -q

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
