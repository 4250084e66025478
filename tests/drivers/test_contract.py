"""Every driver behaves the same: the in-memory fake, libvirt's test:///default and the
vSphere driver on vcsim.

Agent tests trust FakeHypervisor to stand in for LibvirtHypervisor; this table is why.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from drivers.domains import events_until
from kubevisor.drivers import base, fake
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.drivers.vsphere import VsphereHypervisor
from kubevisor.testbed.vcsim import Vcsim

S = base.DomainState
E = base.EventKind

DRIVERS: dict[str, Callable[[], base.Hypervisor]] = {
    "fake": fake.FakeHypervisor,
    "libvirt-test": lambda: LibvirtHypervisor("test:///default"),
    "vsphere-vcsim": lambda: pytest.fail("bound by the vsphere_on_vcsim fixture"),
}


def vsphere_on(sim: Vcsim) -> VsphereHypervisor:
    return VsphereHypervisor(
        sim.host_uri("DC0_C0_H0"),
        username=sim.username,
        password=sim.password,
        verify_tls=False,
        poll_interval=0.2,
    )


@pytest.fixture(autouse=True)
def vsphere_on_vcsim(request: pytest.FixtureRequest) -> Iterator[None]:
    """The vSphere driver needs the session's vcsim: started only for its parameters."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("driver_name") != "vsphere-vcsim":
        yield
        return
    sim = request.getfixturevalue("vcsim_server")
    DRIVERS["vsphere-vcsim"] = lambda: vsphere_on(sim)
    yield


def domain_xml(name: str, uuid: str) -> str:
    domain = ET.Element("domain", type="test")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "uuid").text = uuid
    ET.SubElement(domain, "memory", unit="MiB").text = "64"
    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type").text = "hvm"
    return ET.tostring(domain, encoding="unicode")


def run(
    driver_name: str, scenario: Callable[[base.Hypervisor, str], Coroutine[Any, Any, None]]
) -> None:
    """Run `scenario(driver, uuid)` with a defined domain that is undefined afterwards."""

    async def main() -> None:
        driver = DRIVERS[driver_name]()
        await driver.connect()
        uuid = str(uuidlib.uuid4())
        try:
            await driver.define(domain_xml(f"contract-{uuid[:8]}", uuid))
            await scenario(driver, uuid)
        finally:
            await driver.undefine(uuid)
            await driver.close()

    asyncio.run(main())


drivers = pytest.mark.parametrize(
    "driver_name",
    [pytest.param(name, marks=[pytest.mark.vcsim] if "vcsim" in name else []) for name in DRIVERS],
)

# (setup operations, operation) -> state, reason and the lifecycle event it produces.
TRANSITIONS = [
    pytest.param([], "start", S.RUNNING, "booted", (E.STARTED, "booted"), id="start-boots"),
    pytest.param(["start"], "suspend", S.PAUSED, "user", (E.SUSPENDED, "paused"), id="suspend"),
    pytest.param(
        ["start", "suspend"],
        "resume",
        S.RUNNING,
        "unpaused",
        (E.RESUMED, "unpaused"),
        id="resume-unpauses",
    ),
    pytest.param(
        ["start"], "shutdown", S.SHUTOFF, "shutdown", (E.STOPPED, "shutdown"), id="shutdown"
    ),
    pytest.param(
        ["start"], "destroy", S.SHUTOFF, "destroyed", (E.STOPPED, "destroyed"), id="destroy"
    ),
    pytest.param(
        ["start", "suspend"],
        "destroy",
        S.SHUTOFF,
        "destroyed",
        (E.STOPPED, "destroyed"),
        id="destroy-paused",
    ),
]


async def act(driver: base.Hypervisor, operation: str, uuid: str) -> None:
    if operation == "shutdown":
        await driver.shutdown(uuid, timeout=5)
    else:
        await getattr(driver, operation)(uuid)


@drivers
@pytest.mark.parametrize(("setup", "operation", "state", "reason", "event"), TRANSITIONS)
def test_operation_changes_state_and_emits_event(
    driver_name: str,
    setup: list[str],
    operation: str,
    state: base.DomainState,
    reason: str,
    event: tuple[base.EventKind, str],
) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        for step in setup:
            await act(driver, step, uuid)
        events = driver.events()
        await act(driver, operation, uuid)
        info = await driver.state(uuid)
        assert (info.state, info.reason) == (state, reason)
        await events_until(events, uuid, *event, timeout=5)

    run(driver_name, scenario)


NO_OPS = [
    pytest.param(["start"], "start", S.RUNNING, id="start-running"),
    pytest.param([], "destroy", S.SHUTOFF, id="destroy-shutoff"),
    pytest.param(["start", "suspend"], "suspend", S.PAUSED, id="suspend-paused"),
    pytest.param(["start"], "resume", S.RUNNING, id="resume-running"),
]


@drivers
@pytest.mark.parametrize(("setup", "operation", "state"), NO_OPS)
def test_repeating_an_operation_is_a_no_op(
    driver_name: str, setup: list[str], operation: str, state: base.DomainState
) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        for step in setup:
            await act(driver, step, uuid)
        await act(driver, operation, uuid)
        assert (await driver.state(uuid)).state is state

    run(driver_name, scenario)


