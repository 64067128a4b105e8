"""``ledger.open(url)``: pick the backend from the URL scheme."""

from __future__ import annotations

from continue_orchestrator import errors
from continue_orchestrator.ledger import _backend, _checkpoint, _ledger, _sqlite


# Shadowing the builtin is the point: ``ledger.open(url)`` reads like ``io.open``.
def open(
    url: str,
    *,
    signer: _checkpoint.CheckpointSigner | None = None,
    checkpoint_every: int = 0,
    create: bool = True,
) -> _ledger.Ledger:
    """Open (creating unless ``create=False``) the ledger at ``url``.

    ``sqlite:///abs/path.db`` (or ``sqlite://relative.db``, ``?synchronous=normal`` to trade
    durability on power loss for speed) or ``postgresql://user@host/db``. ``signer`` signs
    checkpoints; with ``checkpoint_every=N`` one is written each time the size crosses a
    multiple of N.
    """
    if url.startswith("sqlite:"):
        backend: _backend.Backend = _sqlite.SQLiteBackend(url, create=create)
    elif url.startswith(("postgresql:", "postgres:")):
        from continue_orchestrator.ledger import _postgres

        backend = _postgres.PostgresBackend(url, create=create)
    else:
        raise errors.LedgerError(
            f"unsupported ledger URL {url.split('://')[0]!r}",
            where="ledger URL",
            fix="use sqlite:///path/to/ledger.db or postgresql://user@host/dbname",
        )
    try:
        return _ledger.Ledger(backend, signer=signer, checkpoint_every=checkpoint_every)
    except BaseException:
        backend.close()
        raise
