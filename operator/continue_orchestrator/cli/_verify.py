"""``orchestrator verify``: check a run attestation offline, trusting nothing but the key
or identity given on the command line."""

from __future__ import annotations

import argparse
import pathlib

from continue_orchestrator import attest, errors
from continue_orchestrator.cli import _flags


def register(subparsers: _flags.Subparsers) -> None:
    parser = _flags.command(
        subparsers,
        "verify",
        """
        verify a run attestation bundle offline

        Verify a Sigstore bundle holding a run attestation, offline. Key mode: --key
        PUB. Keyless: --identity and --issuer (and --trusted-root for a private Sigstore
        instance). Exit 0 and a summary if it verifies; exit 1 and the reason otherwise.
        """,
    )
    parser.add_argument("bundle", type=pathlib.Path, metavar="BUNDLE")
    parser.add_argument("--key", type=pathlib.Path, metavar="PUB", help="PEM public key")
    parser.add_argument("--identity", metavar="ID", help="expected certificate identity (SAN)")
    parser.add_argument("--issuer", metavar="URL", help="expected OIDC issuer")
    parser.add_argument(
        "--trusted-root",
        type=pathlib.Path,
        metavar="FILE",
        help="trusted_root.json or ClientTrustConfig JSON (default: Sigstore production, "
        "from the local TUF cache)",
    )
    parser.add_argument(
        "--type",
        default=attest.PREDICATE_TYPE,
        metavar="PREDICATE_TYPE",
        help=f"required predicate type (default {attest.PREDICATE_TYPE})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    keyless = args.identity is not None or args.issuer is not None
    if args.key is not None and keyless:
        raise errors.AttestationError(
            "--key cannot be combined with --identity/--issuer", where="verify"
        )
    if args.key is None and not (args.identity and args.issuer):
        raise errors.AttestationError(
            "say whom to trust", where="verify", fix="give --key PUB, or --identity ID --issuer URL"
        )
    if args.trusted_root is not None and not keyless:
        raise errors.AttestationError("--trusted-root is for keyless bundles", where="verify")
    bundle = _read(args.bundle)
    if args.key is not None:
        statement = attest.verify_bundle(
            bundle, public_key=_read(args.key), predicate_type=args.type
        )
    else:
        root = (
            attest.trusted_root_from_json(_read(args.trusted_root), where=str(args.trusted_root))
            if args.trusted_root is not None
            else None
        )
        statement = attest.verify_bundle(
            bundle,
            identity=args.identity,
            issuer=args.issuer,
            trusted_root=root,
            predicate_type=args.type,
        )
    print(f"{args.bundle}: verified ({statement.predicate_type})")
    if statement.predicate_type == attest.PREDICATE_TYPE:
        facts = statement.run_facts()
        print(f"  run      {facts.run.namespace}/{facts.run.name} ({facts.outcome})")
        print(f"  builder  {facts.builder_id}")
    for subject in statement.subject:
        digest = ", ".join(f"{alg}:{value}" for alg, value in sorted(subject.digest.items()))
        print(f"  subject  {subject.name} {digest}")
    return 0


def _read(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise errors.AttestationError(f"cannot read: {error.strerror}", where=str(path)) from error
