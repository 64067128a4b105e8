#!/usr/bin/env bash
# Installs Stoplight Prism (a validating mock server for OpenAPI descriptions) and
# GitHub's published REST API description (@octokit/openapi) from npm into a cache
# outside the tree. The GitHub forge tests run `prism mock` with request validation on,
# so every request the GitHub backend makes is checked against GitHub's own description
# (docs/forges.md). Both versions are pinned; a second run installs nothing, so it works
# offline once the cache is filled.
#
#   hack/install-prism.sh          install if missing, print the prefix
#   hack/install-prism.sh --print  print the prefix, install nothing
#
# The prefix holds node_modules/.bin/prism and
# node_modules/@octokit/openapi/generated/api.github.com.json.
set -euo pipefail

PRISM_VERSION="${PRISM_VERSION:-5.16.0}"
OPENAPI_VERSION="${OCTOKIT_OPENAPI_VERSION:-23.0.2}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/continue-orchestrator"
PREFIX="$CACHE/npm/prism-$PRISM_VERSION"
STAMP="$PREFIX/.installed-openapi-$OPENAPI_VERSION"

log() { printf '[install-prism] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ "${1:-}" == "--print" ]]; then
  echo "$PREFIX"
  exit 0
fi
if [[ -f "$STAMP" ]]; then
  echo "$PREFIX"
  exit 0
fi

command -v npm >/dev/null || die "npm not found; install Node.js 20 or newer"
mkdir -p "$PREFIX"
exec 9>"$PREFIX/.lock"
flock 9
if [[ ! -f "$STAMP" ]]; then
  log "installing @stoplight/prism-cli@$PRISM_VERSION and @octokit/openapi@$OPENAPI_VERSION into $PREFIX"
  # prism-cli declares node >=24 but runs on Node 20 (the tests prove it on every run);
  # @scarf/scarf, one of its dependencies, would phone home from its install script.
  SCARF_ANALYTICS=false npm install --silent --no-audit --no-fund --engine-strict=false \
    --prefix "$PREFIX" \
    "@stoplight/prism-cli@$PRISM_VERSION" "@octokit/openapi@$OPENAPI_VERSION" >&2
  "$PREFIX/node_modules/.bin/prism" --version >/dev/null \
    || die "installed @stoplight/prism-cli but \`prism --version\` fails"
  [[ -f "$PREFIX/node_modules/@octokit/openapi/generated/api.github.com.json" ]] \
    || die "@octokit/openapi@$OPENAPI_VERSION has no generated/api.github.com.json"
  touch "$STAMP"
fi
echo "$PREFIX"
