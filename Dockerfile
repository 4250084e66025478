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
# header or pip cache reaches them. Needs BuildKit (the default builder since Docker 23).
# Not built in kubevisor's CI (there is no Docker engine there); tests/deploy/test_image.py
# reads this file for its stages, users and entrypoints.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config libvirt-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.lock ./
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/kubevisor \
    PATH=/opt/kubevisor/bin:$PATH
RUN python -m venv /opt/kubevisor \
 && groupadd --system --gid 65532 kubevisor \
 && useradd --system --uid 65532 --gid kubevisor --home-dir /nonexistent --shell /usr/sbin/nologin kubevisor

# The controller places VMs and orchestrates migrations through the API server only: no
# libvirt library (libvirt-python's wheel is left out; importing kubevisor.drivers.libvirt
# here fails loudly), and it runs as an unprivileged user.
FROM runtime AS controller
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps $(ls /wheels/*.whl | grep -v '/libvirt_python-')
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
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/*.whl
USER 0:0
EXPOSE 9091
ENTRYPOINT ["kubevisor-agent"]
