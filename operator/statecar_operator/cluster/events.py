"""
Kubernetes Events from the operator: queued without blocking, posted in the background.

The admission path must not wait on the API server (no API call per pod), and kopf's own
`kopf.event()` only works inside resource handlers (its queue is a context variable set by the
resource processor, kopf `_core/engines/posting.py`), not in admission handlers or our own
reconciler. So `EventRecorder.record` puts the Event on a bounded queue and returns; `run` posts
them. Repeats of the same (object, reason, message) within `min_interval` are dropped, so a
Deployment of 100 replicas whose pods are skipped for one reason yields one Event, not 100.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from statecar_contract import components as contract
from statecar_operator.cluster.timestamps import format_time

logger = logging.getLogger(__name__)

SOURCE_COMPONENT: Final = "statecar-operator"
_MAX_MESSAGE: Final = 1024

EventType = Literal["Normal", "Warning"]


class EventSink(Protocol):
    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class ObjectRef:
    """What an Event is about (core/v1 ObjectReference)."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str | None = None

    @classmethod
    def component(
        cls,
        *,
        namespace: str,
        name: str,
        uid: str | None,
        api_version: str = f"{contract.API_GROUP}/{contract.API_VERSION}",
        kind: str = contract.KIND,
    ) -> ObjectRef:
        """A StateStoreComponent (or, given its apiVersion and kind, a Dapr Component)."""
        return cls(api_version, kind, name, namespace, uid)


def pod_event_target(pod: Mapping[str, Any], namespace: str) -> ObjectRef:
    """
    Where to report on a pod being admitted, which does not exist yet.

    A controller-created pod has no name at admission (the API server generates it after the
    webhooks): its controller (e.g. the ReplicaSet) is reported on instead, where
    `kubectl describe` shows it. A bare pod is reported on by name (or generateName).
    """
    metadata = pod.get("metadata") or {}
    owners = [o for o in metadata.get("ownerReferences") or [] if isinstance(o, Mapping)]
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is not None and owner.get("name") and owner.get("kind"):
        return ObjectRef(
            str(owner.get("apiVersion") or "v1"),
            str(owner["kind"]),
            str(owner["name"]),
            namespace,
            str(owner.get("uid")) if owner.get("uid") else None,
        )
    name = metadata.get("name") or metadata.get("generateName") or "pod"
    return ObjectRef("v1", "Pod", str(name), namespace, metadata.get("uid") or None)


def build_event(
    ref: ObjectRef, *, type: EventType, reason: str, message: str, now: datetime, instance: str
) -> dict[str, Any]:
    """A core/v1 Event body (legacy fields: `kubectl describe` and `get events` show them)."""
    involved: dict[str, Any] = {
        "apiVersion": ref.api_version,
        "kind": ref.kind,
        "name": ref.name,
        "namespace": ref.namespace,
    }
    if ref.uid:
        involved["uid"] = ref.uid
    stamp = format_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{ref.name.rstrip('-.')}.", "namespace": ref.namespace},
        "involvedObject": involved,
        "type": type,
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "source": {"component": SOURCE_COMPONENT, "host": instance},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventRecorder:
    """Non-blocking Event posting with de-duplication."""

    def __init__(
        self,
        *,
        instance: str,
        min_interval: float = 60.0,
        max_queue: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._instance = instance
        self._min_interval = min_interval
        self._clock = clock
        self._queue: asyncio.Queue[tuple[ObjectRef, EventType, str, str]] = asyncio.Queue(max_queue)
        self._recent: dict[tuple[object, ...], float] = {}

    def record(self, ref: ObjectRef, *, type: EventType, reason: str, message: str) -> bool:
        """Queue an Event; False when it repeats a recent one or the queue is full (dropped)."""
        now = self._clock()
        key = (ref.uid or (ref.namespace, ref.kind, ref.name), reason, message)
        last = self._recent.get(key)
        if last is not None and now - last < self._min_interval:
            return False
        if len(self._recent) > 10_000:
            self._recent = {k: t for k, t in self._recent.items() if now - t < self._min_interval}
        try:
            self._queue.put_nowait((ref, type, reason, message))
        except asyncio.QueueFull:
            logger.warning(
                "Event queue full; dropping %s %s on %s/%s", type, reason, ref.kind, ref.name
            )
            return False
        self._recent[key] = now
        return True

    def pending(self) -> int:
        return self._queue.qsize()

    async def run(self, sink: EventSink) -> None:
        """Post queued Events forever; a failed post is logged and dropped (Events are best effort)."""
        while True:
            ref, type_, reason, message = await self._queue.get()
            body = build_event(
                ref,
                type=type_,
                reason=reason,
                message=message,
                now=datetime.now(UTC),
                instance=self._instance,
            )
            try:
                await sink.create_event(ref.namespace, body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  # best effort: a failure only costs this Event
                logger.warning(
                    "Could not post Event %s on %s/%s: %s", reason, ref.kind, ref.name, exc
                )
