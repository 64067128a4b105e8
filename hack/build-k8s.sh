#!/usr/bin/env bash
# Builds the binaries of a real local Kubernetes control plane for the tests
# (etcd, kube-apiserver, kube-controller-manager, kubectl) and helm from Go
# modules, into a cache outside the tree keyed by version. There is no Docker
# and no download of prebuilt binaries here: only the Go module proxy.
#
# One wrapper module (in the cache) requires every Go tool of the tests that uses
# k8s.io/*: Kubernetes, etcd, helm, containerd and kube-router (the last two are
# built by hack/build-node.sh in the same module). Go's build cache is keyed by
# package content, so one module graph (one version of each dependency, the
# highest any of them asks for; k8s.io/* pinned to the control plane's staging
# tag) and the same flags mean a package is compiled once for all of them.
# The tools' own versions are never changed; what the wrapper raised over each
# tool's own go.mod is listed in its .stamp.
#
#   hack/build-k8s.sh            build what is missing, print the bin dir(s)
#   hack/build-k8s.sh --print    print the kubernetes bin dir, build nothing
#   hack/build-k8s.sh --print-all  print the kubernetes and the helm bin dirs
#   hack/build-k8s.sh --module   write the wrapper module if missing or stale,
#                                print its directory (hack/build-node.sh uses it)
#   hack/build-k8s.sh --stamp MODULE@VERSION  print the .stamp lines on what a tool
#                                built in the wrapper shares (no lock; build-node.sh)
#
# Safe to run again: a finished build leaves a stamp and is not redone.
set -euo pipefail
{ # bash parses this whole block before running it: editing the file mid-build is safe

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
HELM_MODULE="${HELM_MODULE:-helm.sh/helm/v4}"
HELM_VERSION="${HELM_VERSION:-v4.3.1}"
# Built by hack/build-node.sh, but in this script's wrapper module: keep the defaults
# in step with build-node.sh's.
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
CONTAINERD_MODULE="github.com/containerd/containerd/v2"
KUBE_ROUTER_VERSION="${KUBE_ROUTER_VERSION:-v2.1.0}"
KUBE_ROUTER_MODULE="github.com/cloudnativelabs/kube-router/v2"
# The same tags for every binary built in the wrapper: tags select files, and a
# package whose file set differs is another cache entry (with "notest",
# k8s.io/apimachinery's meta/v1 and intstr drop their fuzz files, so a helm built
# without it shares no k8s.io/* package with the control plane).
TAGS="selinux,notest"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
GO_MIN="1.26"

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/continue-orchestrator"
K8S_DIR="$CACHE/bin/kubernetes-$K8S_VERSION"
HELM_DIR="$CACHE/bin/helm-$HELM_VERSION"
WORK="$CACHE/build/kubernetes-$K8S_VERSION"

log() { printf '[build-k8s] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The requirements of MODULE@VERSION's own go.mod that the wrapper selects at another
# version, "path own -> selected" one a line (for the stamps).
raised() {
  awk -v m="$1" 'NR == FNR { sel[$1] = ($3 == "=>") ? $5 : $2; next }
    # k8s.io/kubernetes asks for its staging modules at v0.0.0 (replaced): not a raise.
    $1 == m { split($2, a, "@"); if ((a[1] in sel) && sel[a[1]] != a[2] && a[2] != "v0.0.0") print a[1], a[2], "->", sel[a[1]] }' \
    "$WORK/deps.txt" "$WORK/graph.txt"
}

# A stamp's lines on what the binary shares: the module, the tags, and the raised deps.
shared_stamp() {
  local r
  r="$(raised "$1")"
  printf 'module=%s (one module graph: kubernetes %s, etcd %s, helm %s, containerd %s, kube-router %s)\n' \
    "$WORK" "$K8S_VERSION" "$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }' "$WORK/deps.txt")" \
    "$HELM_VERSION" "$CONTAINERD_VERSION" "$KUBE_ROUTER_VERSION"
  printf 'tags=%s\ntrimpath=1\ncgo=0\n' "$TAGS"
  printf 'raised_over_own_go_mod=%s\n' "$(grep -c . <<<"$r" || true)"
  [[ -z "$r" ]] || sed 's/^/raised=/' <<<"$r"
}

case "${1:-}" in
  --print) echo "$K8S_DIR"; exit 0 ;;
  --stamp) [[ -n "${2:-}" && -f "$WORK/deps.txt" ]] || die "usage: $0 --stamp MODULE@VERSION (after --module)"
           shared_stamp "$2"; exit 0 ;;
  --print-all) echo "$K8S_DIR"; echo "$HELM_DIR"; exit 0 ;;
  ""|--module) ;;
  *) die "usage: $0 [--print|--print-all|--module]" ;;
