#!/usr/bin/env bash
# Builds and installs what a real local Kubernetes node needs for the tests
# (docs/testing.md, "A real node"), beside the control plane of hack/build-k8s.sh:
#
#   kubelet, kube-proxy,  from k8s.io/kubernetes at the control plane's version, built
#   kube-scheduler        through build-k8s.sh's wrapper module (staging replaces); the
#                         scheduler is here, not in build-k8s.sh, because only a real
#                         node needs one (the pod executor runs pods unscheduled)
#   containerd v2         containerd, containerd-shim-runc-v2, ctr from Go modules, also
#                         in build-k8s.sh's wrapper module (one module graph: its
#                         k8s.io/*, grpc, otel... are the control plane's, compiled once)
#   kube-router           its NetworkPolicy firewall only (iptables + ipset), v2.1.0: the
#                         one version the module proxy serves here (see docs/testing.md)
#   runc, CNI plugins     Debian's runc and containernetworking-plugins (/usr/lib/cni)
#   runsc (gVisor)        Debian's runsc, driven by containerd's runc shim (BinaryName)
#   iptables, conntrack   for kube-proxy and the CNI bridge/portmap plugins
#   busybox-static        the smoke tests' tiny image is made from it
#
# Go builds go to a cache outside the tree keyed by version; no Docker, no download of
# prebuilt binaries: only the Go module proxy and Debian's packages.
#
#   hack/build-node.sh          build/install what is missing, print the dirs
#   hack/build-node.sh --print  print the node bin dir, the containerd bin dir, the
#                               CNI plugin dir and the kube-router bin dir (one a line),
#                               build nothing
#
# Safe to run again: a finished build leaves a stamp and is not redone.
set -euo pipefail
{ # bash parses this whole block before running it: editing the file mid-build is safe

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
CONTAINERD_MODULE="github.com/containerd/containerd/v2"
KUBE_ROUTER_VERSION="${KUBE_ROUTER_VERSION:-v2.1.0}"
KUBE_ROUTER_MODULE="github.com/cloudnativelabs/kube-router/v2"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
CNI_DIR="${CNI_DIR:-/usr/lib/cni}"

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/continue-orchestrator"
NODE_DIR="$CACHE/bin/kubernetes-node-$K8S_VERSION"
CTRD_DIR="$CACHE/bin/containerd-$CONTAINERD_VERSION"
KR_DIR="$CACHE/bin/kube-router-$KUBE_ROUTER_VERSION"
K8S_WORK="$CACHE/build/kubernetes-$K8S_VERSION"   # build-k8s.sh's wrapper module
TAGS="selinux,notest"   # build-k8s.sh's: the same tags, the same compiled packages
node_bins=(kubelet kube-proxy kube-scheduler)

log() { printf '[build-node] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  --print) printf '%s\n%s\n%s\n%s\n' "$NODE_DIR" "$CTRD_DIR" "$CNI_DIR" "$KR_DIR"; exit 0 ;;
  "") ;;
  *) die "usage: $0 [--print]" ;;
esac

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"

