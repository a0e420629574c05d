"""
The kopf handlers: thin adapters from kopf's calls to the pure decisions and the reconciler.

This is the only module that registers kopf handlers, all on an explicit registry
(`register`), so importing it has no side effect and tests call the handlers directly with
the keyword arguments kopf would pass. Watch handlers only index and mark namespaces dirty;
admission handlers answer from the indexes, never from the API (see `cluster.leader` for why
every replica runs kopf standalone, and `reconciliation.reconciler` for who writes).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import kopf

from statecar_contract import annotations as ann
from statecar_contract import components as contract
from statecar_contract.components import ComponentError, parse_component
from statecar_contract.wiring import WIRING_SECRET_NAME, is_wiring_secret_name
from statecar_operator.cluster.events import pod_event_target
from statecar_operator.injection.annotations import is_valid_app_id, parse_bool
from statecar_operator.injection.patching import apply_injection
from statecar_operator.injection.plan import InjectionError, InjectionPlan, Skip, plan_injection
from statecar_operator.manifests import labels, webhooks
from statecar_operator.memo import Memo
from statecar_operator.reconciliation import wiring_secret
from statecar_operator.reconciliation.component_index import (
    DAPR_COMPONENTS,
    ComponentEntry,
    component_entry,
    is_wired_dapr_component,
    secret_ref_keys,
    usable_specs,
)
from statecar_operator.reconciliation.staleness import PodInfo, pod_info

logger = logging.getLogger(__name__)

#: Index ids: kopf passes each index to every handler as a keyword argument of this name.
COMPONENTS_INDEX = "statecar_components"
SECRET_REFS_INDEX = "statecar_secret_refs"  # noqa: S105  # an index name, not a credential
WIRING_INDEX = "statecar_wiring"

_COMPONENTS = (contract.API_GROUP, contract.API_VERSION, contract.PLURAL)
#: Dapr's Component resource (components.dapr.io/v1alpha1), with the Dapr-components option.
_DAPR_COMPONENTS = DAPR_COMPONENTS
DAPR_COMPONENTS_INDEX = "statecar_dapr_components"
PODS_INDEX = "statecar_injected_pods"
DAPR_SECRET_REFS_INDEX = "statecar_dapr_secret_refs"  # noqa: S105  # an index name, not a credential


def _fn(handler: Callable[..., Awaitable[Any] | bool]) -> Any:
    """kopf's handler protocols list its own kwargs only; ours also take indexes, by their ids."""
    return handler


def register(
    registry: kopf.OperatorRegistry, *, dapr_components: bool = False, pods: bool = False
) -> kopf.OperatorRegistry:
    """Put every handler of the operator on `registry` (Dapr's Components' and the injected
    pods' only with their options)."""
    if pods:
        kopf.index(
            "v1",
            "pods",
            id=PODS_INDEX,
            labels={ann.INJECTED_LABEL: "true"},
            registry=registry,
        )(_fn(index_pods))
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(_fn(bind_indexes))
    kopf.on.cleanup(registry=registry)(_fn(release_lease))
    kopf.index(*_COMPONENTS, id=COMPONENTS_INDEX, registry=registry)(_fn(index_components))
    kopf.index(*_COMPONENTS, id=SECRET_REFS_INDEX, registry=registry)(index_secret_refs)
    kopf.index(
        "v1",
        "secrets",
        id=WIRING_INDEX,
        labels={labels.MANAGED_BY_LABEL: labels.MANAGED_BY},
        when=is_wiring_secret,
        registry=registry,
    )(_fn(index_wiring))
    kopf.on.event(*_COMPONENTS, id="component-events", registry=registry)(_fn(component_event))
    if dapr_components:
        kopf.index(*_DAPR_COMPONENTS, id=DAPR_COMPONENTS_INDEX, registry=registry)(
            _fn(index_dapr_components)
        )
        kopf.index(*_DAPR_COMPONENTS, id=DAPR_SECRET_REFS_INDEX, registry=registry)(
            index_dapr_secret_refs
        )
        kopf.on.event(*_DAPR_COMPONENTS, id="dapr-component-events", registry=registry)(
            _fn(dapr_component_event)
        )
    kopf.on.event("v1", "secrets", id="secret-events", when=_fn(secret_matters), registry=registry)(
        _fn(secret_event)
    )
    kopf.on.mutate(
        "v1",
        "pods",
        id=webhooks.INJECT_WEBHOOK_ID,
        operations=["CREATE"],
        side_effects=True,  # Events are posted for skipped pods (never for dry runs)
        registry=registry,
    )(_fn(pod_mutate))
    kopf.on.validate(
        *_COMPONENTS,
        id=webhooks.VALIDATE_WEBHOOK_ID,
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )(component_validate)
    return registry


