"""The agent's command line: the image cache's eviction settings, the destinations image
downloads may reach, the driver by URI and its migration TLS, the domain type."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevisor.agent import main
from kubevisor.drivers import kvm
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.drivers.vsphere import VsphereHypervisor


def test_eviction_defaults_are_50gi_and_a_day() -> None:
    args = main.parse_args(["--host", "h"])
    assert args.image_cache_max_size == 50 << 30
    assert args.image_cache_max_unused == 86400.0


@pytest.mark.parametrize(
    ("flags", "size", "unused"),
    [
        pytest.param(["--image-cache-max-size", "10Gi"], 10 << 30, 86400.0, id="size-in-gi"),
        pytest.param(["--image-cache-max-size", "500M"], 500_000_000, 86400.0, id="decimal"),
        pytest.param(["--image-cache-max-unused", "3600"], 50 << 30, 3600.0, id="seconds"),
        pytest.param(["--image-cache-max-unused", "90m"], 50 << 30, 5400.0, id="minutes"),
        pytest.param(["--image-cache-max-unused", "7d"], 50 << 30, 7 * 86400.0, id="days"),
        pytest.param(["--image-cache-max-unused", "0"], 50 << 30, 0.0, id="evict-at-once"),
    ],
)
def test_eviction_flags(flags: list[str], size: int, unused: float) -> None:
    args = main.parse_args(["--host", "h", *flags])
    assert (args.image_cache_max_size, args.image_cache_max_unused) == (size, unused)


def test_image_sources_are_refused_by_default_and_allowed_by_list() -> None:
    assert main.parse_args(["--host", "h"]).image_source_allow == []
    args = main.parse_args(
        ["--host", "h", "--image-source-allow", "127.0.0.0/8,::1", "--image-source-allow=mirror"]
    )
    assert args.image_source_allow == ["127.0.0.0/8", "::1", "mirror"]


def test_an_allow_list_entry_that_is_neither_network_nor_host_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main.parse_args(["--host", "h", "--image-source-allow", "10.0.0.0/8,10.0.0.0/99"])
    assert "'10.0.0.0/99' is neither a network" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--image-cache-max-size", "lots"], id="size-not-a-quantity"),
        pytest.param(["--image-cache-max-size", "0"], id="size-zero"),
        pytest.param(["--image-cache-max-unused", "1w"], id="unknown-unit"),
        pytest.param(["--image-cache-max-unused", "-5m"], id="negative"),
        pytest.param(["--image-cache-max-unused", "nan"], id="nan"),
        pytest.param(["--image-cache-max-unused", ""], id="empty"),
    ],
)
def test_bad_eviction_flags_are_refused(flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        main.parse_args(["--host", "h", *flags])


def test_the_uri_scheme_picks_the_driver(tmp_path: Path) -> None:
    (tmp_path / "username").write_text("administrator@vsphere.local\n")
    (tmp_path / "password").write_text("secret\n")
    vsphere = main.hypervisor_for(
        main.parse_args(
            [
                "--host",
                "esx-1",
                "--libvirt-uri",
                "vsphere://vc.example/esx-1.example",
                "--vsphere-credentials",
                str(tmp_path),
            ]
        )
    )
    assert isinstance(vsphere, VsphereHypervisor)
    assert vsphere.uri == "vsphere://vc.example/esx-1.example"
    libvirt = main.hypervisor_for(main.parse_args(["--host", "h", "--libvirt-uri", "lxc:///"]))
    assert isinstance(libvirt, LibvirtHypervisor)


def test_migration_tls_reaches_the_libvirt_driver_and_is_off_by_default(tmp_path: Path) -> None:
    plain = main.hypervisor_for(main.parse_args(["--host", "h"]))
    assert isinstance(plain, LibvirtHypervisor) and plain.migration_tls is None
    args = main.parse_args(["--host", "h", "--migration-tls-dir", str(tmp_path)])
    encrypted = main.hypervisor_for(args)
    assert isinstance(encrypted, LibvirtHypervisor) and encrypted.migration_tls == tmp_path


def test_migration_tls_is_refused_for_vsphere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main.parse_args(
            [
                "--host",
                "esx-1",
                "--libvirt-uri",
                "vsphere://vc.example/esx-1",
                "--vsphere-credentials",
                str(tmp_path),
                "--migration-tls-dir",
                str(tmp_path),
            ]
        )
    assert "vCenter encrypts vMotion" in capsys.readouterr().err


def test_vsphere_without_credentials_is_refused() -> None:
    with pytest.raises(SystemExit):
        main.parse_args(["--host", "h", "--libvirt-uri", "vsphere://vc.example/esx-1"])


WORKING_KVM = kvm.Probe(device_problem=None, nested=False)
NESTED = kvm.Probe(device_problem=None, nested=True)
NO_DEVICE = kvm.Probe(
    device_problem="/dev/kvm cannot be opened (No such file or directory)", nested=False
)


@pytest.mark.parametrize(
    ("choice", "offered", "probe", "expected", "because"),
    [
        pytest.param("auto", ("kvm", "qemu"), WORKING_KVM, "kvm", None, id="working-kvm"),
        pytest.param(
            "auto", ("kvm", "qemu"), NO_DEVICE, "qemu", "cannot be opened", id="broken-dev-kvm"
        ),
        pytest.param(
            "auto", ("kvm", "qemu"), NESTED, "qemu", "itself a virtual machine", id="nested"
        ),
        pytest.param("kvm", ("kvm", "qemu"), NESTED, "kvm", None, id="kvm-insisted-on"),
        pytest.param("auto", ("qemu",), NO_DEVICE, "qemu", None, id="tcg-only-host"),
        pytest.param("auto", ("lxc",), WORKING_KVM, "lxc", None, id="lxc-connection"),
        pytest.param("auto", (), WORKING_KVM, "test", None, id="test-driver"),
        pytest.param("lxc", ("qemu",), WORKING_KVM, "lxc", None, id="explicit"),
    ],
)
def test_domain_type(
    choice: str, offered: tuple[str, ...], probe: kvm.Probe, expected: str, because: str | None
) -> None:
    """KVM only where /dev/kvm works and the host is not nested; a fallback to TCG from a
    host that offers KVM says why (the HypervisorHost's status.hypervisor.message)."""
    chosen = main.domain_type(choice, offered=offered, kvm=probe)
    assert chosen.type == expected
    if because is None:
        assert chosen.message is None
    else:
        assert chosen.message is not None and because in chosen.message
        assert "TCG" in chosen.message


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param([], None, id="unknown-without-either"),
        pytest.param(["--qemu-conf", "{conf}"], {"cpu", "memory"}, id="from-qemu-conf"),
        pytest.param(
            ["--qemu-conf", "{conf}", "--cgroup-controllers", "cpuset"],
            {"cpuset"},
            id="the-flag-wins",
        ),
        pytest.param(
            ["--qemu-conf", "{conf}", "--cgroup-controllers", ""], set(), id="flag-says-none"
        ),
    ],
)
def test_cgroup_controllers_from_the_flag_else_qemu_conf(
    tmp_path: Path, flags: list[str], expected: set[str] | None
) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('cgroup_controllers = [ "cpu", "memory" ]\n')
    args = main.parse_args(["--host", "h", *(f.format(conf=conf) for f in flags)])
    assert main.cgroup_controllers(args) == expected


