"""What attesting a run costs in key mode: build + sign, verify, and the full publish.

One run's real-sized statement (tests/sigstore_stack's sample facts), signed with an
ECDSA P-256 key into a v0.3 bundle and verified offline, RUNS times; medians and p99
in milliseconds. ``publish`` adds the durable write (fsync), the read-back and the
re-verification that an honest ``signed: true`` needs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from tests.sigstore_stack import sample_facts

from continue_orchestrator import attest

RUNS = int(os.environ.get("BENCH_ATTEST_RUNS", "300"))
GOAL_MS = 20.0  # sign + verify per run; attestation must never be what slows a run down


def _time(action: Callable[[int], object]) -> list[float]:
    samples = []
    for index in range(RUNS):
        started = time.perf_counter()
        action(index)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _rows(name: str, samples: list[float], **extra: Any) -> Iterator[dict[str, Any]]:
    ordered = sorted(samples)
    yield {
        "name": f"{name}_p50",
        "value": round(statistics.median(ordered), 3),
        "unit": "ms",
        **extra,
    }
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    yield {"name": f"{name}_p99", "value": round(p99, 3), "unit": "ms"}


def run() -> Iterator[dict[str, Any]]:
    signer = attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))
    facts = [sample_facts(f"run-{index}") for index in range(RUNS)]
    bundles: list[bytes] = []

    def sign(index: int) -> None:
        bundles.append(signer.sign(attest.build_statement(facts[index])))

    def verify(index: int) -> None:
        attest.verify_bundle(bundles[index], public_key=signer.public_key)

    sign_ms = _time(sign)
    verify_ms = _time(verify)
    yield from _rows("attest_key_sign", sign_ms)
    yield from _rows("attest_key_verify", verify_ms)
    both = [s + v for s, v in zip(sign_ms, verify_ms, strict=True)]
    yield from _rows("attest_key_sign_verify", both, goal=GOAL_MS)

    with tempfile.TemporaryDirectory() as directory:
        store = attest.FileStore(Path(directory))

        def publish(index: int) -> None:
            status = attest.publish(
                attest.build_statement(facts[index]),
                signer=signer,
                store=store,
                name=f"run-{index}.sigstore.json",
                attempts=1,
            )
            if not status.signed:
                raise RuntimeError(status.reason)

        yield from _rows("attest_key_publish", _time(publish))
    yield {"name": "attest_bundle_size", "value": len(bundles[0]), "unit": "bytes"}
