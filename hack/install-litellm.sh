#!/usr/bin/env bash
# Installs LiteLLM's proxy (the baseline bench_gateway measures against) into its own venv
# in the cache, never into the project venv or the tree, and prints its `litellm` path.
# Idempotent.
set -euo pipefail
VERSION="${LITELLM_VERSION:-1.100.5}"
PREFIX="${XDG_CACHE_HOME:-$HOME/.cache}/continue-orchestrator/litellm-$VERSION"
LITELLM="$PREFIX/bin/litellm"
if [ ! -x "$LITELLM" ]; then
  echo "install-litellm: installing litellm[proxy]==$VERSION into $PREFIX" >&2
  python3 -m venv "$PREFIX"
  "$PREFIX/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$VERSION" >&2
fi
echo "$LITELLM"
