"""The forge tests get the session fixture `gitea` (a real Gitea on loopback) from
`tests.forge.plugin`, with its build hook and its log in failure reports."""

from tests.forge.plugin import gitea, pytest_collection_finish, pytest_runtest_makereport

__all__ = ["gitea", "pytest_collection_finish", "pytest_runtest_makereport"]
