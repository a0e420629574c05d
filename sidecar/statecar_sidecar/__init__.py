"""statecar's sidecar: the Dapr state HTTP API on localhost, backed by the namespace's components."""

from statecar_contract import package_version


def __getattr__(name: str) -> str:
    # `__version__` is looked up on first use (statecar_contract.package_version: cold start).
    if name == "__version__":
        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
