"""Guests on a Network, timed on `kubevisor dev up`'s stack: two libvirtd hosts in network
namespaces whose agents build the data plane (bridges, VXLAN, dnsmasq, nftables).

    .venv/bin/python bench/netguest.py [--rounds 5] [--migrations 3]    (root: QEMU, netns)

One run (its own stack in a temporary directory, `testbed.stack`, removed afterwards):

- start, `--rounds` times, alternating: a VM with one NIC on an overlay Network and the
  same VM without a network, each created and timed until its phase is Running
  (create->Running: the controller's allocation and, on the host, the Network's bridge,
  VXLAN device, dnsmasq and port rules before the domain starts, against none of that),
  then on its serial console until its guest has booted (`KUBEVISOR-GUEST-READY`) and, on
  the Network, until its guest holds its address (udhcpc's `kubevisor-net bound` line).
  The host side alone is bench/hostnet.py's `attach first` (quoted, not run here).
- migration, `--migrations` times: two VMs on the Network on different hosts; the second
  pings the first every 0.1 s from inside its guest while a MigrationJob moves the first
  to the other host (and back, alternating). The reachability gap is the longest run of
  unanswered pings; the baseline, measured in the same migration, is the moved guest's
  own pause: the longest gap between its counter lines (printed every 0.5 s) less 0.5 s.

Prints the median (and the largest) of each.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config

from kubevisor.api.wire import GROUP, MIGRATION_JOBS, VERSION, VIRTUAL_MACHINES
from kubevisor.cli import dev
from kubevisor.testbed import controlplane, guest, hosts, netns, stack
from kubevisor.testbed.guestshell import GuestShell
from migration import COUNTER_PERIOD, SerialTail, until

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "default"
PING_INTERVAL = 0.1
PING_SECONDS = 12.0
"""How long each ping across a migration runs; the job starts LEAD seconds into it."""
LEAD = 2.0
HOSTNET_ATTACH_FIRST_MS = 83
"""bench/hostnet.py, `attach first` median of 5 rounds on the 2-core dev machine
(docs/networking-hosts.md): the host-side part of a VM start on a Network."""
SEQ = re.compile(r"seq=(\d+)")


def network() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Network",
        "metadata": {"name": "bench"},
        "spec": {"type": "overlay", "subnet": {"cidr": "10.77.0.0/24"}},
    }


def vm(name: str, *, on_network: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"memory": {"size": "128Mi"}}
    if on_network:
        spec["networks"] = [{"name": "eth0", "network": "bench"}]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": spec,
    }


class Bench:
    """The stack's API and where its guests' serial logs are."""

    def __init__(self, state: Path, tail: SerialTail) -> None:
        plane = controlplane.load(state)
        assert plane is not None
        self.state = state
        self.tail = tail
        self.api = client.CustomObjectsApi(config.new_client_from_config(str(plane.kubeconfig)))
        self.uris = {h.name: h.uri for h in hosts.list_hosts(state / "hosts")}

    def create(self, plural: str, body: dict[str, Any]) -> None:
        self.api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, body)

    def get(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, VIRTUAL_MACHINES.plural, name
        )
        return found

    def running(self, name: str) -> dict[str, Any]:
        """The VM once its phase is Running (polled every 20 ms), its serial logs followed."""
        try:
            found = until(
                lambda: (v := self.get(name)).get("status", {}).get("phase") == "Running" and v,
                timeout=120,
                what=f"{name} Running",
                poll=0.02,
            )
        except TimeoutError as error:
            raise SystemExit(f"{error}: {json.dumps(self.get(name).get('status'))}") from None
        for host in self.uris:
            self.tail.follow(self.serial(host, found["metadata"]["uid"]), whole=True)
        return dict(found)

    def serial(self, host: str, uid: str) -> Path:
        return self.state / "agents" / host / "vms" / uid / "serial.log"

    def line_after(self, start: float, matches: Callable[[str], bool], what: str) -> float:
        """When the first line after `start` that `matches` arrived."""
        found = until(
            lambda: next((t for t, line in self.tail.lines if t >= start and matches(line)), None),
            timeout=90,
            what=what,
        )
        return float(found)

    def ended(self, job: str) -> dict[str, Any] | None:
        """The MigrationJob's status once it has ended."""
        found: dict[str, Any] = self.api.get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, MIGRATION_JOBS.plural, job
        )
        status: dict[str, Any] = found.get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, VIRTUAL_MACHINES.plural, name
        )

        def gone() -> bool:
            try:
                self.get(name)
            except client.ApiException as error:
                return error.status == 404
            return False

        until(gone, timeout=120, what=f"{name} deleted", poll=0.2)


def starts(bench: Bench, rounds: int) -> None:
    created: dict[bool, list[float]] = {True: [], False: []}
    booted: dict[bool, list[float]] = {True: [], False: []}
    held: list[float] = []
    for n in range(rounds):
        for on_network in (True, False):
            name = f"{'net' if on_network else 'plain'}-{n}"
            start = time.monotonic()
            bench.create(VIRTUAL_MACHINES.plural, vm(name, on_network=on_network))
            found = bench.running(name)
            running = time.monotonic()
            created[on_network].append(running - start)
            ready = bench.line_after(
                start, lambda line: line.startswith(guest.MARKER), f"{name} booted"
            )
            booted[on_network].append(ready - running)
            line = f"{name}: create->Running {running - start:.2f} s, boot {ready - running:.2f} s"
            if on_network:
                address = found["status"]["interfaces"][0]["ipAddresses"][0]
                bound = bench.line_after(start, holds(address), f"{name} holding {address}")
                held.append(bound - running)
                line += f", Running->holds {address} {bound - running:.2f} s"
            print(line)
            bench.delete(name)
    net, plain = statistics.median(created[True]), statistics.median(created[False])
    print(
        f"median of {rounds}: create->Running {net:.2f} s on a Network, {plain:.2f} s without "
        f"(+{(net - plain) * 1000:.0f} ms; the host side alone: bench/hostnet.py attach first, "
        f"{HOSTNET_ATTACH_FIRST_MS} ms, target 100 ms)"
    )
    print(
        f"median of {rounds}: Running->guest holds its address {statistics.median(held):.2f} s "
        f"(max {max(held):.2f}); Running->guest booted {statistics.median(booted[True]):.2f} s "
        f"on a Network, {statistics.median(booted[False]):.2f} s without"
    )


