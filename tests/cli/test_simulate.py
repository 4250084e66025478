"""`kubevisor simulate` on the example files in deploy/examples/placement."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kubevisor.cli import simulate

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "placement"


def run(capsys: pytest.CaptureFixture[str], *extra: str, example: str = "") -> tuple[int, str]:
    """Simulate `{example}hosts.yaml` with `{example}vms.yaml`."""
    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "simulate",
            "--hosts",
            str(EXAMPLES / f"{example}hosts.yaml"),
            "--vms",
            str(EXAMPLES / f"{example}vms.yaml"),
            *extra,
        ]
    )
    code = args.func(args)
    return code, capsys.readouterr().out


def test_examples_print_every_decision_and_utilisation(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys)
    lines = out.splitlines()
    assert lines[0] == "4 hosts, 1 VMs already bound, 12 to place"
    assert code == 1  # some VMs are unschedulable, on purpose
    decisions = {
        line.split(" -> ", 1)[0]: line.split(" -> ", 1)[1]
        for line in lines
        if " -> " in line and line.startswith("demo/")
    }
    assert len(decisions) == 12
    db_hosts = [decisions[f"demo/db-{i}"].split()[0] for i in (0, 1, 3)]
    assert sorted(db_hosts) == ["hv-a", "hv-b", "hv-c"]
    assert decisions["demo/db-2"] == (
        'Unschedulable: 0/4 hosts fit: 2 already run 1 of anti-affinity group "demo/db" '
        "(maxPerHost 1), 1 insufficient dedicated CPUs on any NUMA cell "
        "(need 4, best has 2 free on one cell), 1 unschedulable"
    )
    assert "emulator" in decisions["demo/db-1"]
    assert decisions["demo/hugepages"].startswith("hv-c")
    assert "hugepages 1024x2048KiB" in decisions["demo/hugepages"]
    wide = decisions["demo/numa-wide"]
    assert "guest cell 0 -> host cell" in wide and "guest cell 1 -> host cell" in wide
    assert decisions["demo/zone-a"] == "hv-a"
    assert decisions["demo/too-big"].startswith(
        "Unschedulable: 0/4 hosts fit: 3 insufficient memory (need 60Gi"
    )
    assert decisions["demo/from-image"] == "hv-a  (has 1 of 1 images cached)"
    assert decisions["demo/restarted"] == "hv-a  (has the VM's shared storage nfs-a)"
    assert any(line.startswith("hv-d (not schedulable)") for line in lines)
    assert lines[-5].split()[:2] == ["HOST", "VMS"]


def test_ratio_flag_changes_the_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    _, out = run(capsys, "--memory-ratio", "1.5")
    assert "demo/too-big -> hv-" in out


def test_disk_weigher_multipliers_change_the_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    _, out = run(
        capsys,
        "--weigher-multiplier",
        "image_locality=0",
        "--weigher-multiplier",
        "shared_storage=0",
    )
    assert "demo/from-image -> hv-b  (has 0 of 1 images cached)" in out
    assert "demo/restarted -> hv-c  (lacks the VM's shared storage nfs-a)" in out


def test_unknown_weigher_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(capsys, "--weigher-multiplier", "images=2")
    assert exited.value.code == 2
    assert "--weigher-multiplier: invalid multiplier value: 'images=2'" in capsys.readouterr().err


def test_mixed_cluster_places_each_vm_on_a_type_that_runs_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run(capsys, example="mixed-")
    decisions = dict(line.split(" -> ", 1) for line in out.splitlines() if " -> " in line)
    assert code == 1  # the last two cannot be placed, on purpose
    assert decisions["demo/container"] == "ct-a"
    assert decisions["demo/vsphere-app"] == "vc-a"
    assert decisions["demo/with-disk"] == "kvm-a"
    assert decisions["demo/any-qemu"] == "kvm-a"
    assert decisions["demo/uefi-container"] == (
        "Unschedulable: 0/3 hosts fit: 2 hypervisor type is not lxc, "
        "1 lxc has no UEFI firmware (spec.firmware)"
    )
    assert (
        "1 lxc has no dedicated (pinned) vCPUs (spec.cpu.policy), block-device disks "
        "(spec.disks) or guest kernel, which a VM without spec.container boots"
        in (decisions["demo/pinned"])
    )


def test_a_host_reserving_more_memory_than_it_has_is_warned_about(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    hosts = (EXAMPLES / "hosts.yaml").read_text().replace("memory: 1Gi", "memory: 80Gi", 1)
    (tmp_path / "hosts.yaml").write_text(hosts)
    (tmp_path / "vms.yaml").write_text((EXAMPLES / "vms.yaml").read_text())
    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(
        ["simulate", "--hosts", str(tmp_path / "hosts.yaml"), "--vms", str(tmp_path / "vms.yaml")]
    )
    args.func(args)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "  warning: host hv-a reserves 80Gi of its 64Gi memory (spec.reserved): it offers none"
    )
    row = next(line for line in lines if line.startswith("hv-a "))
    assert "/0Mi" in row and "-" not in row.split()[4]
