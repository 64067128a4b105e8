"""How a forge's failure answer becomes `errors.ForgeError`: transient or not, the
forge's own words, how long it asked to wait. The bodies and headers are the ones
GitHub's and Gitea's documentation show."""

from __future__ import annotations

import json

import pytest

from continue_orchestrator import errors
from continue_orchestrator.forge import _failure

NOW = 1_700_000_000.0
URL = "https://api.github.com/repos/acme/payments/pulls"


def _github(status: int, body: object, **headers: str) -> errors.ForgeError:
    return _failure.from_response(
        "GitHub", "POST", URL, status, headers, json.dumps(body).encode(), now=NOW
    )


def test_primary_rate_limit_is_transient_until_the_reset() -> None:
    failure = _github(
        403,
        {"message": "API rate limit exceeded for installation ID 1."},
        **{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 90)},
    )
    assert (failure.transient, failure.status, failure.retry_after) == (True, 403, 90.0)
    assert failure.forge_message == "API rate limit exceeded for installation ID 1."
    assert "rate limit reached" in str(failure)
    assert "wait 90s" in str(failure)


def test_secondary_rate_limit_with_retry_after_is_transient() -> None:
    failure = _github(
        403,
        {"message": "You have exceeded a secondary rate limit."},
        **{"Retry-After": "30"},
    )
    assert (failure.transient, failure.retry_after) == (True, 30.0)


def test_429_with_an_http_date_retry_after() -> None:
    failure = _failure.from_response(
        "Gitea", "GET", URL, 429, {"Retry-After": "Tue, 14 Nov 2023 22:14:20 GMT"}, b"", now=NOW
    )
    assert failure.transient
    assert failure.retry_after == pytest.approx(1_700_000_060.0 - NOW)


def test_403_without_a_rate_limit_is_a_refusal_not_transient() -> None:
    failure = _github(
        403,
        {"message": "Resource not accessible by integration", "status": "403"},
        **{"X-RateLimit-Remaining": "4999"},
    )
    assert (failure.transient, failure.status, failure.retry_after) == (False, 403, None)
    assert "Resource not accessible by integration" in str(failure)
    assert "permission" in failure.fix and "protected branch" in failure.fix


@pytest.mark.parametrize(
    ("status", "fix"),
    [
        (401, "check the credential"),
        (404, "check the repository URL"),
        (409, "conflicts"),
        (410, "the forge's message says why"),
    ],
)
def test_refusals_are_not_transient(status: int, fix: str) -> None:
    failure = _github(status, {"message": "Bad credentials"})
    assert (failure.transient, failure.status) == (False, status)
    assert fix in failure.fix
    assert failure.where == f"GitHub POST {URL}"


def test_validation_errors_carry_githubs_details() -> None:
    failure = _github(
        422,
        {
            "message": "Validation Failed",
            "errors": [
                {"resource": "PullRequest", "code": "custom",
                 "message": "A pull request already exists for acme:agent/fix."},
                {"resource": "PullRequest", "field": "base", "code": "invalid"},
            ],
        },
    )  # fmt: skip
    assert not failure.transient
    assert failure.forge_message == (
        "Validation Failed; A pull request already exists for acme:agent/fix.; "
        "PullRequest base invalid"
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_and_timeouts_are_transient(status: int) -> None:
    failure = _github(status, {"message": "Server Error"})
    assert (failure.transient, failure.status) == (True, status)


def test_a_body_that_is_not_json_is_the_message_itself() -> None:
    failure = _failure.from_response(
        "Gitea", "GET", URL, 502, {}, b"<html>\n  Bad   Gateway </html>", now=NOW
    )
    assert failure.forge_message == "<html> Bad Gateway </html>"


def test_no_answer_is_transient_without_a_status() -> None:
    failure = _failure.no_answer("Gitea", "GET", URL, "[Errno 111] Connection refused")
    assert (failure.transient, failure.status) == (True, None)
    assert "did not answer" in str(failure)
