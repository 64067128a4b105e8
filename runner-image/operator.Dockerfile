# The operator and gateway image: `orchestrator operator` and `orchestrator gateway`, as the
# Helm chart's Deployments run them (command [orchestrator], user 65532, read-only root
# filesystem, /tmp an emptyDir). Python with this package and its dependencies, the
# ledger's native Rust core (operator/native, built by the pip install through
# setuptools-rust), git (the gateway serves `git upload-pack`; the operator publishes).
#
# Build from the repository root:
#   docker build -f runner-image/operator.Dockerfile -t continue-orchestrator .
# Without Docker: hack/build-images.sh (buildah on an mmdebstrap base; docs/images.md).
#
# Reproducible builds: pass SOURCE_DATE_EPOCH (and `--timestamp` to buildah, or BuildKit's
# SOURCE_DATE_EPOCH). Build-time only, for an egress proxy that re-signs TLS: PIP_CERT,
# CARGO_HTTP_CAINFO and CURL_CA_BUNDLE name a CA bundle mounted into the build
# (hack/build-images.sh does this); unset otherwise.

# Release builds pass BASE_IMAGE pinned by digest (debian:bookworm-slim@sha256:...).
ARG BASE_IMAGE=debian:bookworm-slim

# The venv's dependencies alone (from pyproject.toml): the same stage, step for step, as
# runner-image/Dockerfile's `python` stage, so a builder with a layer cache builds it once
# for both images; a change to operator/ does not rerun it.
FROM ${BASE_IMAGE} AS python
ARG SOURCE_DATE_EPOCH
ARG PIP_CERT
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml /src/pyproject.toml
RUN python3 -m venv /opt/orchestrator \
    && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/orchestrator/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The Rust toolchain and the native core's compiled crates, from operator/native alone: a
# change to operator/*.py does not recompile Rust.
FROM ${BASE_IMAGE} AS native
# The Rust toolchain, from static.rust-lang.org, each component checked against its pinned
# SHA-256 (no rustup: nothing resolves "stable" at build time). operator/native says
# rust-version 1.85; 1.95.0 is what the project's machines build with.
ARG RUST_VERSION=1.95.0
ARG RUSTC_SHA256=8426a3d170a5879f5682f5fbdd024a1779b3951e7baba685af2d6dc32a6dfc15
ARG CARGO_SHA256=e74edd2cf7d0f1f1383b4f00eb90c843750bc489e2ccf7214e6476678a907425
ARG RUST_STD_SHA256=047ea7098803d3500fa1072e9cee5392697e21525559e4458128a2bf874aa382
ARG SOURCE_DATE_EPOCH
ARG CURL_CA_BUNDLE
ARG CARGO_HTTP_CAINFO
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv gcc libc6-dev \
        curl ca-certificates xz-utils \
    && rm -rf /var/lib/apt/lists/*
# POSIX sh (buildah keeps no SHELL in OCI images); the pipe's last command is the check.
# hadolint ignore=DL4006
RUN for pin in "rustc:${RUSTC_SHA256}" "cargo:${CARGO_SHA256}" "rust-std:${RUST_STD_SHA256}"; do \
        name="${pin%%:*}-${RUST_VERSION}-x86_64-unknown-linux-gnu"; \
        curl -fsSL -o "/tmp/${name}.tar.xz" "https://static.rust-lang.org/dist/${name}.tar.xz" \
        && echo "${pin#*:}  /tmp/${name}.tar.xz" | sha256sum -c --quiet \
        && tar -xJf "/tmp/${name}.tar.xz" -C /tmp \
        && "/tmp/${name}/install.sh" --prefix=/opt/rust --disable-ldconfig >/dev/null \
        && rm -rf "/tmp/${name}" "/tmp/${name}.tar.xz" || exit 1; \
    done \
    && /opt/rust/bin/cargo --version
# PYO3_*: set here, they are what setuptools-rust passes too (it keeps set values), and
# PyO3's build scripts rerun when they differ.
ENV PATH=/opt/rust/bin:${PATH} \
    CARGO_HOME=/opt/cargo \
    CARGO_TARGET_DIR=/opt/native-target \
    PYO3_PYTHON=/opt/orchestrator/bin/python3 \
    PYO3_BUILD_EXTENSION_MODULE=1
COPY operator/native /src/operator/native
# The command setuptools-rust runs cargo with in the `build` stage's pip install (PyO3
# binding, release profile, --locked), so that cargo finds every crate there already
# built; a difference costs a recompile, never a wrong result. `cargo fetch`: every crate
# of the lock file, which setuptools-rust's `cargo metadata` reads there (even those this
# platform does not build).
RUN python3 -m venv /opt/orchestrator \
    && cargo fetch --locked --manifest-path /src/operator/native/Cargo.toml \
    && cargo rustc --lib --manifest-path /src/operator/native/Cargo.toml --release \
        --features pyo3/extension-module --locked --crate-type cdylib

FROM native AS build
ARG SOURCE_DATE_EPOCH
ARG PIP_CERT
ARG CARGO_HTTP_CAINFO
COPY --from=python /opt/orchestrator /opt/orchestrator
COPY pyproject.toml README.md /src/
COPY operator /src/operator
# The import proves the optional native core was built, not skipped. `pip check`: the
# dependencies installed in the `python` stage satisfy the package's. /pkg: the files this
# install added (the package's RECORD), at their paths, for the final stage's last layer.
RUN /opt/orchestrator/bin/pip install --no-cache-dir --no-deps /src \
    && /opt/orchestrator/bin/pip check \
    && /opt/orchestrator/bin/python -c "import continue_orchestrator.ledger._native" \
    && /opt/orchestrator/bin/python -c 'import importlib.metadata as m; print("\n".join(str(f.locate().resolve()) for f in m.files("continue-orchestrator")))' \
        > /tmp/installed \
    && tar -cf /tmp/pkg.tar --files-from=/tmp/installed \
    && mkdir /pkg && tar -xf /tmp/pkg.tar -C /pkg && rm /tmp/pkg.tar /tmp/installed \
    && test -x /pkg/opt/orchestrator/bin/orchestrator

FROM ${BASE_IMAGE}
ARG SOURCE_DATE_EPOCH
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 git ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log /var/log/alternatives.log \
        /var/cache/ldconfig/aux-cache /var/cache/debconf/*-old /var/lib/dpkg/*-old \
    && groupadd --gid 65532 orchestrator \
    && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin orchestrator
# The venv: its dependencies (rebuilt when pyproject.toml changes), then this package.
COPY --from=python /opt/orchestrator /opt/orchestrator
COPY --from=build /pkg/ /

# HOME is /tmp: the chart mounts an empty emptyDir there; the root filesystem is read-only.
ENV HOME=/tmp \
    TZ=UTC \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    PATH=/opt/orchestrator/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
WORKDIR /tmp
# The chart's Deployments set command: [orchestrator] and args: [operator|gateway, ...].
ENTRYPOINT ["/usr/bin/tini", "--", "orchestrator"]
CMD ["--help"]
