"""
`ComponentError`, the one error a malformed component document or setting raises.

It lives apart from `components` so the settings readers (`statecar_contract.settings`), which
`components` builds its tables from, can raise it without an import cycle.
"""

from __future__ import annotations


class ComponentError(ValueError):
    """A component document is invalid; `field` is a dotted path into the document."""

    def __init__(self, field: str, message: str, *, source: str | None = None) -> None:
        self.field = field
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {message}")