def kopf_settings(
    server: kopf.WebhookServerProtocol, *, restricted: bool = False
) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    if restricted:
        # Given exact namespace names, kopf would still list and watch Namespace objects (and
        # retry a refusal with backoff): kopf's declared "restricted mode" skips that scanning.
        # It also skips the CRD watch: the CRD must exist when the operator starts (the chart
        # installs it first), and the restricted RBAC grants nothing on CRDs.
        settings.scanning.disabled = True
    settings.admission.server = server
    # The webhook configurations are the chart's (see webhooks.build_webhook_configurations):
    # kopf's managed mode cannot express matchConditions, namespaceSelector or
    # reinvocationPolicy, and would rewrite them from every replica (nolar/kopf#889).
    settings.admission.managed = None
    settings.peering.standalone = True
    # Only warnings about objects become kopf-posted Events; our own Events say what happened.
    settings.posting.level = logging.WARNING
    # Helm releases and ServiceAccount tokens are the bulk of a cluster's Secrets and are never
    # component settings: the API server filters them out of the watch (field selector).
    settings.watching.field_selectors["v1", "secrets"] = (
        "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token"
    )
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    return settings


class ExpectedRejections(logging.Filter):
    """Our admission handlers' refusals are answers, not failures: INFO, not kopf's ERROR.

    A handler refuses by raising `kopf.AdmissionError`, a `kopf.PermanentError`, which kopf's
    handler executor (`kopf._core.actions.execution`) logs on `kopf.objects` at ERROR as
    "Webhook '<id>' failed permanently: ...". Only those lines of our webhook ids change level;
    an unexpected exception in a handler is still logged by kopf at ERROR, with its traceback.
    """

    PREFIXES: Final = tuple(
        f"Webhook {id!r} failed permanently: "
        for id in (webhooks.INJECT_WEBHOOK_ID, webhooks.VALIDATE_WEBHOOK_ID)
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and isinstance(record.msg, str):
            for prefix in self.PREFIXES:
                if record.msg.startswith(prefix):
                    reason = record.getMessage()[len(prefix) :]
                    refused = prefix.replace("failed permanently", "refused the request")
                    record.msg, record.args = refused + reason, None
                    record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_expected_rejections() -> None:
    """Install `ExpectedRejections` on kopf's per-object logger (once)."""
    target = logging.getLogger("kopf.objects")
    if not any(isinstance(f, ExpectedRejections) for f in target.filters):
        target.addFilter(ExpectedRejections())


# --- lifecycle --------------------------------------------------------------------------------


async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf authenticates like `cluster.kube.connect` (in-cluster first, then kubeconfig)."""
    return await kopf.login_via_async_client(**kwargs)


async def bind_indexes(
    memo: Memo,
    statecar_components: kopf.Index[str, ComponentEntry],
    statecar_secret_refs: kopf.Index[tuple[str, str], str],
    statecar_wiring: kopf.Index[tuple[str, str], str],
    **rest: Any,
) -> None:
    """Give the reconciler and the health check live views of kopf's indexes (Dapr's
    Components' too, with the option: kopf passes every index by its id)."""
    memo.indexes.components = statecar_components
    memo.indexes.secret_refs = statecar_secret_refs
    memo.indexes.wiring = statecar_wiring
    memo.indexes.dapr_components = rest.get(DAPR_COMPONENTS_INDEX)
    memo.indexes.pods = rest.get(PODS_INDEX)


async def release_lease(memo: Memo, **_: Any) -> None:
    """On SIGTERM, hand the Lease over before kopf's own (slower) shutdown, not after it."""
    await memo.leadership.release()


# --- indexes ----------------------------------------------------------------------------------


async def index_components(body: kopf.Body, memo: Memo, **_: Any) -> dict[str, ComponentEntry]:
    entry = component_entry(body)
    memo.readiness.note_indexed(entry.uid)
    return {entry.namespace: entry}


async def index_secret_refs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], str]:
    entry = component_entry(body)
    return {key: entry.name for key in secret_ref_keys(entry)}


