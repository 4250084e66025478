"""A small run of bench/scale.py: the controller process, a fleet of hollow hosts and the
real API server place every VM, a restarted controller places a new one, and deleting
everything frees every claim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO, controlplane_bin, require

pytestmark = pytest.mark.apiserver

VMS, STEADY, HOSTS = 50, 20, 5


def test_scale_bench_places_every_vm_and_frees_every_claim(tmp_path: Path) -> None:
    bin_dir = controlplane_bin()
    require(
        bin_dir is not None,
        what="the local kube-apiserver + etcd",
        how="build them with hack/controlplane/build.sh (or run `make test`)",
    )
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [
            *(sys.executable, str(REPO / "bench" / "scale.py")),
            *("--vms", str(VMS), "--steady", str(STEADY), "--interval", "0.05"),
            *("--hosts", str(HOSTS), "--timeout", "120", "--json", str(out)),
            *("--keep", str(tmp_path / "work")),
        ],
        env={**os.environ, "KUBEVISOR_CONTROLPLANE_BIN": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["burst"]["bound"] == VMS
    assert result["burst"]["running"] == VMS
    assert result["steady"]["running"] == STEADY
    restart = result["restart"]
    assert restart["ok"] and restart["host"].startswith("hollow-")
    assert restart["delete"]["left"] == 0
    assert restart["delete"]["hosts_counting_vms"] == 0
    # The API server counted the creates at least (one POST per VM).
    assert result["requests_per_vm"]["writes_by"]["POST virtualmachines"] >= 1.0
    assert result["fleet_mib_per_host"] > 0
