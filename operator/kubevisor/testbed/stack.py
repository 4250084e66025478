"""The whole local stack in one state directory: what `kubevisor dev up` starts.

A real kube-apiserver + etcd (testbed.controlplane), two libvirtd hosts running QEMU
(testbed.hosts; or, where libvirtd cannot run, two agents on libvirt's embedded
`test:///default` driver), the tiny guest as the hosts' default kernel, the controller and
one agent per host as background processes whose pids and logs live in the state
directory, so `kubevisor dev down` can stop everything from another shell.

Where dnsmasq, nftables and iproute2 are there, each host is a machine in a network
namespace of its own on the testbed's underlay (docs/testbed-network.md) and its agent
builds the data plane of VMs on Networks (`--host-network=linux`, its underlay address as
tunnel endpoint, `testbed.netns.agent_flags`): overlay Networks between the two hosts are
real VXLAN, and the guests get their addresses from the hosts' dnsmasq. Each host maps the
provider physical network `physnet1` to its uplink too. `stop` removes what the data plane
left outside the hosts' namespaces (the DHCP servers' namespaces) before the hosts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from kubevisor.api.wire import SYSTEM_NAMESPACE
from kubevisor.testbed import controlplane, guest, hosts, images, netns, procfs
from kubevisor.testbed.commands import LOCAL_MIGRATE_URI, LOOPBACK, AgentOptions, ControllerOptions
from kubevisor.testbed.controlplane import ControlPlane

PROCESSES = "processes.json"
PROVIDER_MAPPING = {"physicalNetwork": netns.PHYSICAL_NETWORK, "interface": netns.UPLINK_IFNAME}
"""Each netns host's uplink into the provider physical network (a HypervisorHost's
spec.networkMappings entry)."""


@dataclass(frozen=True)
class Agent:
    host: str
    uri: str
    domain_type: str
    qemu_conf: Path | None = None
    migrate_uri: str = LOCAL_MIGRATE_URI
    extra: tuple[str, ...] = ()
    """Flags for a host in a network namespace: its data plane and migration address."""


def start(
    *,
    bin_dir: Path,
    state_dir: Path,
    crd_paths: Sequence[Path],
    say: Callable[[str], None],
    host_count: int = 2,
) -> ControlPlane:
    """Start (or reuse) every part; returns the control plane."""
    plane = controlplane.load(state_dir)
    if plane is None:
        plane = controlplane.start(bin_dir=bin_dir, state_dir=state_dir, crd_paths=crd_paths)
        say(f"kube-apiserver {plane.version} is ready at {plane.server}, CRDs installed.")
    else:
        say(f"kube-apiserver {plane.version} already runs at {plane.server}.")
    plane.kubectl("create", "namespace", SYSTEM_NAMESPACE, check=False)
    if _running(state_dir):
        say("the controller and the agents already run.")
        return plane
    agents = _hypervisors(state_dir, host_count, say)
    tiny: guest.Guest | None = None
    missing = hosts.missing_prerequisites()
    if not missing:
        tiny = guest.build_guest(state_dir / "guest")
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)
    ports = controlplane.free_ports(2 + len(agents))
    controller = ControllerOptions(plane.kubeconfig, metrics_port=ports[0])
    pids = {"controller": _spawn(controller.argv(), log=logs / "controller.log")}
    say(f"metrics: controller http://127.0.0.1:{ports[0]}/metrics")
    for agent, port in zip(agents, ports[2:], strict=True):
        say(f"metrics: agent {agent.host} http://127.0.0.1:{port}/metrics")
        options = AgentOptions(
            agent.host,
            agent.uri,
            plane.kubeconfig,
            state_dir / "agents" / agent.host,
            domain_type=agent.domain_type,
            guest=tiny,
            metrics_port=port,
            # Local hosts: QEMU streams to 127.0.0.1 (migration_host is unset), or to the
            # host's underlay address in its namespace; libvirt runs without cgroups
            # (testbed qemu.conf).
            migrate_uri=agent.migrate_uri,
            cgroup_controllers="",
            qemu_conf=agent.qemu_conf,
            # The demo image is served on 127.0.0.1, which an agent refuses by default.
            image_source_allow=LOOPBACK,
            extra=agent.extra,
        )
        pids[f"agent-{agent.host}"] = _spawn(options.argv(), log=logs / f"agent-{agent.host}.log")
    if tiny is not None:
        served = images.serve_demo_image(
            state_dir, tiny, port=ports[1], log=logs / "image-server.log"
        )
        pids["image-server"] = served.pid
        say(f"serving a qcow2 image at {served.url} for {served.manifest}")
    (state_dir / PROCESSES).write_text(json.dumps(pids, indent=2))
    say(f"controller and {len(agents)} agents started (logs in {logs}).")
    wait_hosts_ready(plane, [a.host for a in agents], timeout=120)
    say("every host is Ready.")
    if any(a.extra for a in agents):
        mapping = {"spec": {"networkMappings": [PROVIDER_MAPPING]}}
        for agent in agents:
            plane.kubectl("patch", "hvh", agent.host, "--type=merge", "-p", json.dumps(mapping))
    return plane


def wait_hosts_ready(plane: ControlPlane, names: Sequence[str], *, timeout: float) -> None:
    """Wait until each HypervisorHost reports its capacity and the controller says Ready."""
    deadline = time.monotonic() + timeout
    waiting = list(names)
    while waiting and time.monotonic() < deadline:
        # Always the whole list: `get hvh NAME` of a single name returns no List.
        done = plane.kubectl("get", "hvh", "-o", "json", check=False)
        items = json.loads(done.stdout).get("items", []) if done.returncode == 0 else []
        ready = {
            item["metadata"]["name"]
            for item in items
            if (item.get("status") or {}).get("capacity")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (item.get("status") or {}).get("conditions") or []
            )
        }
        waiting = [n for n in waiting if n not in ready]
        if waiting:
            time.sleep(0.5)
    if waiting:
        raise controlplane.ControlPlaneError(
            f"hosts {', '.join(waiting)} not Ready after {timeout:.0f}s; see the agent logs"
        )


def _hypervisors(state_dir: Path, count: int, say: Callable[[str], None]) -> list[Agent]:
    missing = hosts.missing_prerequisites()
    if missing:
        say(
            f"libvirtd cannot run here (missing: {', '.join(missing)}); falling back to "
            "libvirt's embedded test:///default driver: VMs are simulated, no guest boots."
        )
        return [Agent(f"test-host-{i}", "test:///default", "test") for i in range(1, count + 1)]
    lacking = netns.missing_data_plane_prerequisites()
    if lacking:
        say(
            f"no data plane for Networks (missing: {', '.join(lacking)}; hack/setup.sh "
            "installs them): the hosts share this machine's network, their agents take no "
            "VMs on Networks."
        )
    started = hosts.start_hosts(count, state_dir=state_dir / "hosts", netns=not lacking)
    where = [
        f"{h.name} in network namespace {h.netns} at {h.underlay_address}"
        if h.netns
        else f"{h.name} at {h.uri}"
        for h in started
    ]
    say(f"{len(started)} libvirtd hosts with QEMU (TCG): {', '.join(where)}.")
    if not lacking:
        say("their agents build the hosts' Networks: bridges, VXLAN, dnsmasq, nftables.")
    return [_agent(h) for h in started]


def _agent(host: hosts.LocalHost) -> Agent:
    agent = Agent(host.name, host.uri, "qemu", host.root / "etc" / "qemu.conf")
    if host.netns is None or host.underlay_address is None:
        return agent
    flags = netns.agent_flags(host.netns, host.underlay_address)
    # Peer-to-peer migrations go over the underlay, as between real machines.
    migration = ("--migration-uri", host.migration_uri)
    return replace(agent, migrate_uri=host.migrate_uri, extra=(*flags, *migration))


def _spawn(argv: list[str], *, log: Path) -> int:
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return process.pid


def _running(state_dir: Path) -> bool:
    path = state_dir / PROCESSES
    if not path.exists():
        return False
    pids: dict[str, int] = json.loads(path.read_text())
    return all(procfs.alive(pid) for pid in pids.values())


def stop(state_dir: Path, *, timeout: float = 30.0) -> None:
    """Stop the agents and the controller, then the DHCP servers their data planes left,
    the hosts (their namespaces, and the underlay, go with them), then the control plane."""
    path = state_dir / PROCESSES
    if path.exists():
        pids: dict[str, int] = json.loads(path.read_text())
        for pid in pids.values():
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + timeout
        for pid in pids.values():
            while procfs.alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if procfs.alive(pid):
                os.killpg(pid, signal.SIGKILL)
        path.unlink()
    if (state_dir / "hosts").exists():
        for host in hosts.list_hosts(state_dir / "hosts"):
            if host.netns:
                netns.remove_dhcp_servers(host.netns)
        hosts.stop_hosts(state_dir / "hosts")
    controlplane.stop(state_dir)
