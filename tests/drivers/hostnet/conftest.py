"""The `lab` fixture: namespaces for two hosts, their underlay and guests (see lab.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.hostnet.lab import Lab, missing_prerequisites
from harness import require


@pytest.fixture
def lab() -> Iterator[Lab]:
    missing = missing_prerequisites()
    require(
        not missing,
        what=f"network namespaces with dnsmasq and nftables ({', '.join(missing)})",
        how="run as root after hack/setup.sh (iproute2, nftables, dnsmasq-base, busybox-static)",
    )
    # dnsmasq re-reads its hosts file as its own user: the state dir must be reachable.
    state = Path(tempfile.mkdtemp(prefix="kubevisor-hostnet-"))
    state.chmod(0o755)
    world = Lab(prefix=f"kvn{os.getpid() % 10000}-", state=state)
    try:
        world.build()
        yield world
    finally:
        world.remove()
        shutil.rmtree(state, ignore_errors=True)
