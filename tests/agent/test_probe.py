"""Host facts the agent reads itself: KSM, overlay storage, firmware and vhost-net."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kubevisor.agent import probe
from kubevisor.core.domain import Ovmf


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"run": "1", "pages_shared": "12", "pages_sharing": "40"}, (True, 12, 40), id="running"
        ),
        pytest.param(
            {"run": "0", "pages_shared": "0", "pages_sharing": "0"}, (False, 0, 0), id="stopped"
        ),
        pytest.param({"run": "1"}, (True, None, None), id="counters-missing"),
    ],
)
def test_ksm(tmp_path: Path, files: dict[str, str], expected: tuple[object, ...]) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    found = probe.ksm(tmp_path)
    assert found is not None
    assert (found.running, found.pages_shared, found.pages_sharing) == expected


def test_no_ksm_in_the_kernel(tmp_path: Path) -> None:
    assert probe.ksm(tmp_path / "absent") is None


def test_storage_counts_real_overlay_blocks_and_virtual_sizes(tmp_path: Path) -> None:
    overlay = tmp_path / "vm" / "disk-data.qcow2"
    overlay.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(overlay), "1G"], check=True)
    found = probe.storage(disk_root=tmp_path, virtual_bytes=1024**3)
    assert found.provisioned == "1Gi"
    assert found.used is not None and found.used != "0"  # a thin overlay: a few KiB, not 1Gi
    assert found.capacity is not None and found.available is not None


def test_capabilities_follow_the_files_present(tmp_path: Path) -> None:
    code, vars_ = tmp_path / "code.fd", tmp_path / "vars.fd"
    code.write_bytes(b"")
    vars_.write_bytes(b"")
    ovmf = Ovmf(
        code=str(code),
        vars_template=str(vars_),
        secure_code=str(tmp_path / "missing"),
        secure_vars_template=str(vars_),
    )
    found = probe.capabilities(ovmf, vhost_net=tmp_path / "vhost-net")
    assert (found.uefi, found.secure_boot, found.vhost_net) == (True, False, False)
