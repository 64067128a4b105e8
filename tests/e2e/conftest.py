"""The e2e tests that need a forge (the gateway's git endpoint against a private repository)
get the session fixture `gitea` from `tests.forge.plugin`, with its build hook and its log
in failure reports."""

from tests.forge.plugin import gitea, pytest_collection_finish, pytest_runtest_makereport

__all__ = ["gitea", "pytest_collection_finish", "pytest_runtest_makereport"]
