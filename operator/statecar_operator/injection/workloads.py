"""
The workload a pod belongs to, derived from the pod's own metadata (no API call): the default
app id. Pure.

At admission time a controller-created pod has no name yet (the API server generates it after
the mutating webhooks ran) but it does carry its controller's `ownerReferences` and the
`pod-template-hash` label, which is enough to name the Deployment behind a ReplicaSet. A Job
created by a CronJob is named `<cronjob>-<scheduled minute>` (`pkg/controller/cronjob`,
`getJobName`), so a trailing run of 8+ digits names the CronJob. Bare pods use their own name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

#: The label the Deployment controller puts on its ReplicaSets' pods.
POD_TEMPLATE_HASH: Final = "pod-template-hash"
#: Labels the Job controller puts on its pods (the first is the current one, since 1.27).
JOB_NAME_LABELS: Final = ("batch.kubernetes.io/job-name", "job-name")

_CRONJOB_RUN: Final = re.compile(r"^(?P<cronjob>.+)-\d{8,}$")


def workload_name(metadata: Mapping[str, Any], *, owner_name_hint: str | None = None) -> str | None:
    """
    The owning workload's name, or the pod's own name; None when nothing names the pod.

    `owner_name_hint` wins: it is how a caller that renders a pod *template* offline (the
    `statecar inject` CLI) says which Deployment/StatefulSet/Job/CronJob the template is part of.
    """
    if owner_name_hint:
        return owner_name_hint
    labels = metadata.get("labels") or {}
    owner = _controller(metadata.get("ownerReferences") or [])
    if owner is not None:
        kind, name = owner.get("kind"), owner.get("name")
        if isinstance(name, str) and name:
            if kind == "ReplicaSet":
                return _strip_template_hash(name, labels.get(POD_TEMPLATE_HASH))
            if kind == "Job":
                return _strip_cronjob_run(name)
            return name
    generate_name = metadata.get("generateName")
    if isinstance(generate_name, str) and generate_name.strip("-"):
        base = generate_name.rstrip("-")
        base = _strip_template_hash(base, labels.get(POD_TEMPLATE_HASH))
        if any(label in labels for label in JOB_NAME_LABELS):
            base = _strip_cronjob_run(base)
        return base
    name = metadata.get("name")
    return name if isinstance(name, str) and name else None


def _controller(owners: object) -> Mapping[str, Any] | None:
    if not isinstance(owners, list):
        return None
    candidates = [o for o in owners if isinstance(o, Mapping)]
    for owner in candidates:
        if owner.get("controller") is True:
            return owner
    return candidates[0] if candidates else None


def _strip_template_hash(name: str, template_hash: object) -> str:
    if isinstance(template_hash, str) and template_hash and name.endswith("-" + template_hash):
        return name[: -len(template_hash) - 1]
    return name


def _strip_cronjob_run(name: str) -> str:
    match = _CRONJOB_RUN.match(name)
    return match["cronjob"] if match else name
