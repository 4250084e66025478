"""The libvirt driver's pure parts, and its host facts from libvirt's test:///default."""

from __future__ import annotations

import asyncio
from pathlib import Path

import libvirt
import pytest

from kubevisor.drivers import base
from kubevisor.drivers.libvirt import LibvirtHypervisor, errors, facts


def libvirt_error(code: int, message: str = "boom") -> libvirt.libvirtError:
    error = libvirt.libvirtError(message)
    error.err = (code, 0, message, 2, None, None, None, 0, 0)
    return error


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        pytest.param(libvirt.VIR_ERR_NO_DOMAIN, base.DomainNotFound, id="no-domain-not-found"),
        pytest.param(libvirt.VIR_ERR_SYSTEM_ERROR, base.RetryableError, id="system-retryable"),
        pytest.param(libvirt.VIR_ERR_RPC, base.RetryableError, id="rpc-retryable"),
        pytest.param(libvirt.VIR_ERR_NO_CONNECT, base.RetryableError, id="no-connect-retryable"),
        pytest.param(
            libvirt.VIR_ERR_OPERATION_INVALID, base.RetryableError, id="state-race-retryable"
        ),
        pytest.param(libvirt.VIR_ERR_XML_ERROR, base.PermanentError, id="xml-permanent"),
        pytest.param(
            libvirt.VIR_ERR_CONFIG_UNSUPPORTED, base.PermanentError, id="config-permanent"
        ),
        pytest.param(libvirt.VIR_ERR_INVALID_ARG, base.PermanentError, id="invalid-arg-permanent"),
        pytest.param(libvirt.VIR_ERR_INTERNAL_ERROR, base.RetryableError, id="unlisted-retryable"),
    ],
)
def test_translate_error(code: int, kind: type[base.HypervisorError]) -> None:
    error = errors.translate_error(libvirt_error(code, "it broke"), doing="starting x")
    assert type(error) is kind
    assert error.code == code
    assert str(error) == "starting x: it broke"
    if isinstance(error, base.RetryableError):
        assert error.delay >= 0


def test_every_listed_error_code_exists_in_libvirt() -> None:
    assert [name for name in errors.ERROR_KINDS if not hasattr(libvirt, name)] == []


def assert_names_match(prefix: str, names: tuple[str, ...]) -> None:
    """names[i] is libvirt's constant {prefix}{NAME} == i; names newer than the installed
    libvirt may only come last."""
    values = [getattr(libvirt, f"{prefix}{name.upper()}", None) for name in names]
    known = values[: values.index(None)] if None in values else values
    assert known == list(range(len(known)))
    assert set(values[len(known) :]) <= {None}


@pytest.mark.parametrize("state", list(facts.STATE_REASONS), ids=lambda s: s.value)
def test_state_reason_names_match_libvirt(state: base.DomainState) -> None:
    assert getattr(libvirt, f"VIR_DOMAIN_{state.name}") == facts.STATES.index(state)
    assert_names_match(f"VIR_DOMAIN_{state.name}_", facts.STATE_REASONS[state])


@pytest.mark.parametrize("kind", list(facts.EVENT_DETAILS), ids=lambda k: k.value)
def test_event_detail_names_match_libvirt(kind: base.EventKind) -> None:
    assert getattr(libvirt, f"VIR_DOMAIN_EVENT_{kind.name}") == facts.EVENT_KINDS.index(kind)
    assert_names_match(f"VIR_DOMAIN_EVENT_{kind.name}_", facts.EVENT_DETAILS[kind])


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        pytest.param(1, 1, (base.DomainState.RUNNING, "booted"), id="running-booted"),
        pytest.param(5, 2, (base.DomainState.SHUTOFF, "destroyed"), id="shutoff-destroyed"),
        pytest.param(3, 99, (base.DomainState.PAUSED, "unknown-99"), id="future-reason"),
    ],
)
def test_domain_state(state: int, reason: int, expected: tuple[base.DomainState, str]) -> None:
    assert facts.domain_state(state, reason) == expected


@pytest.mark.parametrize(
    ("packed", "text"),
    [pytest.param(9000000, "9.0.0", id="libvirt"), pytest.param(7002022, "7.2.22", id="qemu")],
)
def test_version_string(packed: int, text: str) -> None:
    assert facts.version_string(packed) == text


QEMU_CAPABILITIES = """
<capabilities>
  <host>
    <uuid>0f2b5c1e-0000-4000-8000-00000000abcd</uuid>
    <cpu>
      <arch>x86_64</arch>
      <model>Skylake-Client-IBRS</model>
      <vendor>Intel</vendor>
      <feature name='vmx'/>
      <feature name='avx2'/>
      <pages unit='KiB' size='4'/>
      <pages unit='KiB' size='2048'/>
    </cpu>
    <topology>
      <cells num='2'>
        <cell id='0'>
          <memory unit='KiB'>8000000</memory>
          <pages unit='KiB' size='4'>2000000</pages>
          <pages unit='KiB' size='2048'>8</pages>
          <distances><sibling id='0' value='10'/><sibling id='1' value='21'/></distances>
          <cpus num='4'>
            <cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0,2'/>
            <cpu id='1' socket_id='0' die_id='0' core_id='1' siblings='1,3'/>
            <cpu id='2' socket_id='0' die_id='0' core_id='0' siblings='0,2'/>
            <cpu id='3' socket_id='0' die_id='0' core_id='1' siblings='1,3'/>
          </cpus>
        </cell>
        <cell id='1'>
          <memory unit='KiB'>8100000</memory>
          <pages unit='KiB' size='4'>2025000</pages>
          <pages unit='KiB' size='2048'>0</pages>
          <distances><sibling id='0' value='21'/><sibling id='1' value='10'/></distances>
          <cpus num='2'>
            <cpu id='4' socket_id='1' die_id='0' core_id='0' siblings='4-5'/>
            <cpu id='5' socket_id='1' die_id='0' core_id='0' siblings='4-5'/>
          </cpus>
        </cell>
      </cells>
    </topology>
  </host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'><domain type='qemu'/></arch>
  </guest>
</capabilities>
"""


