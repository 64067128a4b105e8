"""Reaching the cluster from a command: kubeconfig, context and namespace, as kubectl does.

Shared by the commands that talk to the API server as the person running them
(``approve``/``deny``/``approvals``, ``attestation get``). Not a command group.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import kubernetes
import urllib3

from continue_orchestrator import controller, errors

_SERVICE_ACCOUNT_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n", "--namespace", default=None, help="the run's namespace (default: the context's)"
    )
    parser.add_argument(
        "--kubeconfig",
        type=pathlib.Path,
        default=None,
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)",
    )
    parser.add_argument("--context", default=None, help="kubeconfig context to use")


def requested(args: argparse.Namespace) -> bool:
    """True when any cluster flag was given."""
    return bool(args.namespace or args.kubeconfig or args.context)


def connect(args: argparse.Namespace) -> tuple[controller.Kube, str]:
    """A client as the person running the command, and the namespace to use."""
    configuration = kubernetes.client.Configuration()
    loader: Any = kubernetes.config
    where = str(args.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config")
    in_cluster = (
        args.kubeconfig is None
        and args.context is None
        and "KUBECONFIG" not in os.environ
        and not pathlib.Path("~/.kube/config").expanduser().exists()
        and "KUBERNETES_SERVICE_HOST" in os.environ
    )
    try:
        if in_cluster:
            loader.load_incluster_config(client_configuration=configuration)
            namespace = args.namespace or _service_account_namespace()
        else:
            config_file = str(args.kubeconfig) if args.kubeconfig else None
            loader.load_kube_config(
                config_file=config_file, context=args.context, client_configuration=configuration
            )
            namespace = args.namespace or _context_namespace(loader, config_file, args.context)
    except (loader.ConfigException, OSError, TypeError, ValueError) as error:
        raise errors.OrchestratorError(
            f"cannot load the cluster configuration: {error}",
            where=where,
            fix="pass --kubeconfig FILE (and --context NAME), or set KUBECONFIG",
        ) from error
    return controller.Kube(kubernetes.client.ApiClient(configuration)), namespace


def _context_namespace(loader: Any, config_file: str | None, context: str | None) -> str:
    contexts, active = loader.list_kube_config_contexts(config_file=config_file)
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _service_account_namespace() -> str:
    try:
        return _SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Turn the API server's refusals into one clear line."""
    try:
        yield
    except controller.ApiError as error:
        fix = {
            401: "your credentials were not accepted; log in again",
            403: "ask an admin for the RBAC permission, or check the message above",
            404: "check the name and --namespace",
        }.get(error.status, "")
        raise errors.OrchestratorError(
            f"{what}: the API server answered {error.status} {error.reason}: "
            f"{error.message_text}",
            where=error.path,
            fix=fix,
        ) from None
    except (OSError, urllib3.exceptions.HTTPError) as error:
        raise errors.OrchestratorError(
            f"{what}: cannot reach the API server: {error}",
            fix="check the kubeconfig's server address",
        ) from None


def whoami(kube: controller.Kube) -> tuple[str, list[str]]:
    """(username, groups) as the API server authenticates this client (SelfSubjectReview)."""
    with api_errors("asking the API server who you are"):
        review = kube.create(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    info = (review.get("status") or {}).get("userInfo") or {}
    username = str(info.get("username") or "")
    if not username:
        raise errors.OrchestratorError(
            "the API server did not say who you are",
            where="SelfSubjectReview",
            fix="use credentials that identify a person (not anonymous)",
        )
    return username, [str(g) for g in info.get("groups") or []]
