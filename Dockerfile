# syntax=docker/dockerfile:1
#
# kubevisor's two images, from one build:
#
#   docker build --target controller -t ghcr.io/kubevisor/kubevisor-controller:0.1.0 .
#   docker build --target agent      -t ghcr.io/kubevisor/kubevisor-agent:0.1.0 .
#
# Stages: `wheels` compiles every pinned dependency (libvirt-python has no wheels on PyPI,
# so it needs gcc and libvirt-dev) and kubevisor itself into wheels; `runtime` is the slim
# base both images share; `controller` and `agent` install only wheels, so no compiler,
# header or pip cache reaches them; each creates its venv and removes pip from it in the
# layer that installs, so pip is not shipped either. Needs BuildKit (the default builder
# since Docker 23) or buildah. Without Docker or a registry, hack/images/build.sh builds
# both with buildah on a base image made from Debian packages (PYTHON_IMAGE below, a
# bookworm python3.11 of mmdebstrap's); tests/deploy/test_images_built.py runs them and
# tests/deploy/test_image.py reads this file for its stages, users and entrypoints.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
# A CA bundle for pip when a TLS-intercepting proxy stands between the build and PyPI
# (hack/images/build.sh mounts the host's); unset, pip trusts its own. This stage only.
ARG PIP_CERT
# A base with Debian's own python3 (hack/images/base.sh) has no headers: python3-dev then.
RUN headers=$(python -c 'import os, sysconfig; print(os.path.exists(sysconfig.get_path("include") + "/Python.h"))') \
 && apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config libvirt-dev \
    $([ "$headers" = True ] || echo python3-dev) \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /build
ENV PATH=/build/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
# SOURCE_HASH (below): a content hash of the build's inputs, as a label; hack/images/build.sh
# sets it so that buildah's layer cache, which does not look into a RUN's bind mounts,
# reinstalls the wheels when they changed.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/kubevisor \
    PATH=/opt/kubevisor/bin:$PATH
RUN groupadd --system --gid 65532 kubevisor \
 && useradd --system --uid 65532 --gid kubevisor --home-dir /nonexistent --shell /usr/sbin/nologin kubevisor

# The controller places VMs and orchestrates migrations through the API server only: no
# libvirt library (libvirt-python's wheel is left out; importing kubevisor.drivers.libvirt
# here fails loudly), and it runs as an unprivileged user.
FROM runtime AS controller
ARG SOURCE_HASH=unknown
LABEL io.kubevisor.source-hash=$SOURCE_HASH
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python -m venv /opt/kubevisor \
 && pip install --no-cache-dir --no-deps $(ls /wheels/*.whl | grep -v '/libvirt_python-') \
 && pip uninstall --yes --quiet pip
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["kubevisor-controller"]
CMD ["--peering=kubevisor", "--liveness=http://0.0.0.0:8080/healthz"]

# The agent drives libvirtd over its UNIX socket: libvirt's client library, qemu-img for
# disk overlays and genisoimage for cloud-init seeds; dnsmasq (DHCP) and nft (port security)
# for the host side of kubevisor Networks. It runs as root beside the host's
# libvirtd (socket and /var/lib/kubevisor are root's) or beside a libvirtd container in
# the same pod; see docs/install.md.
FROM runtime AS agent
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 qemu-utils genisoimage \
    dnsmasq-base nftables \
 && rm -rf /var/lib/apt/lists/*
ARG SOURCE_HASH=unknown
LABEL io.kubevisor.source-hash=$SOURCE_HASH
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python -m venv /opt/kubevisor \
 && pip install --no-cache-dir --no-deps /wheels/*.whl \
 && pip uninstall --yes --quiet pip
USER 0:0
EXPOSE 9091
ENTRYPOINT ["kubevisor-agent"]
