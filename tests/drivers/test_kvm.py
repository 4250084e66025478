"""KVM or TCG: what the probe finds on the device and in the CPU flags, and why it says no."""

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


def test_the_probe_says_why_kvm_is_not_used(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(NESTED)
    (tmp_path / "kvm").write_text("")
    missing = kvm.probe(device=tmp_path / "missing", cpuinfo=tmp_path / "cpuinfo")
    assert missing.nested
    assert (
        missing.problem() == f"{tmp_path / 'missing'} cannot be opened (No such file or directory)"
    )
    not_kvm = kvm.probe(device=tmp_path / "kvm", cpuinfo=tmp_path / "cpuinfo")
    assert (not_kvm.problem() or "").startswith(f"{tmp_path / 'kvm'} is not a KVM device")


@pytest.mark.parametrize(
    ("probe", "trust_nested", "problem"),
    [
        pytest.param(kvm.Probe(None, nested=False), False, None, id="bare-metal"),
        pytest.param(kvm.Probe(None, nested=True), False, "nested KVM", id="nested"),
        pytest.param(kvm.Probe(None, nested=True), True, None, id="nested-trusted"),
        pytest.param(kvm.Probe("broken", nested=True), True, "broken", id="device-first"),
    ],
)
def test_problem(probe: kvm.Probe, trust_nested: bool, problem: str | None) -> None:
    found = probe.problem(trust_nested=trust_nested)
    assert found is None if problem is None else problem in (found or "")