async def index_dapr_components(body: kopf.Body, memo: Memo, **_: Any) -> dict[str, ComponentEntry]:
    """Dapr's Components: every one counts for warm-up, only `state.*` ones are indexed."""
    entry = component_entry(body)
    memo.readiness.note_indexed(entry.uid)
    if not is_wired_dapr_component(body):
        return {}
    return {entry.namespace: entry}


async def index_pods(body: kopf.Body, memo: Memo, **_: Any) -> dict[str, PodInfo]:
    """Injected pods (label selector), with whether their sidecar is stale."""
    info = pod_info(body, memo.settings.injector)
    return {info.namespace: info}


async def index_dapr_secret_refs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], str]:
    if not is_wired_dapr_component(body):
        return {}
    return await index_secret_refs(body)


def is_wiring_secret(name: str | None, **_: Any) -> bool:
    return is_wiring_secret_name(name)


async def index_wiring(
    body: kopf.Body, name: str | None, namespace: str | None, **_: Any
) -> dict[tuple[str, str], str]:
    return {(namespace or "", name or ""): wiring_secret.hash_of(body) or ""}


# --- watch events: mark namespaces for the reconciler --------------------------------------------


async def component_event(type: str | None, body: kopf.Body, memo: Memo, **_: Any) -> None:
    memo.reconciler.component_changed(component_entry(body), deleted=type == "DELETED")


async def dapr_component_event(type: str | None, body: kopf.Body, memo: Memo, **_: Any) -> None:
    """A Dapr Component that is not (or no longer) `state.*` is, to the wiring, gone."""
    deleted = type == "DELETED" or not is_wired_dapr_component(body)
    memo.reconciler.component_changed(component_entry(body), deleted=deleted)


def secret_matters(
    name: str | None,
    namespace: str | None,
    statecar_secret_refs: kopf.Index[tuple[str, str], str],
    **rest: Any,
) -> bool:
    """Only our wiring Secrets and referenced ones reach `secret_event` (kopf's `when=`), so the
    rest of the cluster's Secrets cost a lookup and no handler call or log line."""
    return is_wiring_secret_name(name) or _referenced(namespace, name, statecar_secret_refs, rest)


def _referenced(
    namespace: str | None,
    name: str | None,
    statecar_secret_refs: kopf.Index[tuple[str, str], str],
    rest: dict[str, Any],
) -> bool:
    dapr = rest.get(DAPR_SECRET_REFS_INDEX)
    key = (namespace, name)
    return key in statecar_secret_refs or (dapr is not None and key in dapr)


async def secret_event(
    type: str | None,
    body: kopf.Body,
    name: str | None,
    namespace: str | None,
    memo: Memo,
    statecar_secret_refs: kopf.Index[tuple[str, str], str],
    **rest: Any,
) -> None:
    if not namespace or not name:
        return
    if is_wiring_secret_name(name):
        # Ours (or squatting on our name): someone else's edit or delete is repaired.
        memo.reconciler.wiring_secret_changed(
            namespace, name, wiring_secret.hash_of(body), deleted=type == "DELETED"
        )
    elif _referenced(namespace, name, statecar_secret_refs, rest):
        # A referenced Secret was created, changed (a rotated password) or deleted.
        memo.reconciler.mark(namespace)


# --- admission ----------------------------------------------------------------------------------


