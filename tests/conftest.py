"""Settings every tier shares; the rest of the pytest configuration is in pyproject.toml."""

from __future__ import annotations

import pytest

#: The bound of one e2e or compat test's body. Their session fixtures (the Kubernetes tools,
#: `npm ci`, the local control plane) are bounded by their own timeouts, not by this one.
SLOW_TIER_TIMEOUT = {"e2e": 600.0, "compat": 300.0}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        for tier, seconds in SLOW_TIER_TIMEOUT.items():
            if item.get_closest_marker(tier) is not None:
                item.add_marker(pytest.mark.timeout(seconds, func_only=True))
                break