def test_host_facts_from_qemu_capabilities() -> None:
    found = facts.host_facts_from(
        QEMU_CAPABILITIES,
        uri="qemu:///system",
        hostname="node-a",
        info=["x86_64", 15722, 6, 2600, 2, 2, 2, 1],
        hypervisor_type="QEMU",
        hypervisor_version=7002022,
        libvirt_version=9000000,
        free_memory={0: 4096 * 1024, 1: 2048 * 1024},
        free_pages={0: {4: 100, 2048: 6}},
    )
    assert (found.uuid, found.arch, found.cpus) == (
        "0f2b5c1e-0000-4000-8000-00000000abcd",
        "x86_64",
        6,
    )
    assert (found.cpu_model, found.cpu_vendor, found.cpu_features) == (
        "Skylake-Client-IBRS",
        "Intel",
        ("avx2", "vmx"),
    )
    assert found.memory_kib == 16100000
    assert found.domain_types == ("kvm", "qemu")
    assert (found.hypervisor_version, found.libvirt_version) == ("7.2.22", "9.0.0")
    cell0, cell1 = found.cells
    assert [cpu.siblings for cpu in cell0.cpus] == [(0, 2), (1, 3), (0, 2), (1, 3)]
    assert cell1.cpus[0].siblings == (4, 5)
    assert (cell0.free_memory_kib, cell1.free_memory_kib) == (4096, 2048)
    assert cell0.pages == (
        base.PageSize(size_kib=4, total=2000000, free=100),
        base.PageSize(size_kib=2048, total=8, free=6),
    )
    assert cell1.pages[1] == base.PageSize(size_kib=2048, total=0, free=None)
    assert cell0.distances == ((0, 10), (1, 21))


# `virsh domcapabilities --virttype qemu` of a testbed host (libvirt 9.0, QEMU 7.2, TCG).
TCG_DOMCAPS = Path(__file__).parent / "fixtures" / "domcapabilities-qemu-tcg.xml"


def test_usable_cpu_models_from_tcg_domain_capabilities() -> None:
    models = facts.usable_cpu_models_from(TCG_DOMCAPS.read_text())
    assert models == (
        "486",
        "Conroe",
        "Nehalem",
        "Opteron_G1",
        "Opteron_G2",
        "Penryn",
        "Westmere",
        "athlon",
        "core2duo",
        "coreduo",
        "kvm32",
        "kvm64",
        "n270",
        "pentium",
        "pentium2",
        "pentium3",
        "qemu32",
        "qemu64",
    )
    # Known to libvirt, but TCG lacks features they need: usable='no'.
    assert "Skylake-Client" not in models and "EPYC" not in models


@pytest.mark.parametrize(
    ("cpu", "models"),
    [
        pytest.param(
            "<mode name='custom' supported='yes'>"
            "<model usable='yes' vendor='Intel'>Nehalem</model>"
            "<model usable='unknown' vendor='Intel'>Haswell</model>"
            "<model usable='no' vendor='AMD'>EPYC</model>"
            "<model vendor='unknown'>qemu64</model>"
            "</mode>",
            ("Nehalem",),
            id="only-usable-yes",
        ),
        pytest.param("<mode name='custom' supported='no'/>", (), id="custom-models-not-supported"),
        pytest.param("<mode name='host-model' supported='yes'/>", (), id="no-custom-mode"),
    ],
)
def test_usable_cpu_models_from(cpu: str, models: tuple[str, ...]) -> None:
    xml = f"<domainCapabilities><cpu>{cpu}</cpu></domainCapabilities>"
    assert facts.usable_cpu_models_from(xml) == models


def test_host_facts_of_test_driver_show_its_fixed_two_cells() -> None:
    async def main() -> base.HostFacts:
        async with LibvirtHypervisor("test:///default") as hypervisor:
            return await hypervisor.host_facts()

    found = asyncio.run(main())
    assert found.hypervisor_type == "TEST"
    assert found.libvirt_version == facts.version_string(libvirt.getVersion())
    assert found.cpus == 16
    assert [cell.id for cell in found.cells] == [0, 1]
    assert [[cpu.id for cpu in cell.cpus] for cell in found.cells] == [
        list(range(8)),
        list(range(8, 16)),
    ]
    assert [cell.memory_kib for cell in found.cells] == [2097152, 4194304]
    assert found.memory_kib == 6291456
    assert [cpu.siblings for cpu in found.cells[1].cpus][:2] == [(8,), (9,)]
    assert {page.size_kib for page in found.cells[0].pages} == {4, 2048, 1048576}
    # The test driver has no domain capabilities: it cannot say which models are usable.
    assert found.usable_cpu_models == {}
