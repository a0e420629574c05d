"""
The contract shared by statecar's two programs (operator and sidecar).

It owns the `StateStoreComponent` model, the typed settings of every backend (`settings`), the
wiring format the operator writes and the sidecar reads, and every pod annotation name. It must stay light: no kopf, no web framework, no
database drivers (an import-linter contract enforces it), so either program can import it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml is the only place the version is written; every program reads it from here.
    __version__ = version("statecar")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
