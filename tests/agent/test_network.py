"""The agent's host networking (`agent.network.HostNetworking`) against fakes: the VM loops of
`test_agent_fakes.running`, `FakeHostNetwork` for the host's data plane, Networks and peer
hosts in `FakeApiServer`.

`Recorder` writes each converge that changed something into the hypervisor's call list,
so one list shows whether a network was realised before its domain started.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from agent.fakeapi import HOST, NAMESPACE, FakeApiServer
from agent.test_agent_fakes import Running, running
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.network import hostinputs, hostplan
from kubevisor.core.network.hostplan import HostPlan, VxlanDevice
from kubevisor.drivers.base import DomainState
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.drivers.hostnet.base import Converged
from kubevisor.drivers.hostnet.fake import FakeHostNetwork

A = IPv4Address
TUNNEL = "172.16.0.1"
OVERLAY = {
    "type": "overlay",
    "subnet": {"cidr": "10.20.0.0/24", "gateway": "10.20.0.1"},
}


class Recorder(FakeHostNetwork):
    def __init__(self, hv: FakeHypervisor, state: HostPlan | None = None) -> None:
        super().__init__(state)
        self.hv = hv

    async def converge(self, plan: HostPlan) -> Converged:
        result = await super().converge(plan)
        if result.changed:
            bridges = ",".join(sorted(b.name for b in self.state.bridges))
            self.hv.calls.append(("network", bridges))
        return result


def on_blue(api: FakeApiServer, name: str, ip: str, *, mac: str = "") -> tuple[str, str]:
    """A VM bound here with eth0 on Network blue, as the controller leaves it."""
    key, uid = api.create(
        name, {"memory": {"size": "96Mi"}, "networks": [{"name": "eth0", "network": "blue"}]}
    )
    api.vms[key]["status"]["interfaces"] = [
        {
            "name": "eth0",
            "network": "blue",
            "macAddress": mac or f"02:00:00:00:00:{int(ip.rsplit('.', 1)[1]):02x}",
            "ipAddresses": [ip],
        }
    ]
    return key, uid


def world() -> tuple[FakeApiServer, FakeHypervisor, str]:
    api, hv = FakeApiServer(), FakeHypervisor()
    uid = api.add_network(
        "blue",
        OVERLAY,
        {"vni": 4242, "dhcpPorts": [{"host": HOST, "ipAddress": "10.20.0.250"}]},
    )
    api.add_peer("peer-1", "172.16.0.2")
    return api, hv, uid


@contextlib.asynccontextmanager
async def networked(
    tmp_path: Path, clock: Any, api: FakeApiServer, host_network: Recorder
) -> AsyncIterator[Running]:
    """The agent's loops with `host_network` as the data plane, settled once."""
    async with running(
        tmp_path,
        api,
        host_network.hv,
        clock,
        host_network=host_network,
        tunnel_ip=A(TUNNEL),
        dhcp_namespace_prefix="t-",
    ) as agent:
        await agent.settle()
        yield agent


def test_a_vm_bound_here_gets_its_network_before_its_domain_starts(
    tmp_path: Path, clock: Any
) -> None:
    async def main() -> None:
        api, hv, net_uid = world()
        key, uid = on_blue(api, "web", "10.20.0.5")
        host_network = Recorder(hv)
        async with networked(tmp_path, clock, api, host_network) as agent:
            bridge = hostplan.bridge_name(net_uid)
            assert hv.calls.index(("network", bridge)) < hv.calls.index(("start", uid))
            state = host_network.state
            assert {b.name for b in state.bridges} == {bridge}
            (vxlan,) = state.vxlans
            assert (vxlan.vni, vxlan.local, vxlan.flood) == (4242, A(TUNNEL), {A("172.16.0.2")})
            (server,) = state.dhcp_servers
            assert server.namespace.startswith("t-")
            assert server.hosts == {hostplan.DhcpHost("02:00:00:00:00:05", A("10.20.0.5"))}
            tap = hostinputs.tap_name(uid, "eth0")
            assert {(p.tap, p.mac, p.ip) for p in state.ports} == {
                (tap, "02:00:00:00:00:05", A("10.20.0.5"))
            }
            interface = ET.fromstring(hv.domains[uid].xml).find("devices/interface")
            assert interface is not None
            assert interface.find("source").get("bridge") == bridge  # type: ignore[union-attr]
            assert interface.find("target").get("dev") == tap  # type: ignore[union-attr]
            assert interface.find("mac").get("address") == "02:00:00:00:00:05"  # type: ignore[union-attr]
            assert api.host is not None
            assert api.host["status"]["network"] == {"tunnelEndpoint": TUNNEL}
            assert agent.status(key)["phase"] == "Running"

    asyncio.run(main())


