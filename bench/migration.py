"""Live migration benchmark: a MigrationJob against raw `virsh migrate --live`.

    .venv/bin/python bench/migration.py [--rounds 5] [--log-level INFO --keep DIR]   (root)

One run: a real kube-apiserver + etcd, the controller and two agents on two local libvirtd
hosts. The same guest (the domain XML the agent renders for a 128 MiB busybox guest that
prints a counter twice a second) runs twice: once as a VirtualMachine, once as a plain
libvirt domain kubevisor does not manage. Alternating, each is moved to the other host
`--rounds` times: the plain one with `virsh migrate --live --p2p --persistent
--undefinesource` (the flags our driver uses), the VM with a MigrationJob, timed from the
job's creation until the API says Succeeded. Prints the median of both, their ratio
(target: at most 1.3x) and the longest pause each guest showed: the largest gap between
two counter lines arriving in its serial logs, less the 0.5 s it waits between them.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client, config

from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.api.wire import GROUP, MIGRATION_JOBS, SYSTEM_NAMESPACE, VERSION, VIRTUAL_MACHINES
from kubevisor.core.domain import converter
from kubevisor.core.domain.host import BootFiles, HostEnvironment
from kubevisor.testbed import controlplane, guest, hosts
from kubevisor.testbed.commands import LOCAL_MIGRATE_URI, AgentOptions, ControllerOptions
from kubevisor.testbed.controlplane import ControlPlane
from kubevisor.testbed.stack import wait_hosts_ready

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "bench-migration"
COUNTER = re.compile(rf"^{guest.COUNTER_PREFIX}(\d+)")
PLAIN_UUID = "00000000-0000-4000-8000-00000000beef"
COUNTER_PERIOD = 0.5  # seconds the guest sleeps between two counter lines


class SerialTail:
    """Follows serial log files and timestamps each line as it arrives (`lines`), the
    counter lines apart (`arrivals`)."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.arrivals: list[float] = []
        self.lines: list[tuple[float, str]] = []
        self._offsets: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def follow(self, path: Path, *, whole: bool = False) -> None:
        """Follow `path` from its end now (`whole`: from its start; what it holds already
        counts as arriving now)."""
        if path not in self.paths:
            self._offsets[path] = path.stat().st_size if path.exists() and not whole else 0
            self.paths.append(path)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            for path in list(self.paths):
                try:
                    if path.stat().st_size < self._offsets[path]:
                        self._offsets[path] = 0  # removed and created again (the VM came back)
                    with path.open("rb") as log:
                        log.seek(self._offsets[path])
                        data = log.read()
                except FileNotFoundError:
                    continue  # not there yet, or removed with its VM
                complete = data.rfind(b"\n") + 1
                self._offsets[path] += complete
                now = time.monotonic()
                for line in data[:complete].decode(errors="replace").splitlines():
                    self.lines.append((now, line.strip()))
                    if COUNTER.match(line.strip()):
                        self.arrivals.append(now)

    def longest_pause(self, start: float, end: float) -> float:
        """The largest gap between counter lines around [start, end], less the period."""
        times = sorted(t for t in self.arrivals if start - 2 <= t <= end + 2)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return max(0.0, max(gaps, default=0.0) - COUNTER_PERIOD)

    def __enter__(self) -> SerialTail:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@contextmanager
def stack(
    plane: ControlPlane,
    local: list[hosts.LocalHost],
    tiny: guest.Guest,
    work: Path,
    log_level: str = "WARNING",
) -> Iterator[dict[str, Path]]:
    """The controller and one agent per host; yields each agent's state directory."""
    argvs = {
        "controller": ControllerOptions(
            plane.kubeconfig, log_level=log_level, metrics_port=0
        ).argv()
    }
    states = {}
    for host in local:
        states[host.name] = work / "agents" / host.name
        argvs[host.name] = AgentOptions(
            host.name,
            host.uri,
            plane.kubeconfig,
            states[host.name],
            image_dir=states[host.name] / "img",
            domain_type="qemu",
            guest=tiny,
            metrics_port=0,
            log_level=log_level,
            migrate_uri=LOCAL_MIGRATE_URI,
            cgroup_controllers="",
        ).argv()
    started = []
    try:
        for name, argv in argvs.items():
            log = (work / f"{name}.log").open("wb")
            started.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        wait_hosts_ready(plane, [h.name for h in local], timeout=120)
        yield states
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def until(check: Any, *, timeout: float, what: str, poll: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def plain_domain(tiny: guest.Guest, serial: Path) -> str:
    """The domain XML the agent renders for the VM, for a domain kubevisor does not own."""
    vm = VirtualMachine.model_validate(
        {
            "metadata": {
                "namespace": "baseline",
                "name": "plain",
                "uid": PLAIN_UUID,
                "generation": 1,
            },
            "spec": {"memory": {"size": "128Mi"}},
        }
    )
    xml = converter.render(
        vm,
        host=HostEnvironment(
            domain_type="qemu",
            serial_log=str(serial),
            default_boot=BootFiles(
                kernel=str(tiny.kernel), initrd=str(tiny.initrd), cmdline=tiny.cmdline
            ),
            cgroup_controllers=frozenset(),
        ),
    )
    # Without kubevisor's metadata the agents leave it alone (fencing skips foreign domains).
    return re.sub(r"<metadata>.*</metadata>", "", xml, flags=re.DOTALL)


def finished_job(api: client.CustomObjectsApi, name: str) -> Any:
    """The MigrationJob once it reached a terminal phase, else None."""
    job: dict[str, Any] = api.get_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, MIGRATION_JOBS.plural, name
    )
    phase = (job.get("status") or {}).get("phase")
    return job if phase in ("Succeeded", "Failed", "Cancelled") else None


