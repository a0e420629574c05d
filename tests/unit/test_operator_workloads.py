"""The default app id (the owning workload's name) and resource quantities (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from statecar_operator.injection.quantities import QuantityError, parse_quantity
from statecar_operator.injection.workloads import workload_name


def owned(kind: str, name: str, **labels: str) -> dict[str, Any]:
    return {
        "generateName": f"{name}-",
        "labels": labels,
        "ownerReferences": [{"kind": kind, "name": name, "controller": True}],
    }


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (owned("ReplicaSet", "web-5d4f8b7c9", **{"pod-template-hash": "5d4f8b7c9"}), "web"),
        (owned("ReplicaSet", "standalone-rs"), "standalone-rs"),
        (owned("StatefulSet", "db"), "db"),
        (owned("DaemonSet", "agent"), "agent"),
        (owned("Job", "nightly-29000160"), "nightly"),
        (owned("Job", "migrate"), "migrate"),
        (owned("ReplicationController", "legacy"), "legacy"),
        ({"generateName": "web-5d4f8b7c9-", "labels": {"pod-template-hash": "5d4f8b7c9"}}, "web"),
        (
            {"generateName": "nightly-29000160-", "labels": {"job-name": "nightly-29000160"}},
            "nightly",
        ),
        ({"generateName": "report-20240101-"}, "report-20240101"),
        ({"name": "bare"}, "bare"),
        ({}, None),
        (
            {
                "ownerReferences": [
                    {"kind": "Other", "name": "x"},
                    {"kind": "ReplicaSet", "name": "y", "controller": True},
                ]
            },
            "y",
        ),
    ],
)
def test_workload_name(metadata: dict[str, Any], expected: str | None) -> None:
    assert workload_name(metadata) == expected


def test_the_hint_wins() -> None:
    assert workload_name({"name": "pod"}, owner_name_hint="deploy") == "deploy"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Decimal("0.1")),
        ("1", Decimal(1)),
        ("0.5", Decimal("0.5")),
        ("64Mi", Decimal(64 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("2k", Decimal(2000)),
        ("1E", Decimal(10**18)),
        ("1e3", Decimal(1000)),
        ("1.5E2", Decimal(150)),
        (".5", Decimal("0.5")),
        ("+1", Decimal(1)),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1 GB", "one", "1KB", "1mi", "--1", "1e"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)
