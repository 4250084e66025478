"""vcsim, the vSphere API simulator (built by hack/vcsim/build.sh), as a local vCenter.

Its default inventory is one datacenter DC0 with a standalone host DC0_H0 and a cluster
DC0_C0 of three hosts DC0_C0_H0..H2, each with a few VMs of its own, and one shared
datastore. vcsim listens on a port the kernel picks and prints its SDK URL when ready,
so there is no port race and nothing to poll.
"""

from __future__ import annotations

import contextlib
import dataclasses
import selectors
import signal
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyVim import connect as vim_connect
from pyVmomi import vmodl

USERNAME = "kubevisor"
PASSWORD = "vcsim-password"


@dataclasses.dataclass(frozen=True)
class Vcsim:
    """One running simulator."""

    process: subprocess.Popen[bytes]
    server: str  # host:port
    username: str
    password: str

    def host_uri(self, host: str) -> str:
        """The vSphere driver's URI for one host of the simulator (e.g. "DC0_C0_H0")."""
        return f"vsphere://{self.server}/{urllib.parse.quote(host)}"

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """A pyvmomi session of its own (its ServiceContent): vSphere as others see it."""
        host, port = self.server.rsplit(":", 1)
        si = vim_connect.SmartConnect(
            host=host,
            port=int(port),
            user=self.username,
            pwd=self.password,
            disableSslCertValidation=True,
        )
        try:
            yield si.RetrieveContent()
        finally:
            vim_connect.Disconnect(si)

    def vm(self, uuid: str) -> VmView | None:
        """The VM with that instance UUID as vSphere has it; None if there is none."""
        with self.session() as content:
            vm = content.searchIndex.FindByUuid(None, uuid, True, True)
            if vm is None:
                return None
            try:
                hardware = vm.config.hardware
                return VmView(
                    bios_uuid=vm.config.uuid,
                    memory_mib=hardware.memoryMB,
                    vcpus=hardware.numCPU,
                    host=vm.runtime.host.name,
                    power_state=str(vm.runtime.powerState),
                )
            except vmodl.fault.ManagedObjectNotFound:
                return None  # deleted between the search and the reads


@dataclasses.dataclass(frozen=True)
class VmView:
    """One VM's facts as vSphere reports them (for tests to check a driver against)."""

    bios_uuid: str
    memory_mib: int
    vcpus: int
    host: str
    power_state: str  # poweredOn, poweredOff, suspended


def start(bin_dir: Path, *, log: Path, port: int = 0, timeout: float = 30.0) -> Vcsim:
    """Start vcsim on loopback `port` (0: one the kernel picks); return once it serves (or
    raise with its log). A fresh inventory each time, even on the same port."""
    with log.open("ab") as err:
        process = subprocess.Popen(
            [
                str(bin_dir / "vcsim"),
                "-l",
                f"127.0.0.1:{port}",
                "-username",
                USERNAME,
                "-password",
                PASSWORD,
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
    line = process.stdout.readline().decode().strip() if ready else ""
    url = urllib.parse.urlsplit(line)
    if not url.hostname or not url.port:
        stop(Vcsim(process, "", "", ""))
        raise RuntimeError(f"vcsim printed no URL within {timeout}s ({line!r}); see {log}")
    return Vcsim(process, f"{url.hostname}:{url.port}", USERNAME, PASSWORD)


def stop(sim: Vcsim, *, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    sim.process.send_signal(signal.SIGTERM)
    try:
        sim.process.wait(timeout)
    except subprocess.TimeoutExpired:
        sim.process.kill()
        sim.process.wait()
    if sim.process.stdout is not None:
        sim.process.stdout.close()
