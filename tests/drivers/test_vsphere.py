"""The vSphere driver: its pure parts, then the driver against a real vcsim (the vSphere API
simulator of govmomi, started once per session by the `vcsim_server` fixture)."""

from __future__ import annotations

import asyncio
import ssl
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim, vmodl

from harness import require, vcsim_bin
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core import hypervisors
from kubevisor.core.domain import converter, identity
from kubevisor.core.domain.host import HostEnvironment
from kubevisor.core.hypervisors import Feature
from kubevisor.drivers import base
from kubevisor.drivers.vsphere import VsphereHypervisor, mapping
from kubevisor.testbed import vcsim
from kubevisor.testbed.vcsim import Vcsim

S = base.DomainState
E = base.EventKind

# --- pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "server", "host"),
    [
        pytest.param(
            "vsphere://vc.example:8989/DC0_C0_H0", "vc.example:8989", "DC0_C0_H0", id="port"
        ),
        pytest.param("vsphere://vc.example/esx%2001", "vc.example", "esx 01", id="quoted-host"),
    ],
)
def test_parse_uri(uri: str, server: str, host: str) -> None:
    location = mapping.parse_uri(uri)
    assert (location.server, location.host) == (server, host)
    assert mapping.parse_uri(location.uri) == location


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("qemu:///system", id="other-scheme"),
        pytest.param("vsphere://vc.example", id="no-host"),
        pytest.param("vsphere:///DC0_H0", id="no-vcenter"),
    ],
)
def test_parse_uri_refuses(uri: str) -> None:
    with pytest.raises(base.PermanentError, match="not a vSphere host URI"):
        mapping.parse_uri(uri)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        pytest.param(vmodl.fault.ManagedObjectNotFound(), base.DomainNotFound, id="gone"),
        pytest.param(vim.fault.InvalidLogin(), base.PermanentError, id="bad-login"),
        pytest.param(vim.fault.NotAuthenticated(), base.RetryableError, id="session-expired"),
        pytest.param(ConnectionRefusedError(), base.RetryableError, id="connection-refused"),
        pytest.param(ssl.SSLCertVerificationError(), base.PermanentError, id="untrusted-cert"),
        pytest.param(vim.fault.InvalidPowerState(), base.RetryableError, id="state-race"),
        pytest.param(vim.fault.MigrationFault(), base.PermanentError, id="vmotion-refused"),
        pytest.param(vmodl.fault.InvalidArgument(), base.PermanentError, id="invalid-argument"),
        pytest.param(vmodl.fault.SystemError(), base.RetryableError, id="unlisted-retryable"),
    ],
)
def test_translate_error(error: BaseException, kind: type[base.HypervisorError]) -> None:
    translated = mapping.translate_error(error, doing="starting x")
    assert type(translated) is kind
    assert str(translated).startswith(f"starting x: {type(error).__name__}")


@pytest.mark.parametrize(
    ("memory", "mib"),
    [
        pytest.param('<memory unit="KiB">131072</memory>', 128, id="kib"),
        pytest.param('<memory unit="GiB">1</memory>', 1024, id="gib"),
        pytest.param("<memory>132096</memory>", 132, id="default-kib-rounded-up-to-4-mib"),
    ],
)
def test_vm_config_reads_memory(memory: str, mib: int) -> None:
    xml = f"<domain><name>n</name><uuid>ABC</uuid>{memory}<vcpu>3</vcpu></domain>"
    assert mapping.vm_config(xml) == mapping.VmConfig(name="n", uuid="abc", memory_mib=mib, vcpus=3)


@pytest.mark.parametrize(
    "xml",
    [
        pytest.param("<domain><name>n</name", id="not-xml"),
        pytest.param("<domain><name>n</name><memory>1</memory></domain>", id="no-uuid"),
        pytest.param(
            "<domain><name>n</name><uuid>u</uuid><memory unit='pages'>1</memory></domain>",
            id="unknown-unit",
        ),
    ],
)
def test_vm_config_refuses(xml: str) -> None:
    with pytest.raises(base.PermanentError):
        mapping.vm_config(xml)


def rendered(spec: dict[str, Any], **host: Any) -> str:
    vm = VirtualMachine.model_validate(
        {"metadata": {"namespace": "p", "name": "w", "uid": str(uuidlib.uuid4())}, "spec": spec}
    )
    return converter.render(vm, host=HostEnvironment(domain_type="qemu", **host))


