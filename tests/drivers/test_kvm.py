"""KVM or TCG: the decision kvm_usable makes from the device and the CPU flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevisor.drivers import kvm

BARE = "processor\t: 0\nflags\t\t: fpu vme sse2 vmx\n"
NESTED = "processor\t: 0\nflags\t\t: fpu vme sse2 vmx hypervisor\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [pytest.param(BARE, False, id="bare-metal"), pytest.param(NESTED, True, id="nested")],
)
def test_nested(tmp_path: Path, cpuinfo: str, expected: bool) -> None:
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    assert kvm.nested(tmp_path / "cpuinfo") is expected


def test_missing_device_means_tcg(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(BARE)
    assert not kvm.kvm_usable(device=tmp_path / "kvm", cpuinfo=tmp_path / "cpuinfo")


def test_a_device_that_is_not_kvm_means_tcg(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(BARE)
    (tmp_path / "kvm").write_text("")
    assert not kvm.kvm_usable(device=tmp_path / "kvm", cpuinfo=tmp_path / "cpuinfo")


@pytest.mark.parametrize(
    ("cpuinfo", "trust_nested", "expected"),
    [
        pytest.param(BARE, False, True, id="bare-metal-uses-kvm"),
        pytest.param(NESTED, False, False, id="nested-uses-tcg"),
        pytest.param(NESTED, True, True, id="nested-trusted-uses-kvm"),
    ],
)
def test_real_device(tmp_path: Path, cpuinfo: str, trust_nested: bool, expected: bool) -> None:
    """Where /dev/kvm is missing or broken every case means TCG; where it works, the flags
    decide."""
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    device_works = kvm.kvm_usable(trust_nested=True)
    usable = kvm.kvm_usable(trust_nested=trust_nested, cpuinfo=tmp_path / "cpuinfo")
    assert usable is (expected and device_works)
