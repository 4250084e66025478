"""Two hosts with a real data plane beside the shared e2e stack, for the networking tests
(the `net_stack` fixture of tests/e2e/conftest.py).

Each is a testbed host in a network namespace of its own on the testbed's underlay
(docs/testbed-network.md), run by an agent with `--host-network=linux` and the netns flags
(`testbed.netns.agent_flags`), its HypervisorHost mapping the provider physical network
`physnet1` to its uplink `eth1`. They join the shared stack's control plane and
controller: the shared hosts run `--host-network=off` and have no tunnel endpoint or
mapping, so the controller places VMs on Networks only here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import ManagedProcess, eventually
from kubevisor.testbed import hosts, netns, procfs
from kubevisor.testbed.controlplane import free_ports
from kubevisor.testbed.guestshell import GuestShell
from kubevisor.testbed.hosts import LocalHost
from stacks import Stack, host_ready

FIRST_INDEX = 11
"""Host numbers 11 and 12: clear of the shared hosts (1, 2) and ExtraHost (3)."""
DATA_PLANE_LINKS = ("kvbr-", "kvvx-", "kvdh-")
"""Name prefixes of the links the data plane makes (bridge, VXLAN, DHCP server's veth)."""


@dataclass
class NetStack:
    """The netns hosts, their agents and where each keeps its state."""

    stack: Stack
    state: Path
    hosts: list[LocalHost] = field(default_factory=list)
    agents: dict[str, ManagedProcess] = field(default_factory=dict)
    agent_states: dict[str, Path] = field(default_factory=dict)

    def start(self) -> NetStack:
        self.hosts = hosts.start_hosts(2, state_dir=self.state, netns=True, first_index=FIRST_INDEX)
        template = next(iter(self.stack.agent_options.values()))
        for host in self.hosts:
            assert host.netns and host.underlay_address
            agent_state = self.state / f"agent-{host.name}"
            agent_state.mkdir(exist_ok=True)
            options = replace(
                template,
                host=host.name,
                libvirt_uri=host.uri,
                state_dir=agent_state,
                image_dir=None,
                metrics_port=free_ports(1)[0],
                qemu_conf=host.root / "etc" / "qemu.conf",
                migrate_uri=host.migrate_uri,
                extra=[
                    *netns.agent_flags(host.netns, host.underlay_address),
                    *("--migration-uri", host.migration_uri),
                ],
            )
            self.agent_states[host.name] = agent_state
            self.agents[host.name] = ManagedProcess(
                options.argv(), log=agent_state / "agent.log"
            ).start()
        mapping = {
            "spec": {
                "networkMappings": [
                    {"physicalNetwork": netns.PHYSICAL_NETWORK, "interface": netns.UPLINK_IFNAME}
                ]
            }
        }
        for host in self.hosts:
            eventually(
                lambda h=host.name: self._agent_alive(h) and host_ready(self.stack, h),
                timeout=60,
                what=f"{host.name} Ready",
            )
            self.stack.kubectl("patch", "hvh", host.name, "--type=merge", "-p", json.dumps(mapping))
        return self

    def _agent_alive(self, host: str) -> bool:
        agent = self.agents[host]
        if not agent.running:
            assert agent.process is not None
            code = agent.process.returncode
            raise RuntimeError(f"the agent of {host} exited ({code}):\n{agent.tail()}")
        return True

    def host(self, name: str) -> LocalHost:
        return next(h for h in self.hosts if h.name == name)

    def shell(self, vm: dict[str, Any]) -> GuestShell:
        """Commands in the guest of `vm` (a VirtualMachine object), on its host now."""
        return GuestShell(self.host(vm["status"]["host"]).uri, vm["metadata"]["uid"])

    def kill(self, name: str) -> None:
        """Host `name` dies: its agent (SIGKILL), its cables (underlay and uplink down, so
        nothing of it answers, not even the DHCP servers its agent left), then libvirtd and
        its guests with the PID namespace they run in."""
        self.agents[name].kill()
        host = self.host(name)
        for link in (netns.UNDERLAY_IFNAME, netns.UPLINK_IFNAME):
            netns.run(host.netns or "", ["ip", "link", "set", link, "down"], check=True)
        assert host.pid is not None
        os.kill(host.pid, signal.SIGKILL)

    def data_plane(self, host: str) -> list[str]:
        """What of kubevisor's data plane is on `host`: its links, its DHCP namespaces, its
        running dnsmasq (by the namespace it serves) and its nftables table."""
        name = self.host(host).netns or ""
        found = sorted(link for link in netns.links(name) if link.startswith(DATA_PLANE_LINKS))
        found += netns.namespaces(f"{name}-d")
        for pidfile in sorted((self.agent_states[host] / "dhcp").glob("*/pid")):
            text = pidfile.read_text().strip()
            if text.isdigit() and procfs.alive(int(text)):
                found.append(f"dnsmasq {pidfile.parent.name}")
        table = netns.run(name, ["nft", "list", "table", "bridge", "kubevisor"], check=False)
        return found + ([f"nft: {table.stdout}"] if table.returncode == 0 else [])

    def remove(self) -> None:
        """Everything `start` started, also when it failed half-way. The VMs on these hosts
        must be gone first (their agents remove the data plane)."""
        for name, agent in self.agents.items():
            agent.stop()
            sys.stderr.write(f"\n--- {name} agent log (tail) ---\n{agent.tail()}")
        for host in self.hosts:
            # Gone before the next module, whose tests count the shared stack's hosts.
            self.stack.kubectl(
                "delete", "hvh", host.name, "--wait=true", "--timeout=60s", check=False
            )
            # A DHCP server an agent left behind (a test that failed half-way).
            for pidfile in (self.agent_states[host.name] / "dhcp").glob("*/pid"):
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text()), signal.SIGTERM)
            for leftover in netns.namespaces(f"{host.netns}-d"):
                netns.remove(leftover)
        hosts.stop_hosts(self.state)