@pytest.mark.parametrize(
    ("spec", "host", "missing"),
    [
        pytest.param({"memory": {"size": "128Mi"}}, {}, [], id="memory-and-cpus-only"),
        pytest.param(
            {"memory": {"size": "128Mi"}, "disks": [{"name": "root", "size": "1Gi"}]},
            {"disk_paths": {"root": "/x/root.qcow2"}},
            ["disks"],
            id="disk",
        ),
        pytest.param(
            {"memory": {"size": "128Mi"}, "networks": [{"name": "default"}]},
            {},
            ["network interfaces"],
            id="network",
        ),
        pytest.param(
            {"memory": {"size": "128Mi"}, "firmware": {"type": "uefi"}},
            {},
            ["UEFI firmware"],
            id="uefi",
        ),
    ],
)
def test_unmapped_names_what_the_vm_would_lack(
    spec: dict[str, Any], host: dict[str, Any], missing: list[str]
) -> None:
    assert mapping.unmapped(rendered(spec, **host)) == missing


@pytest.mark.parametrize(
    ("table_gives", "refused"),
    [
        pytest.param(frozenset(), ["disks", "UEFI firmware"], id="vmware-today"),
        pytest.param(
            frozenset({Feature.DISKS, Feature.CLOUD_INIT}), ["UEFI firmware"], id="disks-mapped"
        ),
        pytest.param(
            frozenset({Feature.DISKS}),
            ["disks", "UEFI firmware"],
            id="a-seed-disk-still-refuses-disks",
        ),
    ],
)
def test_what_is_refused_follows_the_capability_table(
    table_gives: frozenset[Feature], refused: list[str]
) -> None:
    """UNMAPPED is derived from core.hypervisors.SUPPORTED["vmware"]: a feature joining
    that row stops being refused, once every feature rendering its element has."""
    spec = {
        "memory": {"size": "128Mi"},
        "disks": [{"name": "root", "size": "1Gi"}],
        "firmware": {"type": "uefi"},
    }
    xml = rendered(spec, disk_paths={"root": "/x/root.qcow2"})
    supported = hypervisors.supported("vmware") | table_gives
    assert mapping.unmapped(xml, mapping.unmapped_elements(supported)) == refused
    assert mapping.unmapped_elements(hypervisors.supported("vmware")) == mapping.UNMAPPED


def info(state: base.DomainState, reason: str = "unknown") -> base.DomainInfo:
    return base.DomainInfo("u", "vm", state, reason)


@pytest.mark.parametrize(
    ("known", "seen", "reason", "events"),
    [
        pytest.param({}, {"u": info(S.SHUTOFF)}, "unknown", [(E.DEFINED, "added")], id="added"),
        pytest.param(
            {},
            {"u": info(S.RUNNING)},
            "unknown",
            [(E.DEFINED, "added"), (E.STARTED, "booted")],
            id="added-running",
        ),
        pytest.param(
            {"u": info(S.RUNNING, "booted")},
            {"u": info(S.SHUTOFF)},
            "shutdown",
            [(E.STOPPED, "shutdown")],
            id="guest-powered-off",
        ),
        pytest.param(
            {"u": info(S.PAUSED, "user")},
            {"u": info(S.RUNNING)},
            "unpaused",
            [(E.RESUMED, "unpaused")],
            id="resumed",
        ),
        pytest.param(
            {"u": info(S.SHUTOFF, "destroyed")},
            {"u": info(S.SHUTOFF)},
            "destroyed",
            [],
            id="unchanged-keeps-reason",
        ),
    ],
)
def test_observe(
    known: dict[str, base.DomainInfo],
    seen: dict[str, base.DomainInfo],
    reason: str,
    events: list[tuple[base.EventKind, str]],
) -> None:
    view, changes = mapping.observe(known, seen)
    assert view["u"].reason == reason
    assert [(e.kind, e.detail) for e in changes] == events


def test_observe_a_running_vm_that_left() -> None:
    view, changes = mapping.observe({"u": info(S.RUNNING)}, {})
    assert view == {}
    assert [(e.kind, e.detail) for e in changes] == [
        (E.STOPPED, "destroyed"),
        (E.UNDEFINED, "removed"),
    ]