def test_an_unreadable_qemu_conf_stops_the_agent_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a silent "unknown" on every host: the mount or the flag is wrong."""
    missing = tmp_path / "qemu.conf"
    assert main.main(["--host", "h", "--qemu-conf", str(missing)]) == 2
    error = capsys.readouterr().err
    assert f"--qemu-conf {missing}: No such file or directory" in error
    missing.write_text("seccomp_sandbox = 0\n")
    assert main.unreadable(missing) is None
    assert main.unreadable(None) is None


@pytest.mark.parametrize(
    ("check", "offered", "probe", "expected", "because"),
    [
        pytest.param(
            "device", ("kvm", "qemu"), NO_DEVICE, "qemu", "cannot be opened", id="device-default"
        ),
        pytest.param("libvirt", ("kvm", "qemu"), NO_DEVICE, "kvm", None, id="libvirt-offers-kvm"),
        pytest.param("libvirt", ("qemu",), NO_DEVICE, "qemu", None, id="libvirt-offers-tcg-only"),
        pytest.param(
            "libvirt", ("kvm", "qemu"), NESTED, "qemu", "itself a virtual machine", id="nested"
        ),
    ],
)
def test_kvm_check_for_an_agent_that_cannot_open_the_device(
    check: str, offered: tuple[str, ...], probe: kvm.Probe, expected: str, because: str | None
) -> None:
    """The DaemonSet's agent is unprivileged: its pod cannot open /dev/kvm, which the
    host's libvirtd uses. With --kvm-check libvirt, libvirt's offer stands for the device."""
    assert main.parse_args(["--host", "h"]).kvm_check == "device"
    chosen = main.domain_type("auto", offered=offered, kvm=main.kvm_facts(check, probe))
    assert chosen.type == expected
    assert (chosen.message is None) if because is None else (because in (chosen.message or ""))


@pytest.mark.parametrize(
    ("flags", "deadline"),
    [
        pytest.param([], 60, id="on-by-default-60s"),
        pytest.param(["--self-fence-after", "0"], 0, id="0-turns-it-off"),
        pytest.param(
            ["--lease-duration", "10", "--self-fence-after", "5"], 5, id="two-short-renewals"
        ),
    ],
)
def test_self_fence_flag(flags: list[str], deadline: int) -> None:
    assert main.parse_args(["--host", "h", *flags]).self_fence_after == deadline


def test_a_self_fence_deadline_shorter_than_two_renewals_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main.parse_args(["--host", "h", "--self-fence-after", "15"])
    assert "use at least 20s" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "env", "endpoint"),
    [
        pytest.param([], {"POD_IP": "10.1.2.3"}, "http://10.1.2.3:9091/metrics", id="pod-ip"),
        pytest.param(
            ["--metrics-port", "9200", "--metrics-advertise", "http://127.0.0.1:9200/metrics"],
            {"POD_IP": "10.1.2.3"},
            "http://127.0.0.1:9200/metrics",
            id="advertised",
        ),
        pytest.param(["--metrics-port", "0"], {"POD_IP": "10.1.2.3"}, None, id="no-metrics"),
    ],
)
def test_the_metrics_endpoint_the_agent_advertises(
    flags: list[str], env: dict[str, str], endpoint: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main.metrics_endpoint(main.parse_args(["--host", "h", *flags])) == endpoint