def test_the_network_goes_with_the_last_vm_on_it(tmp_path: Path, clock: Any) -> None:
    async def main() -> None:
        api, hv, _ = world()
        first, _ = on_blue(api, "web", "10.20.0.5")
        second, _ = on_blue(api, "db", "10.20.0.6")
        host_network = Recorder(hv)
        async with networked(tmp_path, clock, api, host_network) as agent:
            (server,) = host_network.state.dhcp_servers
            assert len(server.hosts) == 2
            api.delete(first)
            await agent.settle()
            (server,) = host_network.state.dhcp_servers
            assert {h.ip for h in server.hosts} == {A("10.20.0.6")}
            last = host_network.history[-1]
            # The other VM's network stays; its DHCP server only re-reads its hosts (SIGHUP).
            assert [(c.action, type(c.element).__name__) for c in last.applied] == [
                ("remove", "PortSecurity"),
                ("update", "DhcpServer"),
            ]
            api.delete(second)
            await agent.settle()
            assert host_network.state == HostPlan()
            assert not hv.domains

    asyncio.run(main())


def test_flood_peers_follow_the_hosts(tmp_path: Path, clock: Any) -> None:
    async def main() -> None:
        api, hv, _ = world()
        on_blue(api, "web", "10.20.0.5")
        host_network = Recorder(hv)
        async with networked(tmp_path, clock, api, host_network) as agent:
            api.add_peer("peer-2", "172.16.0.3")
            await agent.settle()
            (vxlan,) = host_network.state.vxlans
            assert vxlan.flood == {A("172.16.0.2"), A("172.16.0.3")}
            api.add_peer("peer-1", None)
            await agent.settle()
            (vxlan,) = host_network.state.vxlans
            assert vxlan.flood == {A("172.16.0.3")}
            changes = host_network.history[-1].applied
            assert [(c.action, type(c.element)) for c in changes] == [("update", VxlanDevice)]

    asyncio.run(main())


def test_an_agent_that_restarts_adopts_its_network(tmp_path: Path, clock: Any) -> None:
    """The second agent finds the bridge, VXLAN device, DHCP server and rules as they are
    and changes nothing: the guest keeps running on them."""

    async def main() -> None:
        api, hv, _ = world()
        _, uid = on_blue(api, "web", "10.20.0.5")
        host_network = Recorder(hv)
        async with networked(tmp_path, clock, api, host_network):
            pass
        before = host_network.state
        assert before.bridges and before.vxlans and before.dhcp_servers and before.ports
        # A new process: it knows nothing but what the driver observes on the host.
        restarted = Recorder(hv, state=before)
        async with networked(tmp_path, clock, api, restarted):
            assert restarted.history, "the restarted agent converged"
            assert not any(c.changed for c in restarted.history)
            assert restarted.state == before
            assert hv.domains[uid].state is DomainState.RUNNING

    asyncio.run(main())


def test_a_vm_on_an_unknown_network_waits_and_says_why(tmp_path: Path, clock: Any) -> None:
    async def main() -> None:
        api, hv, _ = world()
        key, uid = on_blue(api, "web", "10.20.0.5")
        api.vms[key]["status"]["interfaces"][0]["network"] = "green"
        host_network = Recorder(hv)
        async with networked(tmp_path, clock, api, host_network) as agent:
            assert ("start", uid) not in hv.calls
            ready = agent.condition(key, "Ready")
            assert ready["reason"] == "NetworkNotReady"
            assert f"Network {NAMESPACE}/green is not known on this host" in ready["message"]
            assert host_network.state == HostPlan()

    asyncio.run(main())


def test_without_a_data_plane_vms_on_networks_are_refused_by_name(
    tmp_path: Path, clock: Any
) -> None:
    async def main() -> None:
        api, hv, _ = world()
        key, uid = on_blue(api, "web", "10.20.0.5")
        plain, plain_uid = api.create("plain", {"memory": {"size": "96Mi"}})
        async with running(tmp_path, api, hv, clock) as agent:
            await agent.settle()
            assert ("start", uid) not in hv.calls
            assert "--host-network off" in agent.condition(key, "Ready")["message"]
            assert ("start", plain_uid) in hv.calls
            assert agent.status(plain)["phase"] == "Running"

    asyncio.run(main())


def test_a_vm_migrating_here_gets_its_network_when_the_target_prepares(
    tmp_path: Path, clock: Any
) -> None:
    """`environment` is what the migrator renders the incoming domain with (`Preparing`);
    a migration that fails takes the network away again with the stray domain."""

    async def main() -> None:
        api, hv, net_uid = world()
        host_network = Recorder(hv)
        async with networked(tmp_path, clock, api, host_network) as agent:
            assert host_network.state == HostPlan()
            key, uid = on_blue(api, "web", "10.20.0.5")
            obj = api.vms[key]
            obj["status"]["host"] = HOST
            env = await agent.agent.environment(VirtualMachine.model_validate(obj), uid)
            assert env.nics["eth0"].bridge == hostplan.bridge_name(net_uid)
            assert {b.name for b in host_network.state.bridges} == {env.nics["eth0"].bridge}
            await agent.agent.remove_stray(uid)
            await agent.settle()
            assert host_network.state == HostPlan()

    asyncio.run(main())
