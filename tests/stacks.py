"""The end-to-end stack: its type, how it starts and stops (`start_stack`, `stop_stack`,
the `stack` fixture of tests/e2e/conftest.py) and its extra pieces (hosts beyond the
shared two, vSphere hosts, a BMC), for the tests that use it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from harness import ManagedProcess, eventually
from kubevisor.core import migration
from kubevisor.testbed import bmc, hosts
from kubevisor.testbed.commands import LOCAL_MIGRATE_URI, LOOPBACK, AgentOptions, ControllerOptions
from kubevisor.testbed.controlplane import ControlPlane, free_ports
from kubevisor.testbed.guest import Guest
from kubevisor.testbed.hosts import LocalHost
from kubevisor.testbed.vcsim import Vcsim


@dataclass
class Stack:
    """The shared end-to-end stack (the `stack` fixture of tests/e2e/conftest.py): a real
    control plane, the controller and one agent per libvirtd host, each its own process."""

    plane: ControlPlane
    hosts: list[LocalHost]
    controller: ManagedProcess
    agents: dict[str, ManagedProcess]
    state_dirs: dict[str, Path]
    metrics_ports: dict[str, int]
    """Prometheus port per process: "controller" and each host name (its agent)."""
    agent_options: dict[str, AgentOptions] = field(default_factory=dict)
    """Each shared agent's command line, by host name: extra hosts run variants of it."""

    def scrape(self, process: str) -> dict[str, float]:
        """Every sample of a process's /metrics, keyed by `name{labels}` as exposed."""
        url = f"http://127.0.0.1:{self.metrics_ports[process]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                samples[key] = float(value)
        return samples

    def kubectl(self, *args: str, **kwargs: Any) -> Any:
        return self.plane.kubectl(*args, **kwargs)

    def apply(self, namespace: str, *manifests: dict[str, Any]) -> None:
        for manifest in manifests:
            manifest.setdefault("metadata", {})["namespace"] = namespace
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))

    def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        args = ["get", kind, name, "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        done = self.kubectl(*args, check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def vms(self, namespace: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "vm", "-n", namespace, "-o", "json").stdout
        return list(json.loads(out)["items"])

    def phase(self, namespace: str, name: str) -> str | None:
        vm = self.get("vm", name, namespace)
        return None if vm is None else (vm.get("status") or {}).get("phase")

    def wait_phase(self, namespace: str, name: str, phase: str, timeout: float = 90) -> Any:
        return eventually(
            lambda: (
                self.get("vm", name, namespace) if self.phase(namespace, name) == phase else None
            ),
            timeout=timeout,
            what=f"vm {namespace}/{name} to be {phase} (is {self.phase(namespace, name)})",
        )

    def start_migration(self, namespace: str, name: str, vm: str, **spec: Any) -> None:
        """Apply MigrationJob `name` for `vm` (spec fields in camelCase, e.g. targetHost)."""
        job = {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "MigrationJob",
            "metadata": {"name": name},
            "spec": {"vm": vm, **spec},
        }
        self.apply(namespace, job)

    def wait_migration(self, namespace: str, name: str, timeout: float = 120) -> Any:
        """MigrationJob `name` once it has ended (Succeeded, Failed or Cancelled)."""

        def ended() -> Any:
            job = self.get("migrationjob", name, namespace)
            phase = ((job or {}).get("status") or {}).get("phase")
            return job if phase in migration.TERMINAL else None

        return eventually(ended, timeout=timeout, what=f"MigrationJob {name} to end")

    def virsh(self, host: str, *args: str, check: bool = True) -> str:
        uri = next(h.uri for h in self.hosts if h.name == host)
        done = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)} on {host}: {done.stderr}")
        return done.stdout.strip()

    def domains(self, host: str) -> list[str]:
        """UUIDs of every domain (running or not) on `host`."""
        return self.virsh(host, "list", "--all", "--uuid").split()


def disk_token_vm(name: str, guest: Any, *, disk_size: str, **spec: Any) -> dict[str, Any]:
    """A VM booting the tiny guest's kernel with a blank data disk, which the guest keeps its
    disk token on (testbed/guest.py), and any more of `spec`."""
    boot = {"kernel": str(guest.kernel), "initrd": str(guest.initrd), "cmdline": guest.cmdline}
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "memory": {"size": "128Mi"},
            "boot": boot,
            "disks": [{"name": "data", "size": disk_size}],
            **spec,
        },
    }


