"""Local hypervisor hosts: N libvirtd instances on this machine, for development and tests.

Used by `kubevisor dev hosts up|down|status` and by pytest fixtures. Each host runs in its
own mount, UTS and PID namespaces (see `kubevisor.testbed.hostinit`) with its own
/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt (all
under `state_dir/<name>/`), its own hostname and host UUID, a libvirt TCP port on 127.0.0.1
(`qemu+tcp://127.0.0.1:PORT/system`, no auth) and its own QEMU migration port range, so two
hosts can live-migrate a guest to each other over 127.0.0.1. A host started with
`numa_cells` > 1 sees this machine split into that many NUMA cells (`kubevisor.testbed.numa`).
A host started with `lxc=True` also runs system containers (`lxc+tcp://127.0.0.1:PORT/`,
libvirt's LXC driver in the same libvirtd; docs/lxc.md). A host started with
`hugepages=True` has a hugetlbfs of its own (`LocalHost.hugetlbfs`, mounted in its mount
namespace only), so its guests can be backed by the machine's 2 MiB huge pages
(`vm.nr_hugepages`, set by whoever starts it; docs/hugepages.md).

With `netns=True` a host also gets a network namespace of its own (`kubevisor.testbed.netns`,
docs/testbed-network.md): its libvirtd, so its QEMUs and their taps, run there, on an
underlay the testbed creates. Such a host listens for libvirt over TCP only at its underlay
address (`migration_uri`, for other hosts' peer-to-peer migrations) and receives migration
streams there (`migrate_uri`); this machine's clients, the agent among them, use its UNIX
socket, which its state directory holds (`uri`: `qemu+unix:///system?socket=...`).

Hosts outlive the process that started them: `start_hosts` returns once every host answers,
and `stop_hosts` (from any process) stops them from the pid files in `state_dir`. A host
keeps its UUID across restarts. Needs root, util-linux `unshare`, libvirt-daemon with the
QEMU driver, and a `libvirt-qemu` user (created here if missing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from kubevisor.testbed import netns as testbed_netns
from kubevisor.testbed import numa, ports, procfs
from kubevisor.testbed.localhost import LocalHost as LocalHost

NAME_PREFIX = "kubevisor-host-"
BASE_TCP_PORT = 16510
BASE_MIGRATION_PORT = 49300
MIGRATION_PORTS_PER_HOST = 50
NETNS_TCP_PORT = 16509
NETNS_MIGRATION_PORT = 49152
"""libvirt's own defaults: a host in a namespace of its own has every port to itself."""
SOCKET_PATH_MAX = 108  # sun_path, with its terminating NUL
REQUIRED_BINARIES = ("unshare", "mount", "libvirtd", "virtlogd", "qemu-system-x86_64")
LIBVIRT_LXC = Path("/usr/lib/libvirt/libvirt_lxc")
"""The LXC driver's per-container controller, from Debian's libvirt-daemon-driver-lxc."""
CONTAINER_CGROUPS = "/sys/fs/cgroup/*/machine/lxc-*.libvirt-lxc"
"""Where libvirt LXC puts each container's cgroup on this machine's cgroup v1 hierarchies."""
HOW_TO_INSTALL = (
    "run as root with util-linux, libvirt-daemon, libvirt-daemon-driver-qemu and "
    "qemu-system-x86 installed (hack/setup.sh does it)"
)
LXC_HOW_TO_INSTALL = "also install libvirt-daemon-driver-lxc (hack/setup.sh does it)"


