"""One domain's `virsh domstats` record and the tail of its QEMU log, for
`LibvirtHypervisor.domain_diagnostics` (`kubevisor diagnose`).

libvirt has no API for a domain's log: libvirtd (through virtlogd) writes QEMU's
stderr and its own lines about the domain to `LOG_DIR/NAME.log` on the host, by default
/var/log/libvirt/qemu for qemu:///system and /var/log/libvirt/lxc for lxc:///system. The
agent reads it there (`log_dir`, the agent's --qemu-log-dir), where it sees the host's
/var/log; without one, the bundle says where to look.
"""

from __future__ import annotations

from pathlib import Path

import libvirt

from kubevisor.drivers import logtail

DEFAULT_LOG_DIRS = {"qemu": Path("/var/log/libvirt/qemu"), "lxc": Path("/var/log/libvirt/lxc")}


def default_log_dir(uri: str) -> Path | None:
    """Where libvirtd at `uri` writes its domains' logs, when it runs on this host with
    the default configuration (qemu:///system, lxc:///); None for any other URI."""
    scheme, _, rest = uri.partition("://")
    local = rest.startswith("/")  # no host part: this machine
    return DEFAULT_LOG_DIRS.get(scheme) if local and "session" not in rest else None


def domstats(domain: libvirt.virDomain) -> tuple[str, str | None, str]:
    """(the domain's name, its statistics record as `key=value` lines or None, why not)."""
    name = str(domain.name())
    try:
        found = domain.connect().domainListGetStats([domain], 0, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        return name, None, f"this libvirt driver has no domain statistics: {error}"
    record = found[0][1] if found else {}
    return name, "".join(f"{key}={value}\n" for key, value in record.items()), ""


async def qemu_log(log_dir: Path | None, name: str, lines: int) -> tuple[str | None, str]:
    """(the last `lines` lines of the domain's log or None, why not)."""
    if log_dir is None:
        return None, (
            "the agent was not told where this host's libvirt writes domain logs "
            "(--qemu-log-dir); on the host: /var/log/libvirt/qemu/" + name + ".log"
        )
    path = log_dir / f"{name}.log"
    return await logtail.read(
        path, lines, absent=f"no log at {path} (the domain has not been started on this host)"
    )