def shared_agent(
    plane: ControlPlane, host: LocalHost, guest: Guest, state: Path, metrics_port: int
) -> AgentOptions:
    """The shared stack's agent on `host` (ExtraHost runs variants of it)."""
    return AgentOptions(
        host.name,
        host.uri,
        plane.kubeconfig,
        state,
        domain_type="qemu",
        guest=guest,
        shutdown_grace=15,
        lease_duration=8,
        # Within the controller's grace of 20 s: its failover waits for no longer.
        self_fence_after=16,
        metrics_port=metrics_port,
        # The hosts leave migration_host unset: QEMU streams go to 127.0.0.1.
        migrate_uri=LOCAL_MIGRATE_URI,
        # The testbed's libvirt runs without cgroups (qemu.conf cgroup_controllers = []).
        cgroup_controllers="",
        qemu_conf=host.root / "etc" / "qemu.conf",
        # The tests serve images on 127.0.0.1, which an agent refuses by default.
        image_source_allow=LOOPBACK,
    )


def start_stack(
    plane: ControlPlane, local_hosts: list[LocalHost], guest: Guest, root: Path
) -> Stack:
    """The controller and one agent per host on `plane` (their state and logs under
    `root`), once every host is Ready; `stop_stack` ends it."""
    plane.kubectl("create", "namespace", "kubevisor-system", check=False)
    ports = free_ports(1 + len(local_hosts))
    controller = ManagedProcess(
        ControllerOptions(
            plane.kubeconfig,
            metrics_port=ports[0],
            # Lost hosts' VMs move after 20 s; long enough that an agent restarted by a test
            # is back first (agents renew an 8 s Lease).
            failover_grace=20,
        ).argv(),
        log=root / "controller.log",
    ).start()
    agents: dict[str, ManagedProcess] = {}
    options: dict[str, AgentOptions] = {}
    states: dict[str, Path] = {}
    metrics = {"controller": ports[0]}
    for host, port in zip(local_hosts, ports[1:], strict=True):
        states[host.name] = root / host.name
        states[host.name].mkdir()
        options[host.name] = shared_agent(plane, host, guest, states[host.name], port)
        agents[host.name] = ManagedProcess(
            options[host.name].argv(), log=states[host.name] / "agent.log"
        ).start()
        metrics[host.name] = port
    stack = Stack(plane, local_hosts, controller, agents, states, metrics, options)
    try:
        for host in local_hosts:
            eventually(
                lambda h=host.name: host_ready(stack, h), timeout=60, what=f"host {host.name} Ready"
            )
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    """Stop the stack's processes and print the tail of each one's log."""
    for process in [stack.controller, *stack.agents.values()]:
        process.stop()
    for name, process in [("controller", stack.controller), *stack.agents.items()]:
        sys.stderr.write(f"\n--- {name} log (tail) ---\n{process.tail()}")


