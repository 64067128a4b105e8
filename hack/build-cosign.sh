#!/usr/bin/env bash
# Builds cosign v3 from Go modules into a cache outside the tree, keyed by
# version. The attestation tests use it as an independent verifier of our
# key-mode Sigstore bundles: nobody on this project wrote it.
#
#   hack/build-cosign.sh            build if missing, print the cosign binary path
#   hack/build-cosign.sh --print    print the binary path, build nothing
#
# Safe to run again: an existing binary is not rebuilt.
set -euo pipefail

COSIGN_VERSION="${COSIGN_VERSION:-v3.1.3}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/continue-orchestrator"
BIN_DIR="$CACHE/bin/cosign-$COSIGN_VERSION"
COSIGN="$BIN_DIR/cosign"

log() { printf '[build-cosign] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ "${1:-}" == "--print" ]]; then
  echo "$COSIGN"
  exit 0
fi

if [[ -x "$COSIGN" ]]; then
  echo "$COSIGN"
  exit 0
fi

[[ -x "$GO" ]] || die "no Go toolchain found (set GO=/path/to/go)"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false"

mkdir -p "$BIN_DIR" "$CACHE/build"
exec 9>"$CACHE/build/.cosign.lock"
flock 9
if [[ -x "$COSIGN" ]]; then  # another process finished it while we waited
  echo "$COSIGN"
  exit 0
fi

log "building github.com/sigstore/cosign/v3/cmd/cosign@$COSIGN_VERSION (slow on a cold cache)"
tmp="$(mktemp -d "$BIN_DIR/.gobin.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" "$GO" install -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION" \
  "github.com/sigstore/cosign/v3/cmd/cosign@$COSIGN_VERSION"
mv "$tmp/cosign" "$COSIGN"
"$COSIGN" version >/dev/null 2>&1 || die "built $COSIGN but it does not run"
log "built $COSIGN"
echo "$COSIGN"