def virsh(uri: str, *args: str) -> str:
    return subprocess.run(
        ["virsh", "-c", uri, *args], check=True, capture_output=True, text=True
    ).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-level", default="WARNING", help="of the controller and agents")
    parser.add_argument("--keep", type=Path, help="keep the work directory (logs) here")
    args = parser.parse_args()
    if hosts.missing_prerequisites():
        print(f"needs {', '.join(hosts.missing_prerequisites())}: {hosts.HOW_TO_INSTALL}")
        return 2
    bin_dir = Path(
        subprocess.run(
            [str(REPO / "hack/controlplane/build.sh")], check=True, capture_output=True, text=True
        ).stdout.split()[-1]
    )
    tiny = guest.build_guest(Path.home() / ".cache" / "kubevisor" / "guest")
    with tempfile.TemporaryDirectory(prefix="kubevisor-bench-migration-") as tmp:
        work = args.keep or Path(tmp)
        plane = controlplane.start(
            bin_dir=bin_dir, state_dir=work / "plane", crd_paths=[REPO / "deploy" / "crds"]
        )
        local = hosts.start_hosts(2, state_dir=work / "hosts")
        try:
            plane.kubectl("create", "namespace", SYSTEM_NAMESPACE)
            plane.kubectl("create", "namespace", NAMESPACE)
            with stack(plane, local, tiny, work, args.log_level) as states, SerialTail() as tail:
                return measure(plane, local, tiny, work, states, tail, args.rounds)
        finally:
            hosts.stop_hosts(work / "hosts")
            controlplane.stop(plane.state_dir)


def measure(
    plane: ControlPlane,
    local: list[hosts.LocalHost],
    tiny: guest.Guest,
    work: Path,
    states: dict[str, Path],
    tail: SerialTail,
    rounds: int,
) -> int:
    api = client.CustomObjectsApi(config.new_client_from_config(str(plane.kubeconfig)))
    uri = {h.name: h.uri for h in local}

    api.create_namespaced_custom_object(
        GROUP,
        VERSION,
        NAMESPACE,
        VIRTUAL_MACHINES.plural,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualMachine",
            "metadata": {"name": "managed"},
            "spec": {"memory": {"size": "128Mi"}},
        },
    )

    def vm() -> Any:
        return api.get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, VIRTUAL_MACHINES.plural, "managed"
        )

    running = until(
        lambda: (v := vm()).get("status", {}).get("phase") == "Running" and v,
        timeout=120,
        what="the VM Running",
        poll=0.1,
    )
    uid = running["metadata"]["uid"]
    for state in states.values():
        tail.follow(state / "vms" / uid / "serial.log")

    plain_serial = work / "plain-serial.log"
    plain_xml = work / "plain.xml"
    plain_xml.write_text(plain_domain(tiny, plain_serial))
    plain_host = local[0].name
    virsh(uri[plain_host], "define", str(plain_xml))
    virsh(uri[plain_host], "start", PLAIN_UUID)
    plain_tail = SerialTail()
    plain_tail.follow(plain_serial)
    with plain_tail:
        until(lambda: len(plain_tail.arrivals) >= 2, timeout=60, what="the plain guest counting")
        until(lambda: len(tail.arrivals) >= 2, timeout=60, what="the VM's guest counting")
        raw_times: list[float] = []
        job_times: list[float] = []
        raw_pause = job_pause = 0.0
        for n in range(rounds):
            target = next(h.name for h in local if h.name != plain_host)
            start = time.monotonic()
            virsh(
                uri[plain_host],
                "migrate",
                "--live",
                "--p2p",
                "--persistent",
                "--undefinesource",
                PLAIN_UUID,
                uri[target],
                "tcp://127.0.0.1",
            )
            end = time.monotonic()
            raw_times.append(end - start)
            raw_pause = max(raw_pause, plain_tail.longest_pause(start, end))
            plain_host = target

            name = f"move-{n}"
            start = time.monotonic()
            api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                NAMESPACE,
                MIGRATION_JOBS.plural,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "MigrationJob",
                    "metadata": {"name": name},
                    "spec": {"vm": "managed"},
                },
            )
            job = until(
                functools.partial(finished_job, api, name), timeout=120, what=f"job {name} done"
            )
            end = time.monotonic()
            if job["status"]["phase"] != "Succeeded":
                print(f"job {name} {job['status']['phase']}: {job['status'].get('reason')}")
                return 1
            job_times.append(end - start)
            until(lambda: vm()["status"].get("phase") == "Running", timeout=60, what="Running")
            job_pause = max(job_pause, tail.longest_pause(start, end))
            print(
                f"round {n + 1}: virsh migrate {raw_times[-1]:.2f} s, "
                f"MigrationJob {job_times[-1]:.2f} s ({job['status']['source']} -> "
                f"{job['status']['target']}, {job['status']['transfer']['message']})"
            )
        raw, ours = statistics.median(raw_times), statistics.median(job_times)
        print(
            f"median of {rounds}: virsh migrate --live {raw:.2f} s, MigrationJob {ours:.2f} s"
            f" = {ours / raw:.2f}x (target <= 1.3x)"
        )
        print(
            f"longest guest pause seen: plain domain {raw_pause * 1000:.0f} ms, "
            f"VM {job_pause * 1000:.0f} ms (counter lines arrive every "
            f"{COUNTER_PERIOD * 1000:.0f} ms)"
        )
        virsh(uri[plain_host], "destroy", PLAIN_UUID)
        virsh(uri[plain_host], "undefine", PLAIN_UUID)
    return 0


if __name__ == "__main__":
    sys.exit(main())
