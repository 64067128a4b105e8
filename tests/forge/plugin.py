"""The pytest side of the test forge: the session fixture `gitea` and its build hook.

A conftest that wants the fixture imports it whole:
`from tests.forge.plugin import gitea, pytest_collection_finish, pytest_runtest_makereport`
(pytest finds fixtures and hooks by name in a conftest's namespace). A missing Gitea is
built before the first test starts, outside the per-test timeout; it is never skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator

import pytest
from tests.forge import gitea as forge


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build Gitea, when missing, before any test that uses it starts."""
    if not session.config.option.collectonly and any(
        "gitea" in getattr(item, "fixturenames", ()) for item in session.items
    ):
        forge.ensure_binary()


@pytest.fixture(scope="session")
def gitea(tmp_path_factory: pytest.TempPathFactory) -> Iterator[forge.Gitea]:
    """A running Gitea on loopback with an admin, its token and the seeded `demo`
    repository (see `tests.forge.gitea.Gitea`); stopped at the end of the session."""
    server = forge.Gitea(tmp_path_factory.mktemp("gitea"))
    server.start()
    print(
        f"\n[gitea] up at {server.base_url}: API ready in {server.ready_seconds:.1f}s, "
        f"seeded in {server.startup_seconds:.1f}s; log {server.log_path}",
        file=sys.stderr,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used Gitea gets the tail of Gitea's log in its report."""
    report = yield
    server = getattr(item, "funcargs", {}).get("gitea")
    if report.failed and isinstance(server, forge.Gitea):
        report.sections.append(("gitea log", server.log_tail(40)))
    return report
