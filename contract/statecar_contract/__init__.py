"""
The contract shared by statecar's two programs (operator and sidecar).

It owns the `StateStoreComponent` model, the typed settings of every backend (`settings`), the
wiring format the operator writes and the sidecar reads, and every pod annotation name. It must stay light: no kopf, no web framework, no
database drivers (an import-linter contract enforces it), so either program can import it.
"""

from functools import cache


@cache
def package_version() -> str:
    """statecar's version: pyproject.toml is the only place it is written, read from the
    installed package's metadata; "0+unknown" for a source tree that was never installed.

    Read on first use, not at import: importlib.metadata costs a sidecar ~15 ms of cold start
    (bench/README.md, "Cold start"), and only `--version` and the metadata API need it.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("statecar")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str) -> str:
    # `from statecar_contract import __version__` still works: PEP 562 module attribute.
    if name == "__version__":
        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