def test_host_cpus_numbers_threads_core_by_core() -> None:
    cpus = mapping.host_cpus(packages=2, cores=4, threads=8)
    assert [(c.id, c.socket_id, c.core_id, c.siblings) for c in cpus[:3]] == [
        (0, 0, 0, (0, 1)),
        (1, 0, 0, (0, 1)),
        (2, 0, 1, (2, 3)),
    ]
    assert {c.socket_id for c in cpus} == {0, 1}


# --- against vcsim -------------------------------------------------------------------------

HOST, OTHER_HOST = "DC0_C0_H0", "DC0_C0_H1"


def make(
    sim: Vcsim, host: str = HOST, *, poll_interval: float = 0.2, **kwargs: Any
) -> VsphereHypervisor:
    return VsphereHypervisor(
        sim.host_uri(host),
        username=sim.username,
        password=sim.password,
        verify_tls=False,
        poll_interval=poll_interval,
        **kwargs,
    )


def agent_xml(uid: str) -> str:
    """The domain XML the agent renders for a VM (core.domain), with 2 vCPUs and 256 MiB."""
    vm = VirtualMachine.model_validate(
        {
            "metadata": {
                "namespace": "prod",
                "name": f"web-{uid[:8]}",
                "uid": uid,
                "generation": 2,
            },
            "spec": {"cpu": {"vcpus": 2}, "memory": {"size": "256Mi"}},
        }
    )
    return converter.render(vm, host=HostEnvironment(domain_type="qemu"))


def run(
    sim: Vcsim, scenario: Callable[[VsphereHypervisor, str], Coroutine[Any, Any, None]]
) -> None:
    """Run `scenario(driver, uuid)` with a VM defined from agent XML, undefined afterwards."""

    async def main() -> None:
        async with make(sim) as hypervisor:
            uid = str(uuidlib.uuid4())
            await hypervisor.define(agent_xml(uid))
            try:
                await scenario(hypervisor, uid)
            finally:
                await hypervisor.undefine(uid)
                with pytest.raises(base.DomainNotFound):
                    await hypervisor.state(uid)

    asyncio.run(main())


async def next_event(events: AsyncIterator[base.Event], uuid: str) -> tuple[base.EventKind, str]:
    async def wait() -> tuple[base.EventKind, str]:
        async for event in events:
            if isinstance(event, base.DomainEvent) and event.uuid == uuid:
                return event.kind, event.detail
        raise AssertionError("event stream ended")

    return await asyncio.wait_for(wait(), timeout=10)


def test_host_facts_describe_the_simulated_host(vcsim_server: Vcsim) -> None:
    async def main() -> tuple[base.HostFacts, mapping.Datastores]:
        async with make(vcsim_server) as hypervisor:
            return await hypervisor.host_facts(), await hypervisor.datastores()

    facts, stores = asyncio.run(main())
    assert facts.hostname == HOST
    assert facts.hypervisor_type == "vmware"
    assert facts.cpus >= 1 and len(facts.cells[0].cpus) == facts.cpus
    assert facts.memory_kib > 1024 * 1024  # vcsim hosts have 4 GiB
    assert facts.cpu_model
    assert facts.uri == vcsim_server.host_uri(HOST)
    assert 0 < stores.free <= stores.capacity
    assert facts.disk_bytes == stores.capacity


def test_lifecycle_of_an_agent_rendered_domain(vcsim_server: Vcsim) -> None:
    async def scenario(hypervisor: VsphereHypervisor, uid: str) -> None:
        listed = {i.uuid: i for i in await hypervisor.list_domains()}
        assert listed[uid].state is S.SHUTOFF
        xml = await hypervisor.domain_xml(uid)
        assert identity.read_metadata(xml) == identity.read_metadata(agent_xml(uid))
        events = hypervisor.events()
        steps: list[tuple[str, base.DomainState, str, tuple[base.EventKind, str]]] = [
            ("start", S.RUNNING, "booted", (E.STARTED, "booted")),
            ("suspend", S.PAUSED, "user", (E.SUSPENDED, "paused")),
            ("resume", S.RUNNING, "unpaused", (E.RESUMED, "unpaused")),
        ]
        for operation, state, reason, event in steps:
            await getattr(hypervisor, operation)(uid)
            now = await hypervisor.state(uid)
            assert (now.state, now.reason) == (state, reason), operation
            assert await next_event(events, uid) == event, operation
        outcome = await hypervisor.shutdown(uid, timeout=10)
        assert outcome is base.ShutdownOutcome.GRACEFUL
        assert (await hypervisor.state(uid)).state is S.SHUTOFF
        assert await next_event(events, uid) == (E.STOPPED, "shutdown")
        assert await hypervisor.shutdown(uid, timeout=1) is base.ShutdownOutcome.ALREADY_OFF

    run(vcsim_server, scenario)


