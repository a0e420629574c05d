"""Events: queued without blocking, de-duplicated, posted in the background."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from statecar_operator.cluster.events import EventRecorder, ObjectRef, build_event, pod_event_target

REF = ObjectRef("apps/v1", "ReplicaSet", "web-5d4f8", "shop", "rs-uid")


class Sink:
    def __init__(self) -> None:
        self.posted: list[tuple[str, Mapping[str, Any]]] = []
        self.fail = False

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        if self.fail:
            raise OSError("down")
        self.posted.append((namespace, body))


def test_the_event_body() -> None:
    body = build_event(
        REF,
        type="Warning",
        reason="NoComponents",
        message="why",
        now=datetime(2026, 1, 1, tzinfo=UTC),
        instance="op-0",
    )
    assert body["metadata"] == {"generateName": "web-5d4f8.", "namespace": "shop"}
    assert body["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "web-5d4f8",
        "namespace": "shop",
        "uid": "rs-uid",
    }
    assert (body["type"], body["reason"], body["message"], body["count"]) == (
        "Warning",
        "NoComponents",
        "why",
        1,
    )
    assert body["firstTimestamp"] == "2026-01-01T00:00:00Z"


def test_repeats_are_dropped_within_the_interval() -> None:
    now = [0.0]
    recorder = EventRecorder(instance="i", min_interval=60, clock=lambda: now[0])
    assert recorder.record(REF, type="Warning", reason="R", message="m")
    assert not recorder.record(REF, type="Warning", reason="R", message="m")
    assert recorder.record(REF, type="Warning", reason="R", message="other")
    now[0] = 61
    assert recorder.record(REF, type="Warning", reason="R", message="m")
    assert recorder.pending() == 3


def test_a_full_queue_drops_instead_of_blocking() -> None:
    recorder = EventRecorder(instance="i", max_queue=1, min_interval=0)
    assert recorder.record(REF, type="Normal", reason="A", message="1")
    assert not recorder.record(REF, type="Normal", reason="B", message="2")


async def test_the_poster_posts_and_survives_failures() -> None:
    sink = Sink()
    recorder = EventRecorder(instance="i", min_interval=0)
    sink.fail = True
    recorder.record(REF, type="Normal", reason="Lost", message="x")
    task = asyncio.create_task(recorder.run(sink))
    await asyncio.sleep(0.01)
    sink.fail = False
    recorder.record(REF, type="Normal", reason="Kept", message="y")
    for _ in range(50):
        if sink.posted:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert [body["reason"] for _, body in sink.posted] == ["Kept"]
    assert sink.posted[0][0] == "shop"


def test_the_target_of_a_pod_event() -> None:
    owned = {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "j",
                    "uid": "u",
                    "controller": True,
                }
            ]
        }
    }
    assert pod_event_target(owned, "shop") == ObjectRef("batch/v1", "Job", "j", "shop", "u")
    named = {"metadata": {"name": "p"}}
    assert pod_event_target(named, "shop") == ObjectRef("v1", "Pod", "p", "shop", None)
    generated = {"metadata": {"generateName": "p-"}}
    assert pod_event_target(generated, "shop").name == "p-"