# --- Debian packages -----------------------------------------------------------
install_debs() {
  local missing=()
  [[ -x /usr/sbin/runc || -x /usr/bin/runc ]] || missing+=(runc)
  [[ -x /usr/bin/runsc ]] || missing+=(runsc)
  [[ -x "$CNI_DIR/bridge" && -x "$CNI_DIR/host-local" && -x "$CNI_DIR/portmap" \
     && -x "$CNI_DIR/loopback" ]] || missing+=(containernetworking-plugins)
  [[ -x /usr/sbin/iptables ]] || missing+=(iptables)
  [[ -x /usr/sbin/conntrack ]] || missing+=(conntrack)
  [[ -x /usr/sbin/nft ]] || missing+=(nftables)
  [[ -x /usr/sbin/ipset ]] || missing+=(ipset)
  [[ -x /bin/busybox || -x /usr/bin/busybox ]] && busybox --list 2>/dev/null | grep -qx nc \
    || missing+=(busybox-static)
  (( ${#missing[@]} )) || return 0
  [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null \
    || die "missing Debian packages ${missing[*]}: install them as root"
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  }
}

# --- toolchain ---------------------------------------------------------------
go_version=""
check_go() {
  [[ -x "$GO" ]] || die "no Go toolchain found (set GO=/path/to/go)"
  go_version="$("$GO" env GOVERSION)"
  log "using $go_version ($GO)"
}

progress() {
  local what="$1" n=0 line
  while IFS= read -r line; do
    case "$line" in
      *" "*|"") printf '%s\n' "$line" >&2 ;;
      *) n=$((n + 1)); (( n % 100 == 0 )) && log "$what: $n packages compiled" ;;
    esac
  done
  log "$what: $n packages compiled"
}

# --- kubelet + kube-proxy ----------------------------------------------------------
build_node() {
  local start=$SECONDS major minor out="$NODE_DIR.tmp" ld=() key val
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  [[ -f "$K8S_WORK/deps.txt" ]] || die "no wrapper module in $K8S_WORK (hack/build-k8s.sh --module makes it)"
  log "building ${node_bins[*]} $K8S_VERSION with $go_version into $NODE_DIR"
  for kv in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" \
            "gitTreeState=clean" "gitCommit=module-$K8S_VERSION" \
            "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    key="${kv%%=*}"; val="${kv#*=}"
    ld+=("-X k8s.io/component-base/version.$key=$val" "-X k8s.io/client-go/pkg/version.$key=$val")
  done
  rm -rf "$out"; mkdir -p "$out"
  if ! (cd "$K8S_WORK" && nice -n 10 "$GO" build -v -trimpath -tags "$TAGS" \
      -ldflags "-s -w ${ld[*]}" -o "$out/" \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
      k8s.io/kubernetes/cmd/kube-scheduler) 2>&1 | progress node; then
    die "go build of kubelet/kube-proxy $K8S_VERSION failed (see above)"
  fi
  for b in "${node_bins[@]}"; do [[ -x "$out/$b" ]] || die "missing $b after build"; done
  { printf 'kubernetes=%s\ngo=%s\nseconds=%s\n' "$K8S_VERSION" "$go_version" \
      "$((SECONDS - start))"
    bash "$HERE/build-k8s.sh" --stamp "k8s.io/kubernetes@$K8S_VERSION"; } >"$out/.stamp"
  rm -rf "$NODE_DIR"; mv "$out" "$NODE_DIR"
  log "${node_bins[*]} built in $((SECONDS - start)) s"
}

# --- containerd v2 -------------------------------------------------------------------
build_containerd() {
  local start=$SECONDS out="$CTRD_DIR.tmp" v="${CONTAINERD_VERSION#v}"
  log "building containerd $CONTAINERD_VERSION with $go_version into $CTRD_DIR"
  rm -rf "$out"; mkdir -p "$out"
  # In build-k8s.sh's wrapper module, which requires containerd at this version (not
  # `go install pkg@version` with containerd's own go.mod): its k8s.io/* (v0.37.0 there,
  # the control plane's v0.37.2 here), grpc, otel... are already compiled.
  # CGO off leaves out only the btrfs snapshotter (overlayfs is the default).
  if ! (cd "$K8S_WORK" && nice -n 10 "$GO" build -v -trimpath -tags "$TAGS" -o "$out/" \
      -ldflags "-s -w -X $CONTAINERD_MODULE/version.Version=$v -X $CONTAINERD_MODULE/version.Revision=module-$CONTAINERD_VERSION" \
      "$CONTAINERD_MODULE/cmd/containerd" \
      "$CONTAINERD_MODULE/cmd/containerd-shim-runc-v2" \
      "$CONTAINERD_MODULE/cmd/ctr") 2>&1 | progress containerd; then
    die "go build of containerd $CONTAINERD_VERSION failed (see above; work dir $K8S_WORK)"
  fi
  for b in containerd containerd-shim-runc-v2 ctr; do
    [[ -x "$out/$b" ]] || die "missing $b after build"
  done
  { printf 'containerd=%s\ngo=%s\nseconds=%s\n' "$CONTAINERD_VERSION" "$go_version" \
      "$((SECONDS - start))"
    bash "$HERE/build-k8s.sh" --stamp "$CONTAINERD_MODULE@$CONTAINERD_VERSION"; } >"$out/.stamp"
  rm -rf "$CTRD_DIR"; mv "$out" "$CTRD_DIR"
  log "containerd $CONTAINERD_VERSION built in $((SECONDS - start)) s"
}

# --- kube-router (NetworkPolicy) ------------------------------------------------------
# Tried first in build-k8s.sh's wrapper module, where its k8s.io/* v0.29 become the control
# plane's v0.37.2 (and grpc, otel... the shared versions): only its own packages and a few
# others are left to compile. If that does not compile, it is built as before, with its
# own go.mod (about 690 packages of its own, nothing shared).
build_kube_router() {
  local start=$SECONDS out="$KR_DIR.tmp" ld how
  ld="-s -w -X $KUBE_ROUTER_MODULE/pkg/version.Version=$KUBE_ROUTER_VERSION"
  log "building kube-router $KUBE_ROUTER_VERSION with $go_version into $KR_DIR"
  rm -rf "$out"; mkdir -p "$out"
  if (cd "$K8S_WORK" && nice -n 10 "$GO" build -v -trimpath -tags "$TAGS" -o "$out/" -ldflags "$ld" \
      "$KUBE_ROUTER_MODULE/cmd/kube-router") 2>&1 | progress kube-router; then
    how=wrapper
  else
    log "kube-router $KUBE_ROUTER_VERSION does not build in the wrapper module (errors above): building it with its own go.mod"
    rm -rf "$out"; mkdir -p "$out"
    if ! (cd "$CACHE/build" && GOBIN="$out" nice -n 10 "$GO" install -v -trimpath -ldflags "$ld" \
        "$KUBE_ROUTER_MODULE/cmd/kube-router@$KUBE_ROUTER_VERSION") 2>&1 | progress kube-router; then
      die "go install of kube-router $KUBE_ROUTER_VERSION failed (see above)"
    fi
    how=own
  fi
  [[ -x "$out/kube-router" ]] || die "missing kube-router after build"
  { printf 'kube-router=%s\ngo=%s\nseconds=%s\n' "$KUBE_ROUTER_VERSION" "$go_version" \
      "$((SECONDS - start))"
    if [[ "$how" == wrapper ]]; then
      bash "$HERE/build-k8s.sh" --stamp "$KUBE_ROUTER_MODULE@$KUBE_ROUTER_VERSION"
    else
      printf 'module=its own go.mod (go install; shares nothing with the wrapper module)\ntags=\ntrimpath=1\ncgo=0\n'
    fi; } >"$out/.stamp"
  rm -rf "$KR_DIR"; mv "$out" "$KR_DIR"
  log "kube-router $KUBE_ROUTER_VERSION built ($how module) in $((SECONDS - start)) s"
}

all_done() {
  node_done=1 ctrd_done=0 kr_done=0
  for b in "${node_bins[@]}"; do [[ -x "$NODE_DIR/$b" ]] || node_done=0; done
  [[ -f "$NODE_DIR/.stamp" ]] || node_done=0
  [[ -x "$CTRD_DIR/containerd" && -x "$CTRD_DIR/containerd-shim-runc-v2" \
     && -x "$CTRD_DIR/ctr" && -f "$CTRD_DIR/.stamp" ]] && ctrd_done=1
  [[ -x "$KR_DIR/kube-router" && -f "$KR_DIR/.stamp" ]] && kr_done=1
  (( node_done && ctrd_done && kr_done ))
}

main() {
  local total=$SECONDS node_done=0 ctrd_done=0 kr_done=0
  install_debs
  # The control plane first: its wrapper module is where kubelet and containerd are
  # built, and it must be the one for these versions (--module rewrites it if not).
  # (Before our own lock: build-k8s.sh takes the same one.)
  export K8S_VERSION CONTAINERD_VERSION KUBE_ROUTER_VERSION
  bash "$HERE/build-k8s.sh" >/dev/null
  all_done || bash "$HERE/build-k8s.sh" --module >/dev/null
  mkdir -p "$CACHE/bin" "$CACHE/build"
  exec 9>"$CACHE/build/.lock"
  flock 9
  all_done || true
  (( node_done && ctrd_done && kr_done )) || check_go
  (( node_done )) || build_node
  (( ctrd_done )) || build_containerd
  (( kr_done )) || build_kube_router
  if (( node_done && ctrd_done && kr_done )); then
    log "up to date: $NODE_DIR, $CTRD_DIR, $KR_DIR"
  else
    log "done in $((SECONDS - total)) s"
  fi
  printf '%s\n%s\n%s\n%s\n' "$NODE_DIR" "$CTRD_DIR" "$CNI_DIR" "$KR_DIR"
}
main "$@"
exit
}