def host_ready(stack: Stack, name: str) -> bool:
    obj = stack.get("hvh", name)
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@dataclass
class ExtraHost:
    """A host beyond the shared two, with an agent of its own, for one test: it can be
    killed whole (libvirtd and every QEMU in its namespaces, and its agent) and revived.

    Its agent runs the shared agents' command line pointed at it. Numbered after the shared
    hosts, so its name cannot clash with theirs. With `lxc` the agent manages the host's
    libvirt LXC driver instead (hypervisor type lxc; the QEMU-only options are unused).
    """

    stack: Stack
    state: Path
    numa_cells: int = 1
    lxc: bool = False
    hugepages: bool = False
    """Mount a hugetlbfs for huge-page guests (`start_hosts(hugepages=True)`)."""
    rootfs_dir: Path | None = None
    """The agent's --rootfs-dir, where containers' root filesystems may be."""
    kubeconfig: Path | None = None
    """The agent's, if not the stack's (e.g. through a `TcpProxy` a test cuts)."""
    host: LocalHost | None = None
    agent: ManagedProcess | None = None

    @property
    def name(self) -> str:
        assert self.host is not None
        return self.host.name

    def start(self) -> ExtraHost:
        index = len(self.stack.hosts) + 1
        self.host = hosts.start_hosts(
            1,
            state_dir=self.state,
            first_index=index,
            numa_cells=self.numa_cells,
            lxc=self.lxc,
            hugepages=self.hugepages,
        )[0]
        if self.agent is None:
            agent_state = self.state / "agent"
            agent_state.mkdir(exist_ok=True)
            template = next(iter(self.stack.agent_options.values()))
            options = replace(
                template,
                host=self.host.name,
                libvirt_uri=self.host.lxc_uri if self.lxc else self.host.uri,
                state_dir=agent_state,
                image_dir=None,
                metrics_port=free_ports(1)[0],
                domain_type="lxc" if self.lxc else template.domain_type,
                qemu_conf=self.host.root / "etc" / "qemu.conf",
                rootfs_dirs=() if self.rootfs_dir is None else (self.rootfs_dir,),
                kubeconfig=self.kubeconfig or template.kubeconfig,
            )
            self.agent = ManagedProcess(options.argv(), log=agent_state / "agent.log")
        self.agent.start()
        eventually(lambda: host_ready(self.stack, self.name), what=f"host {self.name} Ready")
        return self

    def kill(self) -> None:
        """The whole machine dies: agent first (SIGKILL), then libvirtd and its guests."""
        assert self.agent is not None
        self.agent.kill()
        hosts.stop_hosts(self.state)

    def remove(self) -> None:
        """Everything `start` started, also when it failed half-way."""
        if self.host is not None:
            if self.agent is not None:
                self.agent.stop()
                sys.stderr.write(f"\n--- {self.name} agent log (tail) ---\n{self.agent.tail()}")
            # Without its agent the HypervisorHost would only go NotReady and stay listed.
            self.stack.kubectl(
                "delete", "hvh", self.name, "--wait=true", "--timeout=60s", check=False
            )
        hosts.stop_hosts(self.state)


@dataclass
class VsphereHost:
    """A HypervisorHost for one ESXi host of a vcsim, managed by its own agent
    (`--libvirt-uri vsphere://...`), beside the shared QEMU hosts."""

    stack: Stack
    sim: Vcsim
    name: str
    esxi: str
    """The ESXi host of vcsim's inventory it manages, e.g. DC0_C0_H0."""
    state: Path
    agent: ManagedProcess | None = None

    def start(self) -> VsphereHost:
        self.state.mkdir(exist_ok=True)
        secret = self.state / "credentials"
        secret.mkdir(exist_ok=True)
        (secret / "username").write_text(self.sim.username)
        (secret / "password").write_text(self.sim.password)
        options = AgentOptions(
            self.name,
            self.sim.host_uri(self.esxi),
            self.stack.plane.kubeconfig,
            self.state,
            vsphere_credentials=secret,
            vsphere_insecure=True,
            shutdown_grace=10,
            lease_duration=8,
            self_fence_after=16,
            metrics_port=free_ports(1)[0],
        )
        self.agent = ManagedProcess(options.argv(), log=self.state / "agent.log").start()
        return self

    def ready(self) -> bool:
        return host_ready(self.stack, self.name)

    def remove(self) -> None:
        """Stop the agent and delete the HypervisorHost, so no later VM is placed on it."""
        if self.agent is not None:
            self.agent.stop()
            sys.stderr.write(f"\n--- {self.name} agent log (tail) ---\n{self.agent.tail()}")
        self.stack.kubectl("delete", "hvh", self.name, "--wait=true", "--timeout=60s", check=False)


@dataclass
class BmcProcess:
    """A BMC process for testbed hosts (`testbed.bmc`): sushy-tools' Redfish emulator or
    pyghmi's IPMI server on 127.0.0.1, whose systems' power is their hosts' life."""

    root: Path
    systems: list[bmc.System]
    users: dict[str, str]
    protocol: str = "redfish"
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BmcProcess:
        self.port = free_ports(1)[0]
        config = bmc.write_config(
            self.root / f"{self.protocol}.json",
            port=self.port,
            systems=self.systems,
            users=self.users,
            protocol=self.protocol,
        )
        self.process = ManagedProcess(bmc.argv(config), log=self.root / f"{self.protocol}.log")
        self.process.start()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