@pytest.mark.parametrize(
    "driver_name",
    # libvirt's test driver refuses VIR_DOMAIN_START_PAUSED ("unsupported flags"): the
    # libvirt driver starts real QEMU domains paused in the cold migration e2e.
    [
        pytest.param(name, marks=[pytest.mark.vcsim] if "vcsim" in name else [])
        for name in DRIVERS
        if name != "libvirt-test"
    ],
)
def test_start_paused_runs_no_guest_instruction(driver_name: str) -> None:
    # A cold migration moves a domain started so (core.coldmigration); vSphere cannot.
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        if driver_name.startswith("vsphere"):
            with pytest.raises(base.PermanentError, match="paused"):
                await driver.start(uuid, paused=True)
            return
        await driver.start(uuid, paused=True)
        assert (await driver.state(uuid)).state is S.PAUSED
        await driver.resume(uuid)
        assert (await driver.state(uuid)).state is S.RUNNING
        await driver.destroy(uuid)

    run(driver_name, scenario)


@drivers
def test_shutdown_of_a_shutoff_domain_says_already_off(driver_name: str) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        assert await driver.shutdown(uuid, timeout=1) is base.ShutdownOutcome.ALREADY_OFF

    run(driver_name, scenario)


@drivers
def test_resume_of_a_shutoff_domain_is_retryable(driver_name: str) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        with pytest.raises(base.RetryableError):
            await driver.resume(uuid)

    run(driver_name, scenario)


@drivers
def test_define_lists_and_undefine_removes(driver_name: str) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        listed = {info.uuid: info for info in await driver.list_domains()}
        assert listed[uuid].state is S.SHUTOFF
        assert listed[uuid].persistent
        await driver.start(uuid)
        events = driver.events()
        await driver.undefine(uuid)
        assert uuid not in {info.uuid for info in await driver.list_domains()}
        kinds = [event.kind for event in await events_until(events, uuid, E.UNDEFINED, timeout=5)]
        assert kinds[-2:] == [E.STOPPED, E.UNDEFINED]
        with pytest.raises(base.DomainNotFound):
            await driver.state(uuid)
        await driver.undefine(uuid)  # already gone: a no-op

    run(driver_name, scenario)


@drivers
def test_redefining_keeps_the_domain_and_emits_updated(driver_name: str) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        name = (await driver.state(uuid)).name
        events = driver.events()
        info = await driver.define(domain_xml(name, uuid))
        assert info.uuid == uuid
        await events_until(events, uuid, E.DEFINED, "updated", timeout=5)

    run(driver_name, scenario)


@drivers
def test_invalid_xml_is_permanent(driver_name: str) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        with pytest.raises(base.PermanentError):
            await driver.define("<domain type='test'><name>broken</name")

    run(driver_name, scenario)


@drivers
def test_unknown_domain_is_not_found(driver_name: str) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        with pytest.raises(base.DomainNotFound):
            await driver.start(str(uuidlib.uuid4()))

    run(driver_name, scenario)


@drivers
def test_domain_xml_names_the_domain(driver_name: str) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        root = ET.fromstring(await driver.domain_xml(uuid))
        assert root.findtext("uuid") == uuid

    run(driver_name, scenario)


@drivers
def test_domain_stats_list_every_domain_in_its_state(driver_name: str) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        await driver.start(uuid)
        found = {stats.uuid: stats for stats in await driver.domain_stats()}
        if driver_name == "vsphere-vcsim":
            assert found == {}  # the vSphere driver reports no per-VM usage
            return
        assert found[uuid].state is S.RUNNING
        assert found[uuid].name == (await driver.state(uuid)).name

    run(driver_name, scenario)


# What `domain_diagnostics` of a running domain has: domstats (libvirt's test driver
# reports the state group, 1 = running), and a QEMU log nowhere (none has one: the fake
# keeps none, test:/// has no log directory, vSphere keeps vmware.log in vCenter).
DIAGNOSTICS: dict[str, str | None] = {
    "fake": "state.state=running",
    "libvirt-test": "state.state=1",
    "vsphere-vcsim": None,
}


@drivers
def test_domain_diagnostics_say_what_is_missing_and_why(driver_name: str) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        await driver.start(uuid)
        found = await driver.domain_diagnostics(uuid, lines=10)
        expected = DIAGNOSTICS[driver_name]
        if expected is None:
            assert found.domstats is None and "domstats" in found.missing
        else:
            assert found.domstats is not None and expected in found.domstats.splitlines()
        assert found.qemu_log is None and found.missing["qemu.log"]
        with pytest.raises(base.DomainNotFound):
            await driver.domain_diagnostics(str(uuidlib.uuid4()), lines=10)

    run(driver_name, scenario)


# What opening the console of a defined domain that does not run raises: a driver with
# consoles says it is busy (not running), one without says it has none.
CONSOLE_OF_A_STOPPED_DOMAIN: dict[str, type[base.HypervisorError]] = {
    "fake": base.ConsoleBusy,
    "libvirt-test": base.ConsoleBusy,
    "vsphere-vcsim": base.ConsoleUnsupported,
}


@drivers
def test_console_of_a_stopped_or_unknown_domain(driver_name: str) -> None:
    async def scenario(driver: base.Hypervisor, uuid: str) -> None:
        expected = CONSOLE_OF_A_STOPPED_DOMAIN[driver_name]
        with pytest.raises(expected):
            await driver.open_console(uuid)
        if expected is base.ConsoleBusy:
            with pytest.raises(base.DomainNotFound):
                await driver.open_console(str(uuidlib.uuid4()))

    run(driver_name, scenario)


@drivers
def test_calls_before_connect_are_retryable(driver_name: str) -> None:
    async def main() -> None:
        driver = DRIVERS[driver_name]()
        with pytest.raises(base.RetryableError):
            await driver.list_domains()
        await driver.close()

    asyncio.run(main())


@drivers
def test_close_ends_event_iterators(driver_name: str) -> None:
    async def main() -> None:
        driver = DRIVERS[driver_name]()
        await driver.connect()
        events = driver.events()
        await driver.close()
        remaining = [event async for event in events]
        assert all(isinstance(event, base.ConnectionEvent) for event in remaining)

    asyncio.run(main())