def test_define_sets_the_uuid_memory_and_cpus_vsphere_sees(vcsim_server: Vcsim) -> None:
    async def scenario(hypervisor: VsphereHypervisor, uid: str) -> None:
        seen = await asyncio.to_thread(vcsim_server.vm, uid)
        assert seen == vcsim.VmView(
            bios_uuid=uid, memory_mib=256, vcpus=2, host=HOST, power_state="poweredOff"
        )
        events = hypervisor.events()
        redefined = await hypervisor.define(agent_xml(uid))
        assert redefined.uuid == uid
        assert await next_event(events, uid) == (E.DEFINED, "updated")

    run(vcsim_server, scenario)


def test_changes_made_by_others_arrive_as_events(vcsim_server: Vcsim) -> None:
    async def scenario(hypervisor: VsphereHypervisor, uid: str) -> None:
        events = hypervisor.events()
        await asyncio.to_thread(power_on_behind_the_drivers_back, vcsim_server, uid)
        assert await next_event(events, uid) == (E.STARTED, "booted")
        assert (await hypervisor.state(uid)).state is S.RUNNING

    run(vcsim_server, scenario)


def power_on_behind_the_drivers_back(sim: Vcsim, uid: str) -> None:
    with sim.session() as content:
        content.searchIndex.FindByUuid(None, uid, True, True).PowerOnVM_Task()


def test_polls_during_operations_publish_no_event_twice(vcsim_server: Vcsim) -> None:
    """Operations publish their own events while the poller runs every 10 ms; a change
    made behind the driver's back, published by the poller, closes the sequence."""
    cycle = [(E.STARTED, "booted"), (E.SUSPENDED, "paused"), (E.RESUMED, "unpaused")]
    cycle += [(E.STOPPED, "destroyed")]

    async def main() -> list[tuple[base.EventKind, str]]:
        uid = str(uuidlib.uuid4())
        async with make(vcsim_server, poll_interval=0.01) as hypervisor:
            await hypervisor.define(agent_xml(uid))
            try:
                events = hypervisor.events()
                for _ in range(3):
                    for operation in ("start", "suspend", "resume", "destroy"):
                        await getattr(hypervisor, operation)(uid)
                await asyncio.to_thread(power_on_behind_the_drivers_back, vcsim_server, uid)
                return [await next_event(events, uid) for _ in range(3 * len(cycle) + 1)]
            finally:
                await hypervisor.undefine(uid)

    assert asyncio.run(main()) == cycle * 3 + [(E.STARTED, "booted")]


def test_vmotion_moves_the_vm_to_the_other_host(vcsim_server: Vcsim) -> None:
    async def main() -> None:
        uid = str(uuidlib.uuid4())
        async with make(vcsim_server) as source, make(vcsim_server, OTHER_HOST) as target:
            await source.define(agent_xml(uid))
            await source.start(uid)
            events = source.events()
            await source.migrate(
                uid, base.MigrationRequest(dest_uri=vcsim_server.host_uri(OTHER_HOST))
            )
            assert await next_event(events, uid) == (E.STOPPED, "migrated")
            assert await next_event(events, uid) == (E.UNDEFINED, "removed")
            with pytest.raises(base.DomainNotFound):
                await source.state(uid)
            assert uid not in {i.uuid for i in await source.list_domains()}
            moved = await target.state(uid)
            assert moved.state is S.RUNNING
            assert identity.read_metadata(await target.domain_xml(uid)) is not None
            seen = await asyncio.to_thread(vcsim_server.vm, uid)
            assert seen is not None and seen.host == OTHER_HOST
            await target.undefine(uid)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("dest", "message"),
    [
        pytest.param("vsphere://elsewhere:443/DC0_C0_H1", "across vCenters", id="other-vcenter"),
        pytest.param("qemu+tcp://h/system", "not a vSphere host URI", id="not-vsphere"),
    ],
)
def test_migration_outside_the_vcenter_is_permanent(
    vcsim_server: Vcsim, dest: str, message: str
) -> None:
    async def scenario(hypervisor: VsphereHypervisor, uid: str) -> None:
        await hypervisor.start(uid)
        with pytest.raises(base.PermanentError, match=message):
            await hypervisor.migrate(uid, base.MigrationRequest(dest_uri=dest))
        assert (await hypervisor.state(uid)).state is S.RUNNING

    run(vcsim_server, scenario)