class HostStartError(RuntimeError):
    """A host did not come up; the message names its log files."""


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run local hosts (empty when everything is there)."""
    missing = [] if os.geteuid() == 0 else ["root"]
    missing += [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    return missing


def missing_lxc_prerequisites() -> list[str]:
    """What this machine lacks to run LXC hosts, beyond `missing_prerequisites`."""
    return [] if LIBVIRT_LXC.is_file() else ["libvirt-daemon-driver-lxc"]


def ensure_qemu_user() -> None:
    """Create the `libvirt-qemu` user and group libvirtd's QEMU driver insists on.

    Our qemu.conf runs QEMU as root, but Debian's libvirtd still resolves this user at
    start-up and refuses to load the QEMU driver without it.
    """
    try:
        grp.getgrnam("libvirt-qemu")
    except KeyError:
        subprocess.run(["groupadd", "--system", "libvirt-qemu"], check=True)
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--gid",
                "libvirt-qemu",
                "--no-create-home",
                "--home-dir",
                "/var/lib/libvirt",
                "--shell",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ],
            check=True,
        )


def start_hosts(
    count: int,
    *,
    state_dir: Path,
    base_tcp_port: int | None = None,
    base_migration_port: int | None = None,
    first_index: int = 1,
    numa_cells: int = 1,
    lxc: bool = False,
    hugepages: bool = False,
    netns: bool = False,
    underlay: testbed_netns.Underlay | None = None,
    timeout: float = 60.0,
) -> list[LocalHost]:
    """Start `count` hosts numbered from `first_index` (reusing those already running) and
    wait until all answer.

    Host i listens on base_tcp_port + i - 1 and migrates on its own block of
    MIGRATION_PORTS_PER_HOST ports from base_migration_port. Without bases, a host keeps the
    ports it had in `state_dir` or gets free ones, so concurrent test runs cannot collide.
    `first_index` lets hosts in another `state_dir` join a cluster without clashing names.
    With `numa_cells` > 1, libvirt on each new host reports this machine split into that
    many NUMA cells; a host already running keeps the topology it started with. With
    `lxc`, new hosts can also run containers (LocalHost.lxc_uri); with `hugepages`, new
    hosts mount a hugetlbfs for huge-page guests; the same goes for both. With `netns`, new
    hosts get network namespaces of their own on the underlay of `state_dir` (or on
    `underlay`, e.g. another state directory's, to join its cluster); such a host listens
    on libvirt's default ports and host i has the underlay's i-th address.
    """
    missing = missing_prerequisites() + (missing_lxc_prerequisites() if lxc else [])
    missing += testbed_netns.missing_prerequisites() if netns or underlay else []
    if missing:
        raise HostStartError(f"missing {', '.join(missing)}: {HOW_TO_INSTALL}")
    ensure_qemu_user()
    if netns and underlay is None:
        underlay = testbed_netns.underlay_for(state_dir)
    hosts: list[LocalHost] = []
    taken: set[int] = set()
    for index in range(first_index, first_index + count):
        root = state_dir / f"{NAME_PREFIX}{index}"
        previous = _load(root / "host.json") if (root / "host.json").exists() else None
        keep = previous is not None and _running_pid(previous) is not None
        network = _network(previous if keep else None, underlay, index)
        if network is not None:
            tcp_port, migration_min = NETNS_TCP_PORT, NETNS_MIGRATION_PORT
        else:
            # A host that had a namespace had its ports to itself: no use on 127.0.0.1.
            previous = None if previous and previous.netns else previous
            tcp_port, migration_min = _local_ports(
                previous,
                index,
                base_tcp=base_tcp_port,
                base_migration=base_migration_port,
                taken=taken,
            )
        host = _configure(
            root,
            tcp_port=tcp_port,
            migration_min=migration_min,
            numa_cells=previous.numa_cells if previous and keep else numa_cells,
            lxc=previous.lxc if previous and keep else lxc,
            hugepages=previous.hugepages if previous and keep else hugepages,
            network=network,
        )
        running = _running_pid(host)
        hosts.append(dataclasses.replace(host, pid=running) if running else _spawn(host))
    deadline = time.monotonic() + timeout
    return [_wait_until_answering(host, deadline) for host in hosts]


def stop_hosts(state_dir: Path, *, timeout: float = 30.0) -> list[LocalHost]:
    """Stop every host under `state_dir`; return those that were running.

    Raises RuntimeError if a host's processes are still alive after `timeout`.
    """
    stopped = []
    for host in list_hosts(state_dir):
        if host.pid is None:
            continue
        namespace = procfs.namespace_of(host.pid)
        unshare = procfs.parent_pid(host.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(host.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while procfs.alive(host.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if procfs.alive(host.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(host.pid, signal.SIGKILL)
        while namespace and namespace_processes(namespace) and time.monotonic() < deadline:
            time.sleep(0.05)
        if unshare:
            procfs.reap_if_child(unshare)
        if namespace and namespace_processes(namespace):
            raise RuntimeError(f"{host.name}: processes left: {namespace_processes(namespace)}")
        if host.lxc:
            remove_empty_container_cgroups()
        host.pid_file.unlink(missing_ok=True)
        stopped.append(host)
    # After the processes, so nothing runs in a namespace whose file goes.
    namespaces = [host.netns for host in list_hosts(state_dir) if host.netns]
    testbed_netns.remove_all(testbed_netns.underlay_for(state_dir), namespaces)
    return stopped


def remove_empty_container_cgroups() -> list[Path]:
    """Remove the cgroups libvirt LXC left behind for containers that died with their host.

    libvirt removes a container's cgroups when the container stops, not when the host's
    PID namespace ends under it. The kernel refuses to remove a cgroup that still has
    processes, so a running container of another host keeps its own (one caught in the
    instant between libvirt creating its cgroup and moving its first process in would not).
    """
    removed = []
    for group in sorted(Path("/").glob(CONTAINER_CGROUPS.lstrip("/"))):
        with contextlib.suppress(OSError):
            group.rmdir()
            removed.append(group)
    return removed


def list_hosts(state_dir: Path) -> list[LocalHost]:
    """Every host configured under `state_dir`, with `pid` set when it is running."""
    hosts = []
    for config in sorted(state_dir.glob(f"{NAME_PREFIX}*/host.json"), key=_host_order):
        host = _load(config)
        hosts.append(dataclasses.replace(host, pid=_running_pid(host)))
    return hosts


def namespace_processes(pid_namespace: str) -> list[int]:
    """Live (non-zombie) processes whose PID namespace is `pid_namespace` ("pid:[N]")."""
    return procfs.namespace_processes(pid_namespace)


def host_pid_namespace(host: LocalHost) -> str | None:
    """The PID namespace ("pid:[N]") of a running host, for checking it left nothing behind."""
    return procfs.namespace_of(host.pid) if host.pid else None


# --- configuration -------------------------------------------------------------------------


def _local_ports(
    previous: LocalHost | None,
    index: int,
    *,
    base_tcp: int | None,
    base_migration: int | None,
    taken: set[int],
) -> tuple[int, int]:
    """(libvirt TCP port, first migration port) of host `index` on 127.0.0.1: from the
    bases when given, else what it had (`previous`) or free ones; adds them to `taken`."""
    if base_tcp is not None:
        tcp_port = base_tcp + index - 1
    else:
        tcp_port = previous.tcp_port if previous else ports.free_port(taken)
    if base_migration is not None:
        migration_min = base_migration + (index - 1) * MIGRATION_PORTS_PER_HOST
    else:
        migration_min = previous.migration_ports[0] if previous else _free_range(taken)
    taken |= {tcp_port, *range(migration_min, migration_min + MIGRATION_PORTS_PER_HOST)}
    return tcp_port, migration_min


def _network(
    kept: LocalHost | None, underlay: testbed_netns.Underlay | None, index: int
) -> tuple[str, str] | None:
    """(namespace, underlay address) of host `index`: a running host (`kept`) keeps what it
    has; a new one gets a namespace on `underlay`, if any."""
    if kept is not None:
        return (kept.netns, kept.underlay_address or "") if kept.netns else None
    return testbed_netns.attach_host(underlay, index) if underlay is not None else None


def _configure(
    root: Path,
    *,
    tcp_port: int,
    migration_min: int,
    numa_cells: int,
    lxc: bool,
    hugepages: bool = False,
    network: tuple[str, str] | None = None,
) -> LocalHost:
    name = root.name
    previous = _load(root / "host.json") if (root / "host.json").exists() else None
    host = LocalHost(
        name=name,
        hostname=name,
        uuid=previous.uuid if previous else str(uuidlib.uuid4()),
        tcp_port=tcp_port,
        migration_ports=(migration_min, migration_min + MIGRATION_PORTS_PER_HOST - 1),
        root=root,
        numa_cells=numa_cells,
        lxc=lxc,
        hugepages=hugepages,
        netns=network[0] if network else None,
        underlay_address=network[1] if network else None,
    )
    for sub in ("etc", "run", "lib", "log", "cache"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    host.migration_tls_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "name": host.name,
        "hostname": host.hostname,
        "uuid": host.uuid,
        "tcp_port": host.tcp_port,
        "migration_ports": list(host.migration_ports),
        "root": str(root.resolve()),
        "numa_cells": numa_cells,
        "sysfs_node": str(host.sysfs_node.resolve()) if numa_cells > 1 else None,
        "lxc": lxc,
        "hugetlbfs": str(host.hugetlbfs.resolve()) if hugepages else None,
        "netns": host.netns,
        "underlay_address": host.underlay_address,
    }
    system_hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
    (root / "hosts").write_text(f"{system_hosts.rstrip()}\n127.0.1.1 {host.hostname}\n")
    (root / "host.json").write_text(json.dumps(config, indent=2) + "\n")
    # A host in a namespace listens only at its underlay address; this machine's clients
    # use its UNIX socket (root-only by its mode) with no polkit in between. Every host's
    # socket is open so: an agent that serves VNC displays needs one (`unix_uri`).
    unix = {"auth_unix_rw": "none", "auth_unix_ro": "none"}
    _write_conf(
        root / "etc" / "libvirtd.conf",
        listen_tls=0,
        listen_tcp=1,
        listen_addr=host.underlay_address or "127.0.0.1",
        tcp_port=str(host.tcp_port),
        auth_tcp="none",
        **unix,
        host_uuid=host.uuid,
        log_outputs="3:file:/var/log/libvirt/libvirtd.log",
    )
    qemu: dict[str, str | int | list[str]] = {
        "user": "root",
        "group": "root",
        "security_driver": "none",
        "cgroup_controllers": [],
        "migration_port_min": host.migration_ports[0],
        "migration_port_max": host.migration_ports[1],
        "migrate_tls_x509_cert_dir": str(host.migration_tls_dir.resolve()),
    }
    if hugepages:
        host.hugetlbfs.mkdir(exist_ok=True)
        qemu["hugetlbfs_mount"] = str(host.hugetlbfs.resolve())
    _write_conf(root / "etc" / "qemu.conf", **qemu)
    _write_conf(root / "etc" / "virtlogd.conf", log_outputs="3:file:/var/log/libvirt/virtlogd.log")
    return host


def _write_conf(path: Path, **settings: str | int | list[str]) -> None:
    """A libvirt config file; JSON quoting of strings and lists is valid libvirt syntax."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    path.write_text("# Written by kubevisor.testbed.hosts.\n" + "\n".join(lines) + "\n")


def _load(config: Path) -> LocalHost:
    data = json.loads(config.read_text())
    low, high = data["migration_ports"]
    return LocalHost(
        name=data["name"],
        hostname=data["hostname"],
        uuid=data["uuid"],
        tcp_port=int(data["tcp_port"]),
        migration_ports=(int(low), int(high)),
        root=config.parent,
        numa_cells=int(data.get("numa_cells", 1)),
        lxc=bool(data.get("lxc", False)),
        hugepages=bool(data.get("hugetlbfs")),
        netns=data.get("netns"),
        underlay_address=data.get("underlay_address"),
    )


def _host_order(config: Path) -> tuple[int, str]:
    suffix = config.parent.name.removeprefix(NAME_PREFIX)
    return (int(suffix) if suffix.isdigit() else 0, suffix)


# --- processes -----------------------------------------------------------------------------


def _spawn(host: LocalHost) -> LocalHost:
    for port in () if host.netns else (host.tcp_port, *host.migration_ports):
        if not ports.port_free(port):
            raise HostStartError(f"{host.name}: port {port} on 127.0.0.1 is in use")
    if len(str(host.socket).encode()) >= SOCKET_PATH_MAX:
        raise HostStartError(
            f"{host.name}: its socket {host.socket} is longer than a UNIX socket path can be "
            f"({SOCKET_PATH_MAX - 1} bytes); use a shorter state directory"
        )
    # Stale sockets and pid files from an unclean stop would make libvirtd refuse to start.
    shutil.rmtree(host.root / "run", ignore_errors=True)
    (host.root / "run").mkdir()
    if host.numa_cells > 1:
        # Here, not in _configure: a running host has this directory mounted.
        numa.write_tree(host.sysfs_node, host.numa_cells)
    argv = [
        *(testbed_netns.command(host.netns, []) if host.netns else []),
        shutil.which("unshare") or "unshare",
        "--mount",
        "--uts",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--propagation",
        "private",
        sys.executable,
        "-m",
        "kubevisor.testbed.hostinit",
        str(host.config_file.resolve()),
    ]
    log = os.open(host.init_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        # posix_spawn rather than Popen: the host must outlive us, and no Popen object is
        # left behind to warn about a child still running when it is garbage-collected.
        unshare = os.posix_spawn(
            argv[0],
            argv,
            {**os.environ, "PYTHONPATH": _package_root()},
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        init = procfs.child_of(unshare)
        if init:
            host.pid_file.write_text(f"{init}\n")
            return dataclasses.replace(host, pid=init)
        if not procfs.alive(unshare):
            break
        time.sleep(0.02)
    procfs.reap_if_child(unshare)
    raise HostStartError(f"{host.name}: unshare did not start its init; see {host.init_log}")


def _wait_until_answering(host: LocalHost, deadline: float) -> LocalHost:
    while time.monotonic() < deadline:
        if host.pid is None or not procfs.alive(host.pid):
            break
        if _answers(host):
            return host
        time.sleep(0.1)
    raise HostStartError(
        f"{host.name} did not answer on {host.uri}; see {host.init_log} and "
        f"{host.log_dir / 'libvirtd.log'}"
    )


def _answers(host: LocalHost) -> bool:
    try:
        if host.netns:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(1.0)
                probe.connect(str(host.socket))
        else:
            with socket.create_connection(("127.0.0.1", host.tcp_port), timeout=1.0):
                pass
    except OSError:
        return False
    result = subprocess.run(
        ["virsh", "-c", host.uri, "hostname"], capture_output=True, text=True, timeout=30
    )
    return result.returncode == 0 and result.stdout.strip() == host.hostname


def _running_pid(host: LocalHost) -> int | None:
    """PID of the host's init if it is running (checked by its command line, not just the pid)."""
    try:
        pid = int(host.pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if str(host.config_file.resolve()).encode() in cmdline and not procfs.is_zombie(pid):
        return pid
    return None


def _free_range(taken: set[int]) -> int:
    try:
        return ports.free_range(taken, MIGRATION_PORTS_PER_HOST)
    except ports.NoFreePorts as error:
        raise HostStartError(f"no migration ports: {error}") from error


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def format_hosts(hosts: Sequence[LocalHost]) -> Iterator[str]:
    """Lines for `kubevisor dev hosts status`: name, state, URI, UUID (and for a host with a
    network namespace, the namespace and the underlay address)."""
    for host in hosts:
        state = f"running (pid {host.pid})" if host.pid else "stopped"
        network = f"\tnetns {host.netns} {host.underlay_address}" if host.netns else ""
        yield f"{host.name}\t{state}\t{host.uri}\t{host.uuid}{network}"
