"""Test infrastructure: a real forge (Gitea, built from Go modules) on loopback.

The publishing tests push branches and open pull requests on a real Gitea rather than a
mock: `hack/build-gitea.sh` builds it, `gitea` starts and seeds it, `plugin` offers it to
pytest as the session fixture `gitea`. Nothing here ships with the operator.
"""

from tests.forge.gitea import ForgeError, Gitea, PullRequest, ensure_binary

__all__ = ["ForgeError", "Gitea", "PullRequest", "ensure_binary"]
