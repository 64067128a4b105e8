"""`forge.Backoff`: bounded exponential waits, the forge's Retry-After honoured when
it is reasonable; and the Gitea client retrying a refused connection within bounds."""

from __future__ import annotations

import socket

import pytest

from continue_orchestrator import errors, forge


def test_waits_double_up_to_the_cap_then_stop() -> None:
    backoff = forge.Backoff(attempts=5, base_seconds=0.5, max_seconds=1.5)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 1.5, 1.5, None]


def test_retry_after_is_honoured_unless_too_long() -> None:
    backoff = forge.Backoff(attempts=3, max_retry_after=60)
    assert backoff.delay(1, retry_after=42.0) == 42.0
    assert backoff.delay(1, retry_after=3600.0) is None  # the caller schedules it instead
    assert backoff.delay(3, retry_after=1.0) is None  # no tries left


@pytest.mark.parametrize(
    "settings",
    [{"attempts": 0}, {"base_seconds": -1.0}, {"base_seconds": 2.0, "max_seconds": 1.0}],
)
def test_unusable_settings_fail(settings: dict[str, float]) -> None:
    with pytest.raises(errors.ForgeError, match="is not usable"):
        forge.Backoff(**settings)  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


@pytest.mark.parametrize("operation", ["get", "post"])
def test_a_refused_connection_is_retried_then_transient(operation: str) -> None:
    port = _closed_port()
    waits: list[float] = []
    gitea = forge.Gitea(
        forge.Endpoint(
            f"http://127.0.0.1:{port}/api/v1",
            f"http://127.0.0.1:{port}",
            timeout=5,
            backoff=forge.Backoff(attempts=3, base_seconds=0.01, max_seconds=1),
            sleep=waits.append,
        ),
        forge.Token("t"),
    )
    repo = forge.Repository(f"http://127.0.0.1:{port}/o/n")
    pr = forge.PullRequest(
        number=1, url="u", head_branch="h", head_sha="0" * 40, base_branch="main", state="open"
    )
    with pytest.raises(errors.ForgeError) as failed:
        if operation == "get":
            gitea.get_pull_request(repo, 1)
        else:  # a POST is repeated too: the connection was never made
            gitea.post_summary(repo, pr, head_sha="0" * 40, title="t", summary="s")
    assert (failed.value.transient, failed.value.status) == (True, None)
    assert waits == [0.01, 0.02]
    assert f"127.0.0.1:{port}" in str(failed.value)
