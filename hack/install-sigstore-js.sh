#!/usr/bin/env bash
# Installs the pinned npm packages of sigstore-js (@sigstore/verify and the
# bundle/core packages it is used with) into a cache outside the tree. The
# attestation tests use them as an independent verifier of our key-mode
# bundles. @sigstore/verify 3.x is the last line that supports Node 20.
#
#   hack/install-sigstore-js.sh          install if missing, print the prefix
#   hack/install-sigstore-js.sh --print  print the prefix, install nothing
set -euo pipefail

VERIFY_VERSION="${SIGSTORE_VERIFY_VERSION:-3.1.0}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/continue-orchestrator"
PREFIX="$CACHE/npm/sigstore-verify-$VERIFY_VERSION"

log() { printf '[install-sigstore-js] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ "${1:-}" == "--print" ]]; then
  echo "$PREFIX"
  exit 0
fi
if [[ -f "$PREFIX/.installed" ]]; then
  echo "$PREFIX"
  exit 0
fi

command -v npm >/dev/null || die "npm not found; install Node.js 20 or newer"
mkdir -p "$PREFIX"
exec 9>"$PREFIX/.lock"
flock 9
if [[ ! -f "$PREFIX/.installed" ]]; then
  log "installing @sigstore/verify@$VERIFY_VERSION into $PREFIX"
  # The bundle and core versions are the ones @sigstore/verify itself depends on.
  npm install --silent --no-audit --no-fund --prefix "$PREFIX" \
    "@sigstore/verify@$VERIFY_VERSION" >&2
  node -e "require('$PREFIX/node_modules/@sigstore/verify')" \
    || die "installed @sigstore/verify but it does not load"
  touch "$PREFIX/.installed"
fi
echo "$PREFIX"
