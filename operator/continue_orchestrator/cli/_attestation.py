"""``orchestrator attestation get RUN``: fetch a run's Sigstore bundle from the cluster.

Reads ``status.attestation`` of the AgentRun, refuses a run whose status does not say
``signed: "true"`` (and says why), fetches the bundle from where the status points, and
checks its SHA-256 against the digest in the status before writing it out. Verifying the
signature is ``orchestrator verify``'s job, with a key or identity you trust.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from continue_orchestrator import api, controller, digest, errors
from continue_orchestrator.cli import _kubeconfig


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "attestation", help="fetch a run's attestation bundle from the cluster"
    )
    commands = parser.add_subparsers(dest="attestation_command", metavar="COMMAND", required=True)
    get = commands.add_parser(
        "get",
        help="write the Sigstore bundle of an AgentRun",
        description="Fetch the attestation bundle of AgentRun RUN, check it against the "
        "digest in its status, and write it to -o FILE (default: standard output). Then "
        "check it with `orchestrator verify FILE --key PUB`.",
    )
    get.add_argument("run", metavar="RUN", help="the AgentRun's name")
    get.add_argument("-o", "--output", type=pathlib.Path, default=None, help="file to write")
    _kubeconfig.add_arguments(get)
    get.set_defaults(handler=_get)


def _get(args: argparse.Namespace) -> int:
    kube, namespace = _kubeconfig.connect(args)
    where = f"AgentRun {namespace}/{args.run}"
    path = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/agentruns/{args.run}"
    with _kubeconfig.api_errors(f"reading {where}"):
        run = kube.get(path)
    if run is None:
        raise errors.AttestationError(
            "no such AgentRun", where=where, fix="check the name and -n NAMESPACE"
        )
    status = run.get("status") or {}
    attestation = status.get("attestation") or {}
    signed = attestation.get("signed")
    if signed != "true":
        detail = attestation.get("reason") or (
            "the run has not finished" if status.get("phase") not in _TERMINAL else "not yet"
        )
        raise errors.AttestationError(
            f"the run has no signed attestation (signed: {signed or 'false'}): {detail}",
            where=f"{where} status.attestation",
            fix="wait for the operator, or see the Attested condition for the reason",
        )
    location, recorded = attestation.get("location"), attestation.get("digest")
    if not location or not recorded:
        raise errors.AttestationError(
            "status.attestation says signed but names no location or digest",
            where=f"{where} status.attestation",
            fix="report this: the operator never writes signed without both",
        )
    with _kubeconfig.api_errors(f"fetching the bundle of {where}"):
        bundle = controller.fetch_bundle(kube, str(location))
    actual = digest.text(bundle)
    if actual != recorded:
        raise errors.AttestationError(
            f"the stored bundle's digest is {actual}, the status says {recorded}",
            where=str(location),
            fix="the bundle was replaced after signing; do not trust it",
        )
    if args.output is None:
        sys.stdout.buffer.write(bundle)
        sys.stdout.flush()
    else:
        try:
            args.output.write_bytes(bundle)
        except OSError as error:
            raise errors.AttestationError(
                f"cannot write: {error.strerror}", where=str(args.output)
            ) from error
        print(f"{args.output}: bundle of {where} ({recorded}, from {location})", file=sys.stderr)
    return 0


_TERMINAL = frozenset(p.value for p in api.TERMINAL_PHASES)
