"""Extra pieces for end-to-end tests on the shared stack (tests/e2e/conftest.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import ManagedProcess, eventually
from kubevisor.testbed import hosts
from kubevisor.testbed.controlplane import free_ports
from kubevisor.testbed.hosts import LocalHost
from kubevisor.testbed.vcsim import Vcsim


def host_ready(stack: Any, name: str) -> bool:
    obj = stack.get("hvh", name)
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def agent_argv(template: list[str], options: dict[str, str]) -> list[str]:
    """`template` (an agent's command line) with each `--option value` in `options` set."""
    argv = list(template)
    for option, value in options.items():
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    return argv


@dataclass
class ExtraHost:
    """A host beyond the shared two, with an agent of its own, for one test: it can be
    killed whole (libvirtd and every QEMU in its namespaces, and its agent) and revived.

    Its agent runs the shared agents' command line pointed at it. Numbered after the shared
    hosts, so its name cannot clash with theirs. With `lxc` the agent manages the host's
    libvirt LXC driver instead (hypervisor type lxc; the QEMU-only options are unused).
    """

    stack: Any
    state: Path
    numa_cells: int = 1
    lxc: bool = False
    hugepages: bool = False
    """Mount a hugetlbfs for huge-page guests (`start_hosts(hugepages=True)`)."""
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
            options = {
                "--host": self.host.name,
                "--libvirt-uri": self.host.lxc_uri if self.lxc else self.host.uri,
                "--state-dir": str(agent_state),
                "--image-dir": str(agent_state / "images"),
                "--metrics-port": str(free_ports(1)[0]),
            }
            if self.lxc:
                options["--domain-type"] = "lxc"
            template = next(iter(self.stack.agents.values())).argv
            self.agent = ManagedProcess(
                agent_argv(template, options), log=agent_state / "agent.log"
            )
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

    stack: Any
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
        argv = [
            sys.executable,
            "-m",
            "kubevisor.agent.main",
            "--host",
            self.name,
            "--libvirt-uri",
            self.sim.host_uri(self.esxi),
            "--vsphere-credentials",
            str(secret),
            "--vsphere-insecure",
            "--kubeconfig",
            str(self.stack.plane.kubeconfig),
            "--state-dir",
            str(self.state),
            "--image-dir",
            str(self.state / "images"),
            "--shutdown-grace",
            "10",
            "--lease-duration",
            "8",
            "--metrics-port",
            str(free_ports(1)[0]),
        ]
        self.agent = ManagedProcess(argv, log=self.state / "agent.log").start()
        return self

    def ready(self) -> bool:
        return host_ready(self.stack, self.name)

    def remove(self) -> None:
        """Stop the agent and delete the HypervisorHost, so no later VM is placed on it."""
        if self.agent is not None:
            self.agent.stop()
            sys.stderr.write(f"\n--- {self.name} agent log (tail) ---\n{self.agent.tail()}")
        self.stack.kubectl("delete", "hvh", self.name, "--wait=true", "--timeout=60s", check=False)