async def pod_mutate(
    body: kopf.Body,
    patch: kopf.Patch,
    warnings: list[str],
    dryrun: bool,
    memo: Memo,
    **_: Any,
) -> None:
    """Inject the sidecar into an annotated pod (CREATE), or say why not."""
    pod: dict[str, Any] = dict(body)
    namespace = str((pod.get("metadata") or {}).get("namespace") or "")
    if not memo.readiness.indexes_warm and _asks_for_injection(
        pod, dapr=memo.settings.injector.dapr_annotations
    ):
        # Deciding from a half-filled index could skip a pod that has components; refusing
        # lets the pod's controller retry in a moment (and a human see why).
        raise kopf.AdmissionError(
            "statecar's operator is still loading the namespace's components; retry shortly",
            code=503,
        )
    dapr_injector = memo.dapr_injector.installed if memo.dapr_injector is not None else False
    if dapr_injector is None and _asks_through_dapr(pod):
        raise kopf.AdmissionError(
            "statecar's operator is still checking whether Dapr's own sidecar injector is "
            "installed (it honours dapr.io/* annotations only where it is not); retry shortly",
            code=503,
        )
    try:
        decision = plan_injection(
            pod,
            namespace=namespace,
            components_in_namespace=usable_specs(memo.indexes.components_in(namespace)),
            settings=memo.settings.injector,
            config_hash=functools.partial(memo.indexes.config_hash, namespace),
            dapr_injector_installed=bool(dapr_injector),
        )
    except InjectionError as exc:
        _report(memo, pod, namespace, dryrun, "InjectionRejected", str(exc))
        raise kopf.AdmissionError(str(exc), code=400) from None
    if isinstance(decision, Skip):
        if decision.notify:
            warnings.append(decision.message)
            _report(memo, pod, namespace, dryrun, decision.reason, decision.message)
        return
    _accept(decision, warnings, namespace)
    patch.fns.append(functools.partial(apply_injection, plan=decision))
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("JSON patch for a pod of %s: %s", namespace, patch.as_json_patch())
    logger.info(
        "Injecting statecar into a pod of %s (app id %s, components %s)",
        namespace,
        decision.app_id,
        ", ".join(decision.components_in_scope) or "none yet",
    )


def _accept(plan: InjectionPlan, warnings: list[str], namespace: str) -> None:
    warnings.extend(plan.warnings)
    if plan.config_hash is None:
        warnings.append(
            f"the Secret {WIRING_SECRET_NAME} of namespace {namespace!r} is not rendered yet; "
            "the sidecar starts with no component and opens them once the operator writes it"
        )


def _asks_for_injection(pod: dict[str, Any], *, dapr: bool) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    asks = parse_bool(str(annotations.get(ann.ENABLED, ""))) is True
    return asks or (dapr and _asks_through_dapr(pod))


def _asks_through_dapr(pod: dict[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return (
        ann.ENABLED not in annotations
        and parse_bool(str(annotations.get(ann.DAPR_PREFIX + "enabled", ""))) is True
    )


def _report(
    memo: Memo, pod: dict[str, Any], namespace: str, dryrun: bool, reason: str, message: str
) -> None:
    if dryrun:
        return  # sideEffects: NoneOnDryRun
    memo.events.record(
        pod_event_target(pod, namespace), type="Warning", reason=reason, message=message
    )


async def component_validate(body: kopf.Body, **_: Any) -> None:
    """Reject what the CRD schema cannot: setting names per backend, value shapes, key prefix."""
    document = dict(body)
    metadata = dict(document.get("metadata") or {})
    if not metadata.get("name") and metadata.get("generateName"):
        # The name is generated after admission; validate the rest with a stand-in.
        metadata["name"] = str(metadata["generateName"]).rstrip("-") or "x"
    document["metadata"] = metadata
    try:
        spec = parse_component(document)
    except ComponentError as exc:
        raise kopf.AdmissionError(str(exc), code=422) from None
    for index, app_id in enumerate(spec.scopes):
        if not is_valid_app_id(app_id):
            raise kopf.AdmissionError(
                f"spec.scopes[{index}]: {app_id!r} can never be an app id (letters, digits, '-', "
                "'_' and '.'; starting and ending with a letter or digit)",
                code=422,
            )
