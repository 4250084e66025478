"""Network namespaces standing in for two hosts, their underlay and their guests.

`lab` builds, inside namespaces it creates and removes (every name starts with a per-test
prefix; every address is private and lives only there):

- `<p>ul`: the underlay, with a bridge `ul` (tunnel endpoints 172.31.255.1 and .2) and a
  bridge `pv` standing in for the physical network of a provider network;
- `<p>h1`, `<p>h2`: the hosts' data planes, each with `eth0` (its tunnel endpoint, in `ul`)
  and `eth1` (no address, in `pv`: the uplink mapped to physical network `physnet1`);
- guests on demand: a namespace each, with `eth0` whose host end is a veth named like a tap
  (`kvt-...`) in a host, enslaved to a bridge the way libvirt enslaves a tap.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness import require

TOOLS = ("ip", "nft", "dnsmasq", "nsenter", "busybox")
UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc calls this with the lease in its environment: configure it as a guest would.
case "$1" in
  bound|renew)
    busybox ip addr flush dev "$interface"
    busybox ip addr add "$ip/$mask" dev "$interface"
    echo "$ip $router $dns $mtu" > "$LEASE_FILE"
    ;;
esac
"""


def run(
    *argv: str, netns: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    command = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv] if netns else list(argv)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def ip(*argv: str, netns: str | None = None) -> str:
    return run("ip", *argv, netns=netns).stdout


@dataclass
class Guest:
    name: str
    netns: str
    host: str
    tap: str
    mac: str


@dataclass
class Lab:
    prefix: str
    state: Path
    namespaces: list[str] = field(default_factory=list)

    @property
    def underlay(self) -> str:
        return f"{self.prefix}ul"

    def host(self, n: int) -> str:
        return f"{self.prefix}h{n}"

    def netns(self, name: str) -> str:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("link", "set", "lo", "up", netns=name)
        return name

    def build(self) -> None:
        self.netns(self.underlay)
        for bridge in ("ul", "pv"):
            ip("link", "add", bridge, "type", "bridge", netns=self.underlay)
            ip("link", "set", bridge, "up", netns=self.underlay)
        for n in (1, 2):
            host = self.netns(self.host(n))
            for device, bridge in (("eth0", "ul"), ("eth1", "pv")):
                peer = f"{bridge}{n}"
                ip(
                    "link",
                    "add",
                    device,
                    "netns",
                    host,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    peer,
                    netns=self.underlay,
                )
                ip("link", "set", peer, "master", bridge, "up", netns=self.underlay)
                ip("link", "set", device, "up", netns=host)
            ip("addr", "add", f"172.31.255.{n}/24", "dev", "eth0", netns=host)

    def guest(self, name: str, *, host: str, mac: str, tap: str | None = None) -> Guest:
        """A guest namespace whose eth0's other end, `tap` (`kvt-<name>` unless given), is
        a port in `host`."""
        netns = self.netns(f"{self.prefix}{name}")
        tap = tap or f"kvt-{name}"
        ip(
            "link",
            "add",
            tap,
            "netns",
            host,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            mac,
            netns=netns,
        )
        ip("link", "set", "eth0", "up", netns=netns)
        return Guest(name, netns, host, tap, mac)

    def plug(self, guest: Guest, bridge: str) -> None:
        """What libvirt does with a tap: into the bridge, up."""
        ip("link", "set", guest.tap, "master", bridge, "up", netns=guest.host)

    def dhcp(self, guest: Guest, *, tries: int = 3) -> list[str]:
        """Run udhcpc in the guest until it holds a lease; the lease's ip, router, dns, mtu."""
        script = self.state / "udhcpc.script"
        if not script.exists():
            script.write_text(UDHCPC_SCRIPT)
            script.chmod(0o755)
        lease = self.state / f"lease-{guest.name}"
        command = [
            "env",
            f"LEASE_FILE={lease}",
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-n",
            "-q",
            "-f",
            "-t",
            str(tries),
            "-T",
            "1",
            "-s",
            str(script),
        ]
        done = run(*command, netns=guest.netns, check=False)
        assert done.returncode == 0, f"udhcpc in {guest.name}: {done.stdout} {done.stderr}"
        return lease.read_text().split()

    def ping(self, guest: Guest, address: str, *, count: int = 1) -> bool:
        done = run(
            "busybox", "ping", "-c", str(count), "-W", "2", address, netns=guest.netns, check=False
        )
        return done.returncode == 0

    def links(self, netns: str) -> set[str]:
        out = ip("-o", "link", "show", netns=netns)
        return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}

    def remove(self) -> None:
        """Whatever a failed test left: dnsmasq processes under the state dir, then every
        namespace with the prefix (the hosts' DHCP namespaces too)."""
        for pidfile in self.state.glob("*/dhcp/*/pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        leftovers = [n for n in os.listdir("/run/netns") if n.startswith(self.prefix)]
        for name in [*reversed(self.namespaces), *leftovers]:
            run("ip", "netns", "del", name, check=False)


def missing_prerequisites() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    return missing


@contextlib.contextmanager
def built() -> Iterator[Lab]:
    """A built lab with its own state directory, removed afterwards (the `lab` fixtures)."""
    missing = missing_prerequisites()
    require(
        not missing,
        what=f"network namespaces with dnsmasq and nftables ({', '.join(missing)})",
        how="run as root after hack/setup.sh (iproute2, nftables, dnsmasq-base, busybox-static)",
    )
    # dnsmasq re-reads its hosts file as its own user: the state dir must be reachable.
    state = Path(tempfile.mkdtemp(prefix="kubevisor-hostnet-"))
    state.chmod(0o755)
    world = Lab(prefix=f"kvn{os.getpid() % 10000}-", state=state)
    try:
        world.build()
        yield world
    finally:
        world.remove()
        shutil.rmtree(state, ignore_errors=True)
