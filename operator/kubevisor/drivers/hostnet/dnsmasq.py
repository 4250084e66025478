"""One dnsmasq (Debian's dnsmasq-base) per network per host, serving static DHCP only.

Each runs daemonised in its network's DHCP namespace (so it outlives an agent restart and is
adopted by the next one), with its files in `<state dir>/dhcp/<namespace>/`: `hosts` (MAC,IP
of this host's VMs: `--dhcp-hostsfile`), `leases`, `pid` and `log`. A change of hosts
rewrites `hosts` and sends SIGHUP (dnsmasq re-reads it and keeps its leases); a change of
anything else restarts it. `--dhcp-range=<net>,static` hands out no dynamic address and
`--dhcp-ignore=tag:!known` keeps it silent to clients it has no entry for, so the servers of
two hosts on one overlay never answer for each other's VMs.

dnsmasq drops to its own user (`dnsmasq` on Debian) and re-reads `hosts` as that user on
SIGHUP, so the state directory's parents must be searchable by others (0711 or 0755);
`Supervisor` checks that once and says which directory is not.

What a running dnsmasq serves is read back from its command line (`/proc/PID/cmdline`) and
its hosts file, so observing trusts the process, not a note of what was started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import stat
import subprocess
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from kubevisor.core.network.hostplan import DHCP_INTERFACE, DhcpHost, DhcpServer
from kubevisor.drivers.hostnet.base import HostNetworkError

DNSMASQ = "dnsmasq"
LEASE_SECONDS = 86400
"""As Neutron's dhcp_lease_duration: renewals are cheap, addresses never change anyway."""
NETNS_DIR = Path("/run/netns")


def argv(server: DhcpServer, files: Path) -> list[str]:
    """dnsmasq's command line for `server`, with its files in `files`."""
    subnet = server.subnet
    router = f"option:router,{server.gateway}" if server.gateway else "3"
    dns = ",".join(str(a) for a in server.dns_servers)
    args = [
        DNSMASQ,
        "--conf-file=/dev/null",
        "--port=0",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        f"--interface={DHCP_INTERFACE}",
        "--except-interface=lo",
        f"--dhcp-range={subnet.network_address},static,{subnet.netmask},{LEASE_SECONDS}s",
        "--dhcp-ignore=tag:!known",
        f"--dhcp-option={router}",
        f"--dhcp-option=option:dns-server,{dns}" if dns else "--dhcp-option=6",
    ]
    if server.mtu is not None:
        # Forced: few clients ask for option 26, and a guest on 1500 loses big packets.
        args.append(f"--dhcp-option-force=option:mtu,{server.mtu}")
    return [
        *args,
        f"--dhcp-hostsfile={files / 'hosts'}",
        f"--dhcp-leasefile={files / 'leases'}",
        f"--pid-file={files / 'pid'}",
        f"--log-facility={files / 'log'}",
    ]


def parse(namespace: str, args: Sequence[str], hosts: frozenset[DhcpHost]) -> DhcpServer:
    """The server a dnsmasq started by `argv` serves (the inverse of `argv`)."""
    options = [
        a.split("=", 1)[1] for a in args if a.startswith(("--dhcp-option=", "--dhcp-option-force="))
    ]
    ranges = [a.split("=", 1)[1].split(",") for a in args if a.startswith("--dhcp-range=")]
    if len(ranges) != 1:
        raise HostNetworkError(f"dnsmasq in {namespace} has {len(ranges)} DHCP ranges, not one")
    network, _, netmask, *_ = ranges[0]
    gateway: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    mtu: int | None = None
    for option in options:
        name, _, value = option.partition(",")
        if name == "option:router":
            gateway = IPv4Address(value)
        elif name == "option:dns-server":
            dns = tuple(IPv4Address(v) for v in value.split(","))
        elif name == "option:mtu":
            mtu = int(value)
    return DhcpServer(
        namespace=namespace,
        subnet=IPv4Network(f"{network}/{netmask}"),
        gateway=gateway,
        dns_servers=dns,
        mtu=mtu,
        hosts=hosts,
    )


