#!/usr/bin/env bash
# Installs the pinned Continue CLI from npm into the cache (never into the tree) and
# prints the path of its `cn` binary. Idempotent.
set -euo pipefail
VERSION="${CN_VERSION:-1.5.47}"
PREFIX="${XDG_CACHE_HOME:-$HOME/.cache}/continue-orchestrator/npm/continuedev-cli-$VERSION"
CN="$PREFIX/node_modules/.bin/cn"
if [ ! -x "$CN" ]; then
  command -v npm >/dev/null || { echo "install-cn: npm not found; install Node.js 20+" >&2; exit 1; }
  echo "install-cn: installing @continuedev/cli@$VERSION into $PREFIX" >&2
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "@continuedev/cli@$VERSION" >&2
fi
echo "$CN"
