#!/usr/bin/env bash
# Makes the demo's git origin from examples/demo/repo: a bare repository whose one commit
# is byte-for-byte reproducible (fixed author, dates and modes), so the AgentRun can pin it.
# Usage: hack/demo-origin.sh [SOURCE_DIR] [BARE_REPO]. Prints the commit. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SOURCE="${1:-$ROOT/examples/demo/repo}"
ORIGIN="${2:-/var/tmp/continue-orchestrator-demo/origin.git}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -a "$SOURCE/." "$WORK/"
find "$WORK" -type d -exec chmod 755 {} + ; find "$WORK" -type f -exec chmod 644 {} +
export GIT_CONFIG_NOSYSTEM=1 HOME="$WORK" TZ=UTC
export GIT_AUTHOR_NAME="Continue Orchestrator demo" GIT_AUTHOR_EMAIL="demo@example.invalid"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
export GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"
git -C "$WORK" init -q -b main
git -C "$WORK" add -A
git -C "$WORK" commit -q -m "shop: a pricing library whose rounding test fails"
COMMIT="$(git -C "$WORK" rev-parse HEAD)"
if [ "$(git -C "$ORIGIN" rev-parse -q --verify main 2>/dev/null || true)" != "$COMMIT" ]; then
  rm -rf "$ORIGIN"
  mkdir -p "$(dirname "$ORIGIN")"
  git clone -q --bare "$WORK" "$ORIGIN"
fi
echo "$COMMIT"