def hosts_file(hosts: frozenset[DhcpHost]) -> str:
    return "".join(f"{h.mac},{h.ip}\n" for h in sorted(hosts, key=lambda h: (h.ip, h.mac)))


def parse_hosts(text: str) -> frozenset[DhcpHost]:
    found = set()
    for line in text.splitlines():
        mac, _, ip = line.strip().partition(",")
        if mac and ip:
            found.add(DhcpHost(mac, ipaddress.IPv4Address(ip)))
    return frozenset(found)


def unreachable_parent(path: Path) -> Path | None:
    """The first directory above and including `path` that others may not search."""
    for directory in [path, *path.parents]:
        if directory.exists() and not directory.stat().st_mode & stat.S_IXOTH:
            return directory
    return None


class Supervisor:
    """Starts, reloads, stops and finds the dnsmasq processes under `root` (synchronous:
    the Linux driver calls it from its worker thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self, namespace: str) -> Path:
        return self.root / namespace

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        blocked = unreachable_parent(self.root)
        if blocked is not None:
            mode = stat.S_IMODE(blocked.stat().st_mode)
            raise HostNetworkError(
                f"dnsmasq re-reads its hosts file as its own user, but {blocked} (mode "
                f"{mode:04o}) is not searchable by others: use a state directory whose "
                "parents are 0711 or 0755"
            )

    def observe(self) -> dict[str, DhcpServer]:
        """The servers whose dnsmasq is alive, by namespace."""
        found: dict[str, DhcpServer] = {}
        if not self.root.is_dir():
            return found
        for files in sorted(self.root.iterdir()):
            args = self._cmdline(files)
            if args is None:
                continue
            hosts_path = files / "hosts"
            hosts = parse_hosts(hosts_path.read_text()) if hosts_path.exists() else frozenset()
            found[files.name] = parse(files.name, args, hosts)
        return found

    def namespaces(self) -> set[str]:
        """Every namespace with a files directory (running or not)."""
        return {p.name for p in self.root.iterdir()} if self.root.is_dir() else set()

    def start(self, server: DhcpServer) -> None:
        """Start (or restart: leases are kept) the namespace's dnsmasq."""
        self.stop(server.namespace, forget=False)
        files = self.files(server.namespace)
        files.mkdir(mode=0o755, exist_ok=True)
        self._write_hosts(server)
        netns = NETNS_DIR / server.namespace
        command = ["nsenter", f"--net={netns}", "--", *argv(server, files)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise HostNetworkError(
                f"dnsmasq in {server.namespace} did not start: {done.stderr.strip()}"
            )

    def reload(self, server: DhcpServer) -> None:
        self._write_hosts(server)
        pid = self._pid(self.files(server.namespace))
        if pid is None:
            raise HostNetworkError(f"dnsmasq in {server.namespace} is not running")
        os.kill(pid, signal.SIGHUP)

    def stop(self, namespace: str, *, forget: bool) -> None:
        """Stop the namespace's dnsmasq; `forget` also drops its files (leases too)."""
        files = self.files(namespace)
        pid = self._pid(files)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.005)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if forget and files.is_dir():
            for path in files.iterdir():
                path.unlink()
            files.rmdir()

    def _write_hosts(self, server: DhcpServer) -> None:
        files = self.files(server.namespace)
        staged = files / "hosts.new"
        staged.write_text(hosts_file(server.hosts))
        staged.chmod(0o644)
        staged.replace(files / "hosts")

    def _pid(self, files: Path) -> int | None:
        return self._running(files)[0]

    def _cmdline(self, files: Path) -> list[str] | None:
        return self._running(files)[1]

    def _running(self, files: Path) -> tuple[int | None, list[str] | None]:
        """The pid and command line of the dnsmasq owning `files`, if it is alive."""
        try:
            pid = int((files / "pid").read_text().strip())
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None, None
        args = [a.decode() for a in raw.split(b"\0") if a]
        if not args or Path(args[0]).name != DNSMASQ or f"--pid-file={files / 'pid'}" not in args:
            return None, None
        return pid, args


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text()
        return status.rsplit(")", 1)[1].split()[0] != "Z"
    return False
