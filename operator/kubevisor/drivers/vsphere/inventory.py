"""The vSphere driver's blocking reads of vCenter's inventory, run in worker threads.

Logging in, finding the host and a VM, listing the host's VMs in one PropertyCollector
call, and waiting for a task. They hold no state of the driver: `driver.VsphereHypervisor`
passes the session and host it holds.
"""

from __future__ import annotations

import dataclasses
import ssl
from typing import Any

from pyVim import connect as vim_connect
from pyVim import task as vim_task
from pyVmomi import vim, vmodl

from kubevisor.drivers import base
from kubevisor.drivers.vsphere import mapping

VM_PROPERTIES = ["name", "config.instanceUuid", "runtime.powerState", "runtime.host"]


@dataclasses.dataclass(frozen=True)
class Session:
    """One login to the vCenter, and the host the driver drives in it."""

    si: vim.ServiceInstance
    host: vim.HostSystem


def login(
    location: mapping.Location, credentials: tuple[str, str], *, verify_tls: bool
) -> tuple[vim.ServiceInstance, vim.HostSystem]:
    """Log in to the vCenter and find the host `location` names."""
    hostname, port = location.address
    username, password = credentials
    context = ssl.create_default_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    si = vim_connect.SmartConnect(
        host=hostname, port=port, user=username, pwd=password, sslContext=context
    )
    return si, find_host(si, location)


def find_host(si: vim.ServiceInstance, location: mapping.Location) -> vim.HostSystem:
    """The host `location` names; PermanentError if the vCenter has none of that name."""
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    try:
        for host in view.view:
            if host.name == location.host:
                return host
    finally:
        view.Destroy()
    raise base.PermanentError(f"vCenter {location.server} has no host named {location.host!r}")


def domains(si: vim.ServiceInstance, host: vim.HostSystem) -> dict[str, base.DomainInfo]:
    """Every VM on `host` by UUID (default reasons), in one PropertyCollector call.

    The view holds the VMs of the host's cluster (or standalone compute resource),
    not of the whole vCenter; `runtime.host` picks this host's.
    """
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(host.parent, [vim.VirtualMachine], True)
    collector = vmodl.query.PropertyCollector
    try:
        spec = collector.FilterSpec(
            objectSet=[
                collector.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        collector.TraversalSpec(
                            name="view", path="view", skip=False, type=vim.view.ContainerView
                        )
                    ],
                )
            ],
            propSet=[collector.PropertySpec(type=vim.VirtualMachine, pathSet=VM_PROPERTIES)],
        )
        contents = content.propertyCollector.RetrieveContents([spec])
    finally:
        view.Destroy()
    found = {}
    for item in contents:
        props = {p.name: p.val for p in item.propSet}
        uuid, on_host = props.get("config.instanceUuid"), props.get("runtime.host")
        # runtime.host, not host.vm: vcsim's vMotion moves only the former.
        if not uuid or on_host is None or on_host._moId != host._moId:
            continue
        found[uuid] = mapping.domain_info(
            uuid=uuid, name=props.get("name", ""), power_state=props["runtime.powerState"]
        )
    return found


def find_vm(
    si: vim.ServiceInstance, host: vim.HostSystem | None, uuid: str, *, uri: str
) -> vim.VirtualMachine:
    """The VM with that instance UUID on `host` (None: not connected); DomainNotFound if
    none is there."""
    vm = si.RetrieveContent().searchIndex.FindByUuid(None, uuid, True, True)
    try:
        on = vm.runtime.host if vm is not None else None
    except vmodl.fault.ManagedObjectNotFound:
        on = None  # deleted since the search
    if on is None or host is None:
        raise base.DomainNotFound(f"no VM {uuid} on {uri}")
    if on._moId != host._moId:
        raise base.DomainNotFound(f"VM {uuid} is on {on.name}, not {uri}")
    return vm


def wait(si: vim.ServiceInstance, task: vim.Task) -> Any:
    """Block until the task ends; raises its fault if it failed."""
    vim_task.WaitForTask(task, si=si)
    return task.info.result
