"""``orchestrator ledger``: read, verify, export and prove a run ledger from the shell.

Every subcommand takes a ledger URL (``sqlite:///path.db`` or ``postgresql://…``);
``verify`` also takes a JSONL export. ``verify`` exits 1 and names the first bad
sequence number when the ledger has been altered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
from collections.abc import Iterator
from typing import TextIO

from continue_orchestrator import errors, ledger
from continue_orchestrator.cli import _flags


def register(subparsers: _flags.Subparsers) -> None:
    parser = _flags.command(
        subparsers,
        "ledger",
        """
        show, verify, export and prove the run ledger

        Work with a run ledger at URL: sqlite:///path.db or
        postgresql://user@host/dbname.
        """,
    )
    commands = parser.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND", required=True)

    show = commands.add_parser(
        "show", help="print entries (redacted payloads show as <redacted>, null with --json)"
    )
    show.add_argument("url", metavar="URL")
    show.add_argument("--run", metavar="UID", help="only entries of this run")
    show.add_argument("--start", type=int, default=0, metavar="N", help="first sequence")
    show.add_argument("--stop", type=int, metavar="N", help="stop before this sequence")
    show.add_argument("--json", action="store_true", help="one JSON entry per line")
    show.set_defaults(handler=_show)

    verify = commands.add_parser(
        "verify", help="check every hash, link, payload and checkpoint; exit 1 if altered"
    )
    verify.add_argument("source", metavar="URL_OR_EXPORT")
    verify.add_argument(
        "--public-key",
        type=pathlib.Path,
        metavar="PEM",
        help="require every checkpoint to be signed by this key",
    )
    verify.add_argument(
        "--checkpoint",
        type=pathlib.Path,
        metavar="JSON",
        help="a checkpoint kept outside the ledger (detects truncation even "
        "when the stored checkpoints were removed too)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_verify)

    export = commands.add_parser("export", help="write the ledger as self-verifying JSONL")
    export.add_argument("url", metavar="URL")
    export.add_argument(
        "-o",
        "--output",
        type=pathlib.Path,
        metavar="FILE",
        help="write here (atomically) instead of stdout",
    )
    export.set_defaults(handler=_export)

    prove = commands.add_parser("prove", help="print an inclusion proof for one entry")
    prove.add_argument("url", metavar="URL")
    prove.add_argument("sequence", type=int, metavar="SEQUENCE")
    prove.add_argument(
        "--public-key",
        type=pathlib.Path,
        metavar="PEM",
        help="check the proof's checkpoint signature before printing",
    )
    prove.set_defaults(handler=_prove)

    checkpoint = commands.add_parser("checkpoint", help="record and sign the current tree head")
    checkpoint.add_argument("url", metavar="URL")
    checkpoint.add_argument(
        "--key",
        type=pathlib.Path,
        metavar="PEM",
        required=True,
        help="Ed25519 or ECDSA P-256 private key (PKCS#8 PEM)",
    )
    checkpoint.set_defaults(handler=_checkpoint)

    init = commands.add_parser("init", help="create the PostgreSQL schema, triggers and grants")
    init.add_argument("url", metavar="ADMIN_URL", help="postgresql:// URL of the schema owner")
    init.add_argument(
        "--writer-role", metavar="ROLE", help="grant this role append-only rights (SELECT, INSERT)"
    )
    init.set_defaults(handler=_init)


def _show(args: argparse.Namespace) -> int:
    with ledger.open(args.url, create=False) as book:
        for entry in book.entries(run_uid=args.run, start=args.start, stop=args.stop):
            if args.json:
                print(json.dumps(entry.to_json(), ensure_ascii=False, sort_keys=True))
                continue
            payload = (
                "<redacted>"
                if entry.payload is None
                else json.dumps(entry.payload, ensure_ascii=False, sort_keys=True)
            )
            if len(payload) > 120:
                payload = payload[:117] + "..."
            print(
                f"{entry.sequence:>8} {entry.time} {entry.kind.value:<22} "
                f"{entry.run_uid} {entry.actor} {payload}"
            )
    return 0


def _verify(args: argparse.Namespace) -> int:
    public_key = ledger.load_public_key(args.public_key) if args.public_key else None
    trusted = None
    if args.checkpoint:
        trusted = ledger.Checkpoint.from_json(
            _read_json(args.checkpoint), where=str(args.checkpoint)
        )
    report = ledger.verify(args.source, public_key=public_key, trusted_checkpoint=trusted)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(
            f"{report.source}: {report.size} entries, {report.checkpoints} checkpoints "
            f"({report.signatures_verified} signatures verified), "
            f"{report.redacted} redacted payloads, root {report.root_hash or '-'}"
        )
        for warning in report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for problem in report.problems:
            print(f"bad entry {problem.sequence}: {problem.what}", file=sys.stderr)
    if report.ok:
        if not args.json:
            print("ok: the ledger verifies")
        return 0
    print(f"FAILED: first bad sequence {report.first_bad_sequence}", file=sys.stderr)
    return 1


def _export(args: argparse.Namespace) -> int:
    with ledger.open(args.url, create=False) as book, _output(args.output) as out:
        count = ledger.export(book, out)
    print(f"exported {count} entries", file=sys.stderr)
    return 0


def _prove(args: argparse.Namespace) -> int:
    public_key = ledger.load_public_key(args.public_key) if args.public_key else None
    with ledger.open(args.url, create=False) as book:
        proof = book.prove(args.sequence)
    proof.verify(public_key)
    if proof.checkpoint is None:
        print(
            "warning: no checkpoint covers this entry yet; the root is unsigned "
            "(run 'orchestrator ledger checkpoint')",
            file=sys.stderr,
        )
    print(json.dumps(proof.to_json(), indent=2, ensure_ascii=False))
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    signer = ledger.KeySigner(ledger.load_private_key(args.key))
    with ledger.open(args.url, create=False) as book:
        checkpoint = book.checkpoint(signer)
    print(json.dumps(checkpoint.to_json(), indent=2))
    return 0


def _init(args: argparse.Namespace) -> int:
    if not args.url.startswith(("postgresql:", "postgres:")):
        raise errors.LedgerError(
            "init is for PostgreSQL",
            where=args.url,
            fix="a SQLite ledger creates itself on first append",
        )
    ledger.init_postgres(args.url, writer_role=args.writer_role)
    print("ledger schema ready" + (f"; {args.writer_role} may append" if args.writer_role else ""))
    return 0


def _read_json(path: pathlib.Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise errors.LedgerError(
            f"cannot read JSON: {error}", where=str(path), fix="pass a checkpoint JSON file"
        ) from None


@contextlib.contextmanager
def _output(path: pathlib.Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as out:
            yield out
        partial.replace(path)
    except OSError as error:
        raise errors.LedgerError(
            f"cannot write the export: {error.strerror}",
            where=str(path),
            fix="check the directory exists and is writable",
        ) from None
    finally:
        partial.unlink(missing_ok=True)