esac

# --- toolchain check (only when something is to be built) -------------------
go_version=""
check_go() {
  [[ -x "$GO" ]] || die "no Go toolchain found (set GO=/path/to/go); need go >= $GO_MIN"
  go_version="$("$GO" env GOVERSION)"            # e.g. go1.26.8
  local go_mm="${go_version#go}"; go_mm="${go_mm%.*}"   # 1.26
  if [[ "$(printf '%s\n%s\n' "$GO_MIN" "$go_mm" | sort -V | head -1)" != "$GO_MIN" ]]; then
    die "$go_version is too old for Kubernetes $K8S_VERSION (needs go >= $GO_MIN)"
  fi
  log "using $go_version ($GO)"
}

# Never fetch another toolchain; keep module and build caches (GOPATH,
# GOCACHE) where Go keeps them so that warm builds are fast.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"

mkdir -p "$CACHE/bin" "$CACHE/build"
exec 9>"$CACHE/build/.lock"
flock 9   # one build at a time (make test and a fixture may race)

k8s_bins=(etcd kube-apiserver kube-controller-manager kubectl)
k8s_done=1
for b in "${k8s_bins[@]}"; do [[ -x "$K8S_DIR/$b" ]] || k8s_done=0; done
[[ -f "$K8S_DIR/.stamp" ]] || k8s_done=0
helm_done=0
[[ -x "$HELM_DIR/helm" && -f "$HELM_DIR/.stamp" ]] && helm_done=1

# Counts compiled packages from `go build -v` so that a long build shows life.
progress() {
  local what="$1" n=0 line
  while IFS= read -r line; do
    case "$line" in
      *" "*|"") printf '%s\n' "$line" >&2 ;;  # errors and warnings pass through
      *) n=$((n + 1)); (( n % 100 == 0 )) && log "$what: $n packages compiled" ;;
    esac
  done
  log "$what: $n packages compiled"
}

# --- the wrapper module -----------------------------------------------------
# Written once per set of versions (.key); kept otherwise, with the go.mod and go.sum
# the go command completed, so every build in it sees the same module graph.
etcd_version=""
make_module() {
  local key kmod staging_version
  key="$(printf 'kubernetes=%s\nhelm=%s@%s\ncontainerd=%s@%s\nkube-router=%s@%s\n' \
    "$K8S_VERSION" "$HELM_MODULE" "$HELM_VERSION" "$CONTAINERD_MODULE" "$CONTAINERD_VERSION" \
    "$KUBE_ROUTER_MODULE" "$KUBE_ROUTER_VERSION")"
  kmod="$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
          | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$kmod" ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
  # etcd's server module at the version kubernetes's go.mod selects.
  etcd_version="$(sed -n 's#^\tgo.etcd.io/etcd/server/v3 \(v[^ ]*\).*#\1#p' "$kmod")"
  if [[ -f "$WORK/.key" && "$(cat "$WORK/.key")" == "$key" && -f "$WORK/deps.txt" ]]; then
    return 0
  fi
  log "writing the wrapper module $WORK (kubernetes, etcd, helm, containerd, kube-router)"
  staging_version="v0.${K8S_VERSION#v*.}"   # v1.37.2 -> v0.37.2
  rm -rf "$WORK"; mkdir -p "$WORK/cmd/etcd"
  # k8s.io/kubernetes replaces its staging modules with ./staging paths that
  # do not exist in the published module: replace each with its v0.Y.Z tag,
  # reading the list from kubernetes's own go.mod. A replace without a version
  # applies to every version asked for, so helm's and containerd's k8s.io/*
  # (v0.37.1, v0.37.0) become the control plane's v0.37.2 too.
  {
    echo "// Generated by hack/build-k8s.sh: builds Kubernetes, etcd, helm, containerd and"
    echo "// kube-router from Go modules in one module graph (one compile per package)."
    echo "module continue-orchestrator.local/k8s-tools"
    echo
    echo "go $("$GO" mod edit -json "$kmod" | sed -n 's/^\t"Go": "\(.*\)",$/\1/p')"
    echo
    echo "require ("
    printf '\t%s %s\n' k8s.io/kubernetes "$K8S_VERSION" go.etcd.io/etcd/server/v3 "$etcd_version" \
      "$HELM_MODULE" "$HELM_VERSION" "$CONTAINERD_MODULE" "$CONTAINERD_VERSION" \
      "$KUBE_ROUTER_MODULE" "$KUBE_ROUTER_VERSION"
    echo ")"
    echo
    echo "replace ("
    sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$kmod"
    echo ")"
  } >"$WORK/go.mod"
  cat >"$WORK/cmd/etcd/main.go" <<'EOF'
// Command etcd is etcd's own server main, at the version Kubernetes pins.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  # Resolve the graph now (go.mod's go line and indirect requires get filled in).
  (cd "$WORK" && "$GO" list -m all >deps.txt) || die "could not resolve the wrapper module $WORK"
  (cd "$WORK" && "$GO" mod graph >graph.txt) || die "could not read the module graph of $WORK"
  printf '%s\n' "$key" >"$WORK/.key"
}

