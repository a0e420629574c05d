"""
`state.in-memory`: the reference backend, one process's dict (`store`).
"""

from statecar_sidecar.stores.memory.store import MemoryStore

__all__ = ["MemoryStore"]
