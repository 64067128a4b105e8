"""A draft as each forge has it: GitHub's ``draft`` field read back, and Gitea's
work-in-progress title prefix (Gitea has no flag to set; it reports ``draft`` from the
title), added once."""

from __future__ import annotations

from typing import Any

import pytest

from continue_orchestrator.forge import _gitea, _wire


@pytest.mark.parametrize(
    ("title", "drafted"),
    [
        ("Fix rounding", "WIP: Fix rounding"),
        ("WIP: Fix rounding", "WIP: Fix rounding"),
        ("wip: fix rounding", "wip: fix rounding"),  # Gitea compares without case
        ("[WIP] Fix rounding", "[WIP] Fix rounding"),
        ("WIPE the cache", "WIP: WIPE the cache"),  # a word that starts so is no prefix
    ],
)
def test_a_draft_title_has_one_work_in_progress_prefix(title: str, drafted: str) -> None:
    assert _gitea.draft_title(title) == drafted


def _pull(**fields: Any) -> _wire.Pull:
    branch = {"ref": "agent/x", "sha": "0" * 40, "repo": {"full_name": "o/n"}}
    answer = {"number": 7, "html_url": "u", "state": "open", "head": branch, "base": branch}
    return _wire.Pull.model_validate({**answer, **fields})


def test_the_forges_draft_flag_is_read_back() -> None:
    assert _pull(draft=True).public().draft is True
    assert _pull(draft=False).public().draft is False
    assert _pull().public().draft is False  # a forge that does not say: not a draft
    merged = _pull(state="closed", merged=True, draft=True).public()
    assert (merged.state, merged.draft) == ("merged", True)