# --- kubernetes + etcd -----------------------------------------------------
build_k8s() {
  local start=$SECONDS minor major
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  log "building Kubernetes $K8S_VERSION (+ etcd) with $go_version into $K8S_DIR"

  local ld=() key val
  for kv in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" \
            "gitTreeState=clean" "gitCommit=module-$K8S_VERSION" \
            "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    key="${kv%%=*}"; val="${kv#*=}"
    ld+=("-X k8s.io/component-base/version.$key=$val" "-X k8s.io/client-go/pkg/version.$key=$val")
  done
  ld+=("-X go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd_version")

  local out="$K8S_DIR.tmp"
  rm -rf "$out"; mkdir -p "$out"
  log "downloading and compiling (cold: tens of minutes on 2 cores)"
  if ! (cd "$WORK" && "$GO" build -v -trimpath -tags "$TAGS" -ldflags "-s -w ${ld[*]}" -o "$out/" \
      ./cmd/etcd \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl) 2>&1 | progress kubernetes; then
    die "go build of kubernetes $K8S_VERSION failed (see above; work dir $WORK)"
  fi
  for b in "${k8s_bins[@]}"; do [[ -x "$out/$b" ]] || die "missing $b after build"; done
  { printf 'kubernetes=%s\netcd=%s\ngo=%s\nseconds=%s\n' \
      "$K8S_VERSION" "$etcd_version" "$go_version" "$((SECONDS - start))"
    shared_stamp "k8s.io/kubernetes@$K8S_VERSION"; } >"$out/.stamp"
  rm -rf "$K8S_DIR"; mv "$out" "$K8S_DIR"
  log "kubernetes $K8S_VERSION + etcd $etcd_version built in $((SECONDS - start)) s"
}

# --- helm ------------------------------------------------------------------
build_helm() {
  local start=$SECONDS out="$HELM_DIR.tmp"
  log "building helm $HELM_VERSION ($HELM_MODULE) in the wrapper module into $HELM_DIR"
  rm -rf "$out"; mkdir -p "$out"
  # In the wrapper (not `go install pkg@version` with helm's own go.mod): its k8s.io/*
  # packages, and most others, are the control plane's, already compiled.
  if ! (cd "$WORK" && "$GO" build -v -trimpath -tags "$TAGS" \
      -ldflags "-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION" \
      -o "$out/" "$HELM_MODULE/cmd/helm") 2>&1 | progress helm; then
    die "go build of helm $HELM_VERSION failed (see above; work dir $WORK)"
  fi
  [[ -x "$out/helm" ]] || die "missing helm after build"
  { printf 'helm=%s\ngo=%s\nseconds=%s\n' "$HELM_VERSION" "$go_version" "$((SECONDS - start))"
    shared_stamp "$HELM_MODULE@$HELM_VERSION"; } >"$out/.stamp"
  rm -rf "$HELM_DIR"; mv "$out" "$HELM_DIR"
  log "helm $HELM_VERSION built in $((SECONDS - start)) s"
}

main() {
  local total=$SECONDS
  if [[ "${1:-}" == "--module" ]]; then
    check_go; make_module; echo "$WORK"; return 0
  fi
  (( k8s_done && helm_done )) || { check_go; make_module; }
  (( k8s_done )) || build_k8s
  (( helm_done )) || build_helm
  if (( k8s_done && helm_done )); then
    log "up to date: $K8S_DIR, $HELM_DIR"
  else
    log "done in $((SECONDS - total)) s"
  fi
  echo "$K8S_DIR"
}
main "$@"
exit
}
