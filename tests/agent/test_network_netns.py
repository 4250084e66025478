"""Two agents realising an overlay Network with the real data plane driver
(`LinuxHostNetwork`), real packets between guests: the hosts, their underlay and the guests
are network namespaces (`drivers.hostnet.lab`); the API servers and hypervisors are fakes,
and the test plugs each guest's tap into its bridge where libvirt would.

Needs root, iproute2, nftables, dnsmasq-base and busybox (marker netns).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from agent.fakeapi import HOST, FakeApiServer
from agent.test_agent_fakes import Running, running
from drivers.hostnet import lab as labs
from drivers.hostnet.lab import Guest, Lab, run
from kubevisor.core.network import hostinputs, hostplan
from kubevisor.core.network.hostplan import HostPlan
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.drivers.hostnet.base import Converged
from kubevisor.drivers.hostnet.linux import LinuxHostNetwork

pytestmark = pytest.mark.netns

A = IPv4Address
NETWORK_UID = "b1b1b1b1-0000-4000-8000-00000000000a"
BRIDGE = hostplan.bridge_name(NETWORK_UID)
OVERLAY = {"type": "overlay", "subnet": {"cidr": "10.20.0.0/24", "gateway": "10.20.0.1"}}


class Recording(LinuxHostNetwork):
    """The real driver, keeping what each converge did."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history: list[Converged] = []
        self.seconds: list[float] = []

    async def converge(self, plan: HostPlan) -> Converged:
        started = time.perf_counter()
        result = await super().converge(plan)
        self.seconds.append(time.perf_counter() - started)
        self.history.append(result)
        return result


class Side:
    """One host: its API server (it alone sees its VM), hypervisor, VM and guest."""

    def __init__(self, lab: Lab, n: int) -> None:
        self.lab, self.n = lab, n
        self.api, self.hv = FakeApiServer(), FakeHypervisor()
        self.api.add_network(
            "blue",
            OVERLAY,
            {"vni": 4300, "dhcpPorts": [{"host": HOST, "ipAddress": f"10.20.0.25{n}"}]},
            uid=NETWORK_UID,
        )
        self.api.add_peer(f"peer-{3 - n}", f"172.31.255.{3 - n}")
        self.ip = f"10.20.0.{4 + n}"
        mac = f"02:00:00:00:01:0{4 + n}"
        spec = {"memory": {"size": "96Mi"}, "networks": [{"name": "eth0", "network": "blue"}]}
        self.key, self.uid = self.api.create(f"vm{n}", spec)
        self.api.vms[self.key]["status"]["interfaces"] = [
            {"name": "eth0", "network": "blue", "macAddress": mac, "ipAddresses": [self.ip]}
        ]
        tap = hostinputs.tap_name(self.uid, "eth0")
        self.guest: Guest = lab.guest(f"g{n}", host=lab.host(n), mac=mac, tap=tap)

    async def driver(self) -> Recording:
        # pyroute2's synchronous socket runs an event loop of its own: not inside this one.
        return await asyncio.to_thread(
            Recording,
            state_dir=self.lab.state / f"h{self.n}",
            netns=self.lab.host(self.n),
            namespace_prefix=f"{self.lab.prefix}d{self.n}-",
        )

    @contextlib.asynccontextmanager
    async def agent(self, tmp_path: Path, clock: Any, driver: Recording) -> AsyncIterator[Running]:
        try:
            async with running(
                tmp_path / f"a{self.n}",
                self.api,
                self.hv,
                clock,
                host_network=driver,
                tunnel_ip=A(f"172.31.255.{self.n}"),
                dhcp_namespace_prefix=f"{self.lab.prefix}d{self.n}-",
            ) as agent:
                yield agent
        finally:
            await asyncio.to_thread(driver.close)

    def dnsmasq_pid(self) -> str:
        (pidfile,) = (self.lab.state / f"h{self.n}" / "dhcp").glob("*/pid")
        return pidfile.read_text().strip()

    def leftovers(self) -> list[str]:
        """What of kubevisor's data plane is on this host: links, dnsmasq, port rules."""
        host = self.lab.host(self.n)
        found = sorted(self.kubevisor_links())
        found += [str(pid) for pid in (self.lab.state / f"h{self.n}" / "dhcp").glob("*/pid")]
        rules = run("nft", "list", "table", "bridge", "kubevisor", netns=host, check=False)
        return found + (["table bridge kubevisor"] if rules.returncode == 0 else [])

    def kubevisor_links(self) -> set[str]:
        host = self.lab.host(self.n)
        return {
            name for name in self.lab.links(host) if name.startswith(("kvbr-", "kvvx-", "kvdh-"))
        }


@pytest.fixture
def lab() -> Iterator[Lab]:
    with labs.built() as world:
        yield world


def test_two_agents_connect_their_vms_and_an_agent_restart_changes_nothing(
    lab: Lab, tmp_path: Path, clock: Any, record_property: pytest.RecordProperty
) -> None:
    one, two = Side(lab, 1), Side(lab, 2)

    async def main() -> None:
        first = await one.driver()
        async with (
            one.agent(tmp_path, clock, first) as a1,
            two.agent(tmp_path, clock, await two.driver()) as a2,
        ):
            for side, agent in ((one, a1), (two, a2)):
                await agent.poll(lambda s=side: ("start", s.uid) in s.hv.calls, what="started")
                # The network was there before the domain started: libvirt could plug it.
                assert BRIDGE in side.kubevisor_links()
                lab.plug(side.guest, BRIDGE)
            # Its address, the router and the overlay's MTU (underlay less VXLAN's 50).
            lease = lab.dhcp(one.guest)
            assert (lease[0], lease[1], lease[-1]) == (one.ip, "10.20.0.1", "1450")
            assert lab.dhcp(two.guest)[0] == two.ip
            assert lab.ping(one.guest, two.ip, count=2)
        # The host side of a VM start: the converge that realised its network (bridge,
        # VXLAN, DHCP namespace and dnsmasq, port rules; observing included).
        realised = max(first.seconds)
        record_property("agent_realise_network_seconds", realised)
        print(f"\nagent: the network of a VM start realised in {realised * 1000:.0f} ms")

        # Agent 1 restarts, a new process with a new driver: nothing on its host changes,
        # the guests keep talking, its dnsmasq keeps running.
        pid = one.dnsmasq_pid()
        restarted = await one.driver()
        async with one.agent(tmp_path, clock, restarted) as a1:
            await a1.poll(lambda: restarted.history, what="the restarted agent's converge")
            assert not any(result.changed for result in restarted.history)
            assert one.dnsmasq_pid() == pid
            assert lab.ping(one.guest, two.ip)
            assert lab.dhcp(one.guest)[0] == one.ip

            # The VM goes: so does everything of its network on host 1, in one converge
            # (the rules go last: wait for all of it, not for the links alone).
            one.api.delete(one.key)
            await a1.poll(lambda: not one.leftovers(), what="host 1's network removed")
            assert not one.hv.domains

    asyncio.run(main())
