"""
The kopf handlers called directly, with the keyword arguments kopf passes (kopf's own tests and
docs/testing.rst do the same), on a `Memo` whose API server is an in-memory fake.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection, Mapping
from typing import Any, TypeVar, cast

import kopf
import pytest
from tests.unit.test_operator_reconciler import FakeCluster

from statecar_contract.wiring import app_secret_name
from statecar_operator import handlers
from statecar_operator.cluster.events import EventRecorder, EventType, ObjectRef
from statecar_operator.cluster.leader import AlwaysLeader
from statecar_operator.health_server import Readiness
from statecar_operator.memo import Indexes, Memo
from statecar_operator.reconciliation.component_index import ComponentEntry, component_entry
from statecar_operator.reconciliation.reconciler import Reconciler
from statecar_operator.reconciliation.wiring_secret import pod_config_hash
from statecar_operator.settings import InjectorSettings, OperatorSettings

K = TypeVar("K")
V = TypeVar("V")


def body_of(raw: Mapping[str, Any]) -> kopf.Body:
    """kopf.Body over a plain dict: kopf types its source as its RawBody TypedDict."""
    return kopf.Body(cast(kopf.RawBody, raw))


def as_index(mapping: Mapping[K, Collection[V]] | None) -> kopf.Index[K, V]:
    """A dict of lists stands in for kopf's Index, which the handlers read only as a Mapping of
    Collections (kopf's `Index` and `Store` are abstract interfaces of exactly that shape)."""
    assert mapping is not None, "the memo fixture binds every index"
    return cast("kopf.Index[K, V]", mapping)


class RecordingEvents(EventRecorder):
    def __init__(self) -> None:
        super().__init__(instance="test", min_interval=0)
        self.recorded: list[tuple[ObjectRef, EventType, str, str]] = []

    def record(self, ref: ObjectRef, *, type: EventType, reason: str, message: str) -> bool:
        self.recorded.append((ref, type, reason, message))
        return True


def component_body(name: str, spec: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "statecar.io/v1alpha1",
        "kind": "StateStoreComponent",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


ORDERS = component_body(
    "orders",
    {
        "type": "state.redis",
        "metadata": [
            {"name": "redisHost", "value": "redis:6379"},
            {"name": "redisPassword", "secretKeyRef": {"name": "redis-auth", "key": "password"}},
        ],
        "scopes": ["checkout"],
    },
)


@pytest.fixture
def memo() -> Memo:
    indexes = Indexes()
    indexes.components = {"shop": [component_entry(ORDERS)]}
    indexes.wiring = {
        ("shop", "statecar-wiring"): ["3f2a9c0d1e4b5a6f"],
        ("shop", app_secret_name("checkout")): ["0123456789abcdef"],
        ("shop", app_secret_name("cart")): ["fedcba9876543210"],
    }
    indexes.secret_refs = {("shop", "redis-auth"): ["orders"]}
    readiness = Readiness()
    readiness.check_warm(set())
    readiness.cert_loaded = True
    events = RecordingEvents()
    reconciler = Reconciler(
        api=FakeCluster(),
        view=indexes.view(),
        measure=lambda resolved: None,  # type: ignore[arg-type,return-value]  # never reached here
        events=events,
        is_leader=lambda: True,
        resync_interval=3600,
    )
    settings = OperatorSettings(
        identity="test", namespace="ops", injector=InjectorSettings(image="statecar:test")
    )
    return Memo(
        settings=settings,
        readiness=readiness,
        events=events,
        reconciler=reconciler,
        leadership=AlwaysLeader(),
        indexes=indexes,
    )


def pod(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "checkout-5d4f8b-",
            "namespace": "shop",
            "labels": {"pod-template-hash": "5d4f8b"},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "checkout-5d4f8b",
                    "uid": "rs-uid",
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }


async def mutate(
    memo: Memo, raw: dict[str, Any], *, dryrun: bool = False
) -> tuple[kopf.Patch, list[str]]:
    body = body_of(copy.deepcopy(raw))
    patch = kopf.Patch(body=body)
    warnings: list[str] = []
    await handlers.pod_mutate(body=body, patch=patch, warnings=warnings, dryrun=dryrun, memo=memo)
    return patch, warnings


async def test_an_annotated_pod_gets_a_patch_from_the_indexes(memo: Memo) -> None:
    patch, warnings = await mutate(memo, pod(**{"statecar.io/enabled": "true"}))
    assert warnings == []
    ops = patch.as_json_patch()
    init: Mapping[str, Any] = next(op for op in ops if op["path"] == "/spec/initContainers")
    assert init["value"][0]["name"] == "statecar"
    assert init["value"][0]["image"] == "statecar:test"
    status: Mapping[str, Any] = next(
        op for op in ops if op["path"] == "/metadata/annotations/statecar.io~1status"
    )
    # The pod's hash covers the shared Secret and its own app's, not another app's.
    expected = pod_config_hash("3f2a9c0d1e4b5a6f", "0123456789abcdef")
    assert f'"configHash":"{expected}"' in status["value"]
    assert '"appId":"checkout"' in status["value"]


async def test_an_unannotated_pod_is_untouched_and_silent(memo: Memo) -> None:
    patch, warnings = await mutate(memo, pod())
    assert patch.as_json_patch() == []
    assert warnings == []
    assert memo.events.recorded == []  # type: ignore[attr-defined]  # the fixture's recorder is a RecordingEvents


async def test_no_component_in_scope_yet_is_injected_with_a_warning(memo: Memo) -> None:
    patch, warnings = await mutate(
        memo, pod(**{"statecar.io/enabled": "true", "statecar.io/app-id": "billing"})
    )
    assert any(op["path"] == "/spec/initContainers" for op in patch.as_json_patch())
    assert any("in scope for app id 'billing' yet" in w for w in warnings), warnings
    assert memo.events.recorded == []  # type: ignore[attr-defined]  # the fixture's recorder is a RecordingEvents


async def test_a_skip_is_a_warning_and_an_event_on_the_owner(memo: Memo) -> None:
    patch, warnings = await mutate(memo, pod(**{"statecar.io/app-id": "billing"}))
    assert patch.as_json_patch() == []
    assert len(warnings) == 1
    assert "but not statecar.io/enabled" in warnings[0]
    ((ref, type_, reason, message),) = memo.events.recorded  # type: ignore[attr-defined]  # the fixture's recorder is a RecordingEvents
    assert (ref.kind, ref.name, ref.uid, ref.namespace) == (
        "ReplicaSet",
        "checkout-5d4f8b",
        "rs-uid",
        "shop",
    )
    assert (type_, reason) == ("Warning", "NotEnabled")
    assert message == warnings[0]


async def test_a_dry_run_posts_no_event(memo: Memo) -> None:
    _, warnings = await mutate(memo, pod(**{"statecar.io/app-id": "billing"}), dryrun=True)
    assert warnings
    assert memo.events.recorded == []  # type: ignore[attr-defined]  # the fixture's recorder is a RecordingEvents


async def test_a_bad_annotation_is_rejected_with_the_message(memo: Memo) -> None:
    with pytest.raises(kopf.AdmissionError) as caught:
        await mutate(memo, pod(**{"statecar.io/enabled": "true", "statecar.io/http-port": "http"}))
    assert caught.value.code == 400
    assert "statecar.io/http-port: 'http' is not a port number" in str(caught.value)
    assert memo.events.recorded[0][2] == "InjectionRejected"  # type: ignore[attr-defined]  # the fixture's recorder is a RecordingEvents


async def test_no_wiring_yet_is_a_warning(memo: Memo) -> None:
    memo.indexes.wiring = {}
    patch, warnings = await mutate(memo, pod(**{"statecar.io/enabled": "true"}))
    assert patch.as_json_patch()
    assert any("not rendered yet" in w for w in warnings)


async def test_before_the_indexes_are_warm_an_asking_pod_must_retry(memo: Memo) -> None:
    memo.readiness.indexes_warm = False
    with pytest.raises(kopf.AdmissionError) as caught:
        await mutate(memo, pod(**{"statecar.io/enabled": "true"}))
    assert caught.value.code == 503
    patch, _ = await mutate(memo, pod())  # other pods are never held up
    assert patch.as_json_patch() == []


async def test_component_validation_rejects_unknown_settings_with_the_field() -> None:
    bad = component_body(
        "x", {"type": "state.redis", "metadata": [{"name": "redisHots", "value": "a"}]}
    )
    with pytest.raises(kopf.AdmissionError) as caught:
        await handlers.component_validate(body=body_of(bad))
    assert caught.value.code == 422
    assert "spec.metadata[0].name: 'redisHots' is not a setting of state.redis" in str(caught.value)


async def test_component_validation_rejects_impossible_scopes_and_objects_as_values() -> None:
    scoped = component_body("x", {"type": "state.in-memory", "scopes": ["not an app"]})
    with pytest.raises(kopf.AdmissionError, match=r"spec.scopes\[0\]"):
        await handlers.component_validate(body=body_of(scoped))
    nested = component_body(
        "x", {"type": "state.redis", "metadata": [{"name": "redisHost", "value": {"a": 1}}]}
    )
    with pytest.raises(kopf.AdmissionError, match=r"spec.metadata\[0\].value"):
        await handlers.component_validate(body=body_of(nested))


async def test_component_validation_accepts_good_ones_even_with_generate_name() -> None:
    good = component_body("x", {"type": "state.in-memory"})
    del good["metadata"]["name"]
    good["metadata"]["generateName"] = "cache-"
    await handlers.component_validate(body=body_of(good))


async def test_index_handlers(memo: Memo) -> None:
    memo.readiness.indexes_warm = False
    entries = await handlers.index_components(body=body_of(ORDERS), memo=memo)
    assert list(entries) == ["shop"]
    assert entries["shop"].spec is not None
    assert memo.readiness.check_warm({"uid-orders"})
    refs = await handlers.index_secret_refs(body=body_of(ORDERS))
    assert refs == {("shop", "redis-auth"): "orders"}
    wiring = {
        "metadata": {"name": "statecar-wiring", "annotations": {"statecar.io/config-hash": "h"}}
    }
    assert await handlers.index_wiring(
        body=body_of(wiring), name="statecar-wiring", namespace="shop"
    ) == {("shop", "statecar-wiring"): "h"}
    assert handlers.is_wiring_secret(name="statecar-wiring")
    assert handlers.is_wiring_secret(name=app_secret_name("checkout"))
    assert not handlers.is_wiring_secret(name="other")


async def test_secret_events_mark_namespaces_of_referenced_secrets_only(memo: Memo) -> None:
    reconciler = memo.reconciler
    refs = as_index(memo.indexes.secret_refs)
    secret = {"metadata": {"name": "redis-auth", "namespace": "shop"}}
    await handlers.secret_event(
        type="MODIFIED",
        body=body_of(secret),
        name="redis-auth",
        namespace="shop",
        memo=memo,
        statecar_secret_refs=refs,
    )
    assert reconciler._dirty == {"shop"}
    reconciler._dirty.clear()
    await handlers.secret_event(
        type="MODIFIED",
        body=body_of(secret),
        name="unrelated",
        namespace="shop",
        memo=memo,
        statecar_secret_refs=refs,
    )
    assert reconciler._dirty == set()
    await handlers.secret_event(
        type="DELETED",
        body=body_of({}),
        name="statecar-wiring",
        namespace="shop",
        memo=memo,
        statecar_secret_refs=refs,
    )
    assert reconciler._dirty == {"shop"}


def test_only_relevant_secrets_reach_the_handler(memo: Memo) -> None:
    refs = as_index(memo.indexes.secret_refs)
    assert handlers.secret_matters(
        name=app_secret_name("cart"), namespace="any", statecar_secret_refs=refs
    )
    assert handlers.secret_matters(name="redis-auth", namespace="shop", statecar_secret_refs=refs)
    assert handlers.secret_matters(
        name="statecar-wiring", namespace="any", statecar_secret_refs=refs
    )
    assert not handlers.secret_matters(
        name="redis-auth", namespace="other", statecar_secret_refs=refs
    )
    assert not handlers.secret_matters(name="tls", namespace="shop", statecar_secret_refs=refs)


async def test_component_events_mark_the_namespace(memo: Memo) -> None:
    await handlers.component_event(type="ADDED", body=body_of(ORDERS), memo=memo)
    assert memo.reconciler._dirty == {"shop"}


async def test_bind_indexes_gives_the_reconciler_live_views(memo: Memo) -> None:
    fresh = Indexes()
    runtime = Memo(
        settings=memo.settings,
        readiness=memo.readiness,
        events=memo.events,
        reconciler=memo.reconciler,
        leadership=memo.leadership,
        indexes=fresh,
    )
    live: dict[str, list[ComponentEntry]] = {"shop": [component_entry(ORDERS)]}
    await handlers.bind_indexes(
        memo=runtime,
        statecar_components=as_index(live),
        statecar_secret_refs=as_index({}),
        statecar_wiring=as_index({}),
    )
    assert [e.name for e in fresh.components_in("shop")] == ["orders"]
    live["other"] = [component_entry(component_body("x", {"type": "state.in-memory"}, "other"))]
    assert fresh.view().component_namespaces() == {"shop", "other"}


def test_registration_covers_every_handler() -> None:
    registry = handlers.register(kopf.OperatorRegistry())
    webhook_ids = {h.id for h in registry._webhooks.get_all_handlers()}
    assert webhook_ids == {"inject-pods", "validate-statestorecomponents"}
    index_ids = {h.id for h in registry._indexing.get_all_handlers()}
    assert index_ids == {"statecar_components", "statecar_secret_refs", "statecar_wiring"}
    watch_ids = {h.id for h in registry._watching.get_all_handlers()}
    assert watch_ids == {"component-events", "secret-events"}
    # No change handlers, daemons or timers: kopf then writes nothing onto the objects.
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []


def test_kopf_settings() -> None:
    server = kopf.WebhookServer(port=1)
    settings = handlers.kopf_settings(server)
    assert settings.admission.server is server
    assert settings.admission.managed is None
    assert settings.peering.standalone is True
    assert "type!=helm.sh/release.v1" in settings.watching.field_selectors["v1", "secrets"]


def test_expected_admission_rejections_are_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """kopf logs a handler's AdmissionError (a PermanentError) at ERROR; a refused pod or
    component is an answer, not a failure. Other handlers' failures stay errors."""
    from kopf._core.actions.loggers import LocalObjectLogger

    registry = handlers.register(kopf.OperatorRegistry())
    webhook_handlers = {str(h.id): h for h in registry._webhooks.get_all_handlers()}
    handlers.quiet_expected_rejections()
    handlers.quiet_expected_rejections()  # once only
    assert (
        sum(
            isinstance(f, handlers.ExpectedRejections)
            for f in logging.getLogger("kopf.objects").filters
        )
        == 1
    )
    log = LocalObjectLogger(
        body=kopf.Body({"metadata": {"name": "p"}}), settings=kopf.OperatorSettings()
    )
    caplog.set_level(logging.DEBUG, logger="kopf.objects")
    for handler_id in ("inject-pods", "validate-statestorecomponents"):
        handler = webhook_handlers[handler_id]
        # The line kopf's executor writes (kopf._core.actions.execution), with kopf's own str().
        log.error(f"{handler} failed permanently: statecar cannot inject this pod: bad port")
    log.error("Handler 'someone-else' failed permanently: boom")
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels == [
        (
            "INFO",
            "Webhook 'inject-pods' refused the request: statecar cannot inject this pod: bad port",
        ),
        (
            "INFO",
            "Webhook 'validate-statestorecomponents' refused the request: "
            "statecar cannot inject this pod: bad port",
        ),
        ("ERROR", "Handler 'someone-else' failed permanently: boom"),
    ]


async def test_dapr_components_are_indexed_when_state_and_counted_for_warm_up_always(
    memo: Memo,
) -> None:
    state = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "statestore", "namespace": "shop", "uid": "d1"},
        "spec": {"type": "state.in-memory", "version": "v1"},
    }
    pubsub = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "pubsub", "namespace": "shop", "uid": "d2"},
        "spec": {"type": "pubsub.redis", "version": "v1"},
    }
    indexed = await handlers.index_dapr_components(body=body_of(state), memo=memo)
    assert indexed["shop"].is_dapr
    assert await handlers.index_dapr_components(body=body_of(pubsub), memo=memo) == {}
    assert memo.readiness.check_warm({"d1", "d2"})
    assert await handlers.index_dapr_secret_refs(body=body_of(pubsub)) == {}
    registry = handlers.register(kopf.OperatorRegistry(), dapr_components=True)
    ids = {h.id for h in registry._indexing.get_all_handlers()}
    assert {"statecar_dapr_components", "statecar_dapr_secret_refs"} <= ids
    plain = handlers.register(kopf.OperatorRegistry())
    assert "statecar_dapr_components" not in {h.id for h in plain._indexing.get_all_handlers()}