def test_errors_are_named(vcsim_server: Vcsim) -> None:
    async def scenario(hypervisor: VsphereHypervisor, uid: str) -> None:
        with pytest.raises(base.DomainNotFound):
            await hypervisor.start(str(uuidlib.uuid4()))
        with pytest.raises(base.RetryableError, match="powered off"):
            await hypervisor.resume(uid)
        with pytest.raises(base.RetryableError, match="InvalidPowerState"):
            await hypervisor.suspend(uid)
        with pytest.raises(base.PermanentError):
            await hypervisor.define("<domain><name>broken</name")
        with_disk = rendered(
            {"memory": {"size": "128Mi"}, "disks": [{"name": "root", "size": "1Gi"}]},
            disk_paths={"root": "/x/root.qcow2"},
        )
        with pytest.raises(base.PermanentError, match="cannot give a VM disks"):
            await hypervisor.define(with_disk)
        with pytest.raises(base.PermanentError, match="post-copy"):
            await hypervisor.start_post_copy(uid)
        assert await hypervisor.job_stats(uid) is None

    run(vcsim_server, scenario)


def test_bad_credentials_are_permanent(vcsim_server: Vcsim) -> None:
    async def main() -> None:
        hypervisor = VsphereHypervisor(
            vcsim_server.host_uri(HOST), username="nobody", password="wrong", verify_tls=False
        )
        with pytest.raises(base.PermanentError, match="InvalidLogin"):
            await hypervisor.connect()
        await hypervisor.close()

    asyncio.run(main())


def test_an_unverified_certificate_is_permanent(vcsim_server: Vcsim) -> None:
    async def main() -> None:
        hypervisor = VsphereHypervisor(
            vcsim_server.host_uri(HOST), username=vcsim_server.username, password="x"
        )
        with pytest.raises(base.PermanentError, match="CERTIFICATE_VERIFY_FAILED"):
            await hypervisor.connect()
        await hypervisor.close()

    asyncio.run(main())


def test_unknown_host_is_permanent(vcsim_server: Vcsim) -> None:
    async def main() -> None:
        async with make(vcsim_server, "no-such-host") as _:
            pass

    with pytest.raises(base.PermanentError, match="no host named 'no-such-host'"):
        asyncio.run(main())


def test_calls_before_connect_are_retryable(vcsim_server: Vcsim) -> None:
    async def main() -> None:
        hypervisor = make(vcsim_server)
        with pytest.raises(base.RetryableError):
            await hypervisor.list_domains()
        await hypervisor.close()

    asyncio.run(main())


@pytest.mark.vcsim
def test_a_vcenter_that_goes_away_and_comes_back_is_reconnected(tmp_path: Path) -> None:
    """Its own vcsim, stopped under the driver, then started again on the same port."""
    bin_dir = vcsim_bin()
    require(bin_dir is not None, what="vcsim", how="build it with hack/vcsim/build.sh")
    assert bin_dir is not None
    sims = [vcsim.start(bin_dir, log=tmp_path / "vcsim.log")]
    port = int(sims[0].server.rsplit(":", 1)[1])
    again_log = tmp_path / "vcsim-again.log"

    async def next_connection_event(events: AsyncIterator[base.Event]) -> base.ConnectionEvent:
        async for event in events:
            if isinstance(event, base.ConnectionEvent):
                return event
        raise AssertionError("event stream ended")

    async def main() -> tuple[base.ConnectionEvent, base.ConnectionEvent, str]:
        async with make(sims[0], backoff_initial=0.1, backoff_max=0.2) as hypervisor:
            events = hypervisor.events()
            await asyncio.to_thread(vcsim.stop, sims[0])
            lost = await next_connection_event(events)
            sims.append(await asyncio.to_thread(vcsim.start, bin_dir, log=again_log, port=port))
            back = await next_connection_event(events)
            return lost, back, (await hypervisor.host_facts()).hostname

    try:
        lost, back, hostname = asyncio.run(asyncio.wait_for(main(), timeout=30))
    finally:
        for sim in sims:
            vcsim.stop(sim)
    assert (lost.connected, back.connected) == (False, True)
    assert lost.uri == back.uri == sims[0].host_uri(HOST)
    assert hostname == HOST
