"""
`statecar operator`: start the operator, or print what deploying it needs.

    statecar operator                    run (settings from STATECAR_OPERATOR_* variables)
    statecar operator --help-env         list those variables with defaults
    statecar operator rbac               the ClusterRole/Role (+ bindings) it needs, as YAML
    statecar operator webhook-config     the Mutating/Validating webhook configurations, as YAML

The flags and the printing only: the operator itself is `statecar_operator.app.run`, given the
settings read here from the environment (exit 2 when one is wrong).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from statecar_operator import __version__
from statecar_operator.manifests import rbac, webhooks
from statecar_operator.settings import OperatorSettings, SettingsError, env_variables


def run(argv: Sequence[str]) -> int:
    """Entry point of `statecar operator`; returns the process exit code."""
    args = build_parser().parse_args(list(argv))
    if args.help_env:
        for variable, default, help_text in env_variables():
            print(f"{variable:48} {default or '-':28} {help_text}")
        return 0
    if args.command == "rbac":
        print(
            yaml.safe_dump_all(
                rbac.manifests(
                    namespace=args.namespace,
                    service_account=args.service_account,
                    lease_name=args.lease_name,
                    webhook_secret=args.webhook_secret,
                    namespaces=_names(args.namespaces),
                    dapr_annotations=args.dapr_annotations,
                    dapr_components=args.dapr_components,
                    stale_sidecars=args.stale_sidecars,
                    auto_rollout=args.auto_rollout,
                ),
                sort_keys=False,
            ),
            end="",
        )
        return 0
    if args.command == "webhook-config":
        return _print_webhook_config(args)
    environ = dict(os.environ)
    if args.operator_namespaces is not None:
        environ["STATECAR_OPERATOR_NAMESPACES"] = args.operator_namespaces
    try:
        settings = OperatorSettings.from_env(environ)
    except SettingsError as exc:
        print(f"statecar operator: {exc}", file=sys.stderr)
        return 2
    # Imported here: printing RBAC or webhook configurations needs neither kopf nor a cluster.
    from statecar_operator import app

    return app.run(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statecar operator",
        description=f"statecar's operator and sidecar injector ({__version__}).",
    )
    parser.add_argument("--help-env", action="store_true", help="list the settings' env variables")
    parser.add_argument(
        "--namespaces",
        dest="operator_namespaces",
        help="comma-separated namespaces to operate in (overrides STATECAR_OPERATOR_NAMESPACES; "
        "default: the whole cluster)",
    )
    commands = parser.add_subparsers(dest="command")
    rbac_cmd = commands.add_parser("rbac", help="print the RBAC the operator needs")
    rbac_cmd.add_argument("--namespace", default="statecar-system")
    rbac_cmd.add_argument("--service-account", default="statecar-operator")
    rbac_cmd.add_argument("--lease-name", default="statecar-operator")
    rbac_cmd.add_argument(
        "--webhook-secret",
        help="with operator-managed webhook certificates: the Secret's name (adds its rules)",
    )
    rbac_cmd.add_argument(
        "--namespaces",
        default="",
        help="comma-separated namespaces the operator is restricted to (STATECAR_OPERATOR_"
        "NAMESPACES): a Role in each instead of cluster-wide rules",
    )
    rbac_cmd.add_argument(
        "--dapr-annotations",
        action="store_true",
        help="with STATECAR_OPERATOR_SIDECAR_DAPR_ANNOTATIONS: may see whether Dapr's injector "
        "is installed",
    )
    rbac_cmd.add_argument(
        "--dapr-components",
        action="store_true",
        help="with STATECAR_OPERATOR_DAPR_COMPONENTS: may read Dapr's Components",
    )
    rbac_cmd.add_argument(
        "--stale-sidecars",
        action="store_true",
        help="with STATECAR_OPERATOR_STALE_SIDECARS: may read pods",
    )
    rbac_cmd.add_argument(
        "--auto-rollout",
        action="store_true",
        help="with STATECAR_OPERATOR_AUTO_ROLLOUT: may restart workloads (and read pods)",
    )
    hooks = commands.add_parser("webhook-config", help="print the webhook configurations")
    target = hooks.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="https://host:port of the operator's webhook server")
    target.add_argument("--service", help="Service name in front of the operator")
    hooks.add_argument("--service-namespace", default="statecar-system")
    hooks.add_argument("--service-port", type=int, default=443)
    hooks.add_argument("--ca-file", required=True, type=Path, help="PEM CA bundle (caBundle)")
    hooks.add_argument(
        "--exclude-namespace",
        action="append",
        default=[],
        help="namespaces never injected (kube-system and kube-node-lease always are)",
    )
    hooks.add_argument("--failure-policy", choices=["Fail", "Ignore"], default="Fail")
    hooks.add_argument(
        "--namespaces",
        default="",
        help="comma-separated namespaces the operator is restricted to: only they are sent",
    )
    hooks.add_argument(
        "--dapr-annotations",
        action="store_true",
        help="with STATECAR_OPERATOR_SIDECAR_DAPR_ANNOTATIONS: send pods with dapr.io/enabled too",
    )
    return parser


def _print_webhook_config(args: argparse.Namespace) -> int:
    excluded = ["kube-system", "kube-node-lease", *args.exclude_namespace]
    if args.service:
        excluded.append(args.service_namespace)
    mutating, validating = webhooks.build_webhook_configurations(
        ca_bundle=args.ca_file.read_bytes(),
        url=args.url,
        service_name=args.service,
        service_namespace=args.service_namespace if args.service else None,
        service_port=args.service_port,
        excluded_namespaces=excluded,
        inject_failure_policy=args.failure_policy,
        namespaces=_names(args.namespaces),
        dapr_annotations=args.dapr_annotations,
    )
    print(yaml.safe_dump_all([mutating, validating], sort_keys=False), end="")
    return 0


def _names(value: str) -> list[str]:
    return sorted({name.strip() for name in value.split(",") if name.strip()})
