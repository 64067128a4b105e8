#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries for the ledger's PostgreSQL tests and
# benchmarks (they start a throwaway server with hack/pgtemp.py). Safe to run again.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || command -v pg_ctl >/dev/null; then
    echo "postgresql: server binaries present"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "postgresql: not installed; run as root: apt-get install -y postgresql" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
# The package starts a cluster we do not use; the tests start their own.
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters --no-header | while read -r version name _; do
        pg_ctlcluster "$version" "$name" stop || true
    done
fi
echo "postgresql: installed"
