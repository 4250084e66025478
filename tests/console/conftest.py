"""A console stack of its own: a private control plane with the aggregation layer, one
libvirtd host, the controller serving the console API and an agent serving consoles.

Private, because an APIService whose server is down breaks discovery for every other
test on a shared control plane, and because this agent must not meet other tests' VMs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import yaml

from harness import REPO, ManagedProcess, controlplane_bin, eventually, require
from kubevisor.testbed import controlplane, hosts
from kubevisor.testbed.commands import AgentOptions, ControllerOptions
from kubevisor.testbed.controlplane import free_ports
from kubevisor.testbed.guest import Guest

from .pki import Pki
from .stack import (
    AGENT_NAME,
    HOST_INDEX,
    NAMESPACE,
    SYSTEM,
    ConsoleStack,
    aggregation,
    available,
    global_address,
    vm,
)


@pytest.fixture(scope="module")
def console_stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_guest: Guest
) -> Iterator[ConsoleStack]:
    bin_dir = controlplane_bin()
    require(
        bin_dir is not None,
        what="the local kube-apiserver + etcd",
        how="build them with hack/controlplane/build.sh (or run `make test`)",
    )
    missing = hosts.missing_prerequisites()
    require(
        not missing, what=f"local libvirtd hosts ({', '.join(missing)})", how=hosts.HOW_TO_INSTALL
    )
    address = global_address()
    require(
        address is not None,
        what="an IPv4 address outside loopback (Endpoints may not point at 127.0.0.1)",
        how="run on a machine with a network interface",
    )
    assert bin_dir is not None and address is not None
    root = tmp_path_factory.mktemp("console")
    pki = Pki(root / "pki")
    agent_cert, agent_key = pki.issue(AGENT_NAME, server=True, addresses=())
    api_cert, api_key = pki.issue(
        "kubevisor-api.kubevisor-system.svc", server=True, addresses=("127.0.0.1", address)
    )
    client_cert, client_key = pki.issue("kubevisor-api", server=False)
    plane = controlplane.start(
        bin_dir=bin_dir,
        state_dir=root / "plane",
        crd_paths=sorted((REPO / "deploy" / "crds").glob("*.yaml")),
    )
    processes: list[ManagedProcess] = []
    host_state = root / "hosts"
    try:
        plane.kubectl("create", "namespace", SYSTEM)
        plane.kubectl("create", "namespace", NAMESPACE)
        host = hosts.start_hosts(1, state_dir=host_state, first_index=HOST_INDEX)[0]
        console_port, api_port, agent_metrics, controller_metrics = free_ports(4)
        agent_state = root / "agent"
        agent_state.mkdir()
        agent_url = f"https://127.0.0.1:{console_port}"
        agent = ManagedProcess(
            AgentOptions(
                host.name,
                host.unix_uri,  # the VNC display's socket is passed as a file descriptor
                plane.kubeconfig,
                agent_state,
                domain_type="qemu",
                guest=tiny_guest,
                shutdown_grace=5,
                lease_duration=8,
                metrics_port=agent_metrics,
                cgroup_controllers="",
                extra=[
                    *("--console-port", str(console_port), "--console-address", "127.0.0.1"),
                    *("--console-cert", str(agent_cert), "--console-key", str(agent_key)),
                    *("--console-client-ca", str(pki.ca), "--console-advertise", agent_url),
                    # libvirtd's /var/log/libvirt is the host's own, under its root.
                    *("--qemu-log-dir", str(host.log_dir / "qemu")),
                ],
            ).argv(),
            log=root / "agent.log",
        )
        controller = ManagedProcess(
            ControllerOptions(
                plane.kubeconfig,
                metrics_port=controller_metrics,
                extra=[
                    *("--console-api-port", str(api_port), "--console-api-address", address),
                    *("--console-api-cert", str(api_cert), "--console-api-key", str(api_key)),
                    # No --requestheader-client-ca: the CA and header names come from
                    # kube-system/extension-apiserver-authentication, as in a real cluster.
                    *("--console-client-cert", str(client_cert)),
                    *("--console-client-key", str(client_key)),
                    *("--console-agent-ca", str(pki.ca)),
                    *("--console-agent-server-name", AGENT_NAME),
                ],
            ).argv(),
            log=root / "controller.log",
        )
        processes += [agent.start(), controller.start()]
        plane.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump_all(aggregation(pki, address, api_port))
        )
        plane.kubectl("apply", "-f", str(REPO / "deploy" / "manifests" / "console-rbac.yaml"))
        stack = ConsoleStack(plane, host, pki, agent_url, address, api_port, controller, agent)
        eventually(lambda: available(plane), timeout=60, what="the console APIService Available")
        eventually(
            lambda: (
                ((stack.get("hvh", host.name) or {}).get("status") or {}).get("consoleEndpoint")
                == agent_url
            ),
            timeout=60,
            what="the host's status.consoleEndpoint",
        )
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(vm("guest")))
        running = eventually(
            lambda: (
                obj
                if ((obj := stack.get("vm", "guest", "-n", NAMESPACE)) or {})
                .get("status", {})
                .get("phase")
                == "Running"
                else None
            ),
            timeout=120,
            what="the VM Running",
        )
        stack.vm_uid = running["metadata"]["uid"]
        yield stack
    finally:
        plane.kubectl(
            "delete", "vm", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=60s", check=False
        )
        for process in reversed(processes):
            process.stop()
        for process in processes:
            sys.stderr.write(f"\n--- {process.log.name} (tail) ---\n{process.tail()}")
        hosts.stop_hosts(host_state)
        controlplane.stop(plane.state_dir)