def migrations(bench: Bench, count: int) -> None:
    began = time.monotonic()  # addresses are reused: older guests bound them too
    # No anti-affinity group: with two hosts it would forbid every move. Wherever they
    # start, the moves alternate between the two on one host and on two.
    for name in ("moved", "pinger"):
        bench.create(VIRTUAL_MACHINES.plural, vm(name, on_network=True))
    moved, pinger = bench.running("moved"), bench.running("pinger")
    address = moved["status"]["interfaces"][0]["ipAddresses"][0]
    for name, found in (("moved", moved), ("pinger", pinger)):
        mine = found["status"]["interfaces"][0]["ipAddresses"][0]
        bench.line_after(began, holds(mine), f"{name} holding {mine}")
    shell = GuestShell(bench.uris[pinger["status"]["host"]], pinger["metadata"]["uid"])
    # The moved guest's counter lines alone (on either host), for its pause.
    counters = SerialTail()
    for host in bench.uris:
        counters.follow(bench.serial(host, moved["metadata"]["uid"]))
    with counters:
        gaps, pauses = migrate(bench, shell, counters, address, count)
    print(
        f"median of {count}: reachability gap {statistics.median(gaps):.1f} s "
        f"(max {max(gaps):.1f}; pings every {PING_INTERVAL} s from the other VM) against the "
        f"moved guest's pause {statistics.median(pauses):.2f} s (counter lines every "
        f"{COUNTER_PERIOD} s)"
    )


def migrate(
    bench: Bench, shell: GuestShell, counters: SerialTail, address: str, count: int
) -> tuple[list[float], list[float]]:
    """Move VM `moved` `count` times while the pinger pings `address`; the reachability
    gap and the guest's pause of each migration."""
    gaps: list[float] = []
    pauses: list[float] = []
    pings = int(PING_SECONDS / PING_INTERVAL)
    for n in range(count):
        command = shell.start(f"ping -i {PING_INTERVAL} -c {pings} {address}")
        time.sleep(LEAD)
        start = time.monotonic()
        job = f"move-{n}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MigrationJob",
            "metadata": {"name": job},
            "spec": {"vm": "moved"},
        }
        bench.create(MIGRATION_JOBS.plural, body)
        done = until(lambda j=job: bench.ended(j), timeout=120, what=f"{job} done", poll=0.1)
        end = time.monotonic()
        if done["phase"] != "Succeeded":
            raise SystemExit(f"job {job} {done['phase']}: {done.get('reason')}")
        output = shell.result(command, timeout=PING_SECONDS + 60).output
        answered = {int(m.group(1)) for m in SEQ.finditer(output)}
        gap = longest_missing(answered, pings) * PING_INTERVAL
        pause = counters.longest_pause(start, end)
        gaps.append(gap)
        pauses.append(pause)
        print(
            f"migration {n + 1} ({done['source']} -> {done['target']}, {end - start:.2f} s): "
            f"{pings - len(answered)} of {pings} pings unanswered, longest gap {gap:.1f} s; "
            f"the guest's own pause {pause:.2f} s"
        )
    return gaps, pauses


def holds(address: str) -> Callable[[str], bool]:
    """Whether a console line is udhcpc's saying the guest bound `address`."""
    return lambda line: line.startswith(f"{guest.NET_PREFIX}bound ") and f" {address}/" in line


def longest_missing(answered: set[int], sent: int) -> int:
    """The longest run of sequence numbers in 0..sent-1 without an answer."""
    longest = run = 0
    for seq in range(sent):
        run = 0 if seq in answered else run + 1
        longest = max(longest, run)
    return longest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--migrations", type=int, default=3)
    args = parser.parse_args()
    missing = hosts.missing_prerequisites() + netns.missing_data_plane_prerequisites()
    if missing:
        print(f"needs {', '.join(missing)}: {hosts.HOW_TO_INSTALL}; dnsmasq-base, nftables")
        return 2
    # dnsmasq re-reads its hosts file as its own user: the state's parents must be 0755.
    root = Path(tempfile.mkdtemp(prefix="kubevisor-bench-net-"))
    root.chmod(0o755)
    state = root / "stack"
    try:
        plane = stack.start(
            bin_dir=dev.controlplane_bin(),
            state_dir=state,
            crd_paths=[REPO / "deploy" / "crds"],
            say=lambda line: None,
        )
        plane.kubectl("apply", "-f", "-", input=json.dumps(network()))
        with SerialTail() as tail:
            bench = Bench(state, tail)
            if args.rounds:
                starts(bench, args.rounds)
            if args.migrations:
                migrations(bench, args.migrations)
    except BaseException:
        print(f"failed; the stack's logs are in {state / 'logs'}")
        stack.stop(state)
        raise
    stack.stop(state)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
