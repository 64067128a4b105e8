#!/usr/bin/env bash
# Installs what the local gVisor sandbox needs: runsc (gVisor), iproute2, nftables and
# util-linux (unshare, nsenter). Debian/Ubuntu as root; elsewhere prints what to get.
# Safe to run again.
set -euo pipefail

missing=()
command -v runsc >/dev/null || missing+=(runsc)
command -v ip >/dev/null || [[ -x /usr/sbin/ip ]] || missing+=(iproute2)
command -v nft >/dev/null || [[ -x /usr/sbin/nft ]] || missing+=(nftables)
command -v nsenter >/dev/null || missing+=(util-linux)
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "sandbox-deps: runsc, iproute2, nftables, util-linux present"
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "sandbox-deps: missing ${missing[*]}; install them as root (apt-get install -y" \
         "${missing[*]}), or see https://gvisor.dev/docs/user_guide/install/ for runsc" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
echo "sandbox-deps: installed ${missing[*]}"
