"""testbed.vcsim: the simulator starts on a port of its own, serves the default inventory,
and stops; a binary that never says where it listens is reported with its log."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyVmomi import vim

from harness import require, vcsim_bin
from kubevisor.testbed import vcsim


@pytest.mark.vcsim
def test_start_serves_the_default_inventory_and_stop_ends_it(tmp_path: Path) -> None:
    bin_dir = vcsim_bin()
    require(bin_dir is not None, what="vcsim", how="build it with hack/vcsim/build.sh")
    assert bin_dir is not None
    sim = vcsim.start(bin_dir, log=tmp_path / "vcsim.log")
    try:
        with sim.session() as content:
            view = content.viewManager.CreateContainerView(
                content.rootFolder, [vim.HostSystem], True
            )
            names = sorted(host.name for host in view.view)
        assert names == ["DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2", "DC0_H0"]
        assert sim.host_uri("DC0_C0_H0") == f"vsphere://{sim.server}/DC0_C0_H0"
    finally:
        vcsim.stop(sim)
    assert sim.process.poll() is not None


def test_a_simulator_that_prints_no_url_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "vcsim"
    fake.write_text("#!/bin/sh\necho 'listen tcp: address already in use' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="printed no URL"):
        vcsim.start(tmp_path, log=tmp_path / "vcsim.log", timeout=10)
    assert "address already in use" in (tmp_path / "vcsim.log").read_text()
