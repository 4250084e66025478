"""Scale benchmark: many VMs on many hollow hosts, through the real API server.

    .venv/bin/python bench/scale.py [--vms 200] [--hosts 20] [--steady 100] [--interval 0.1]

A real kube-apiserver + etcd (testbed.controlplane), the controller in its own process as it
runs in production, and `kubevisor dev fleet --hosts N` (N real agents on in-memory
hypervisors, one process). Then, in order:

1. burst: --vms VMs created as fast as --clients threads can post them; placement throughput
   (VMs bound per second, first create to last binding) and create -> Running percentiles;
2. steady: --steady VMs created --interval seconds apart; create -> Running percentiles;
3. API requests per VM over both (the API server's own apiserver_request_total, by verb and
   resource), the controller's CPU per VM, and the resident memory of the controller, the
   fleet (per host), kube-apiserver and etcd;
4. controller restart with every VM present: from the new process's start until it binds a
   new VM to a Ready host;
5. delete everything: until every VM is gone (the controller releases a VM's claim with its
   finalizer) and every host reports status.vmCount 0.

`--json PATH` writes the figures for tests (tests/bench/test_scale.py runs a small size).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from kubevisor.agent import fleet
from kubevisor.api.wire import GROUP, SYSTEM_NAMESPACE, VERSION, VIRTUAL_MACHINES
from kubevisor.testbed import controlplane, procfs
from kubevisor.testbed.commands import ControllerOptions
from kubevisor.testbed.controlplane import ControlPlane
from kubevisor.testbed.stack import wait_hosts_ready

REPO = Path(__file__).resolve().parents[1]
PLURAL = VIRTUAL_MACHINES.plural
NAMESPACE = "scale"
READ_VERBS = {"GET", "LIST", "WATCH"}
MIB = 2**20


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def requests(plane: ControlPlane) -> Counter[tuple[str, str]]:
    """apiserver_request_total by (verb, resource[/subresource]), from the API server."""
    pki = plane.state_dir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(f"{plane.server}/metrics", context=context) as reply:
        text = reply.read().decode()
    counts: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            counts[(labels.get("verb", ""), resource)] += int(float(line.rsplit(" ", 1)[1]))
    return counts


class Tracker:
    """When each VM of the namespace was first bound (status.host) and first Running, from
    one watch in a thread; `wait` blocks until a condition over them holds."""

    def __init__(self, api: client.CustomObjectsApi) -> None:
        self.bound: dict[str, float] = {}
        self.hosts: dict[str, str] = {}
        self.running: dict[str, float] = {}
        self.present: set[str] = set()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(api,), daemon=True)
        self._thread.start()

    def _run(self, api: client.CustomObjectsApi) -> None:
        while not self._stop.is_set():
            try:
                self._follow(api)
            except Exception:  # the API server restarted or stopped: watch again, or end
                time.sleep(0.5)

    def _follow(self, api: client.CustomObjectsApi) -> None:
        stream = watch.Watch()
        while not self._stop.is_set():
            for event in stream.stream(
                api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                NAMESPACE,
                PLURAL,
                timeout_seconds=30,
            ):
                self._seen(event["type"], event["object"], time.monotonic())
                if self._stop.is_set():
                    break

    def _seen(self, kind: str, obj: dict[str, Any], now: float) -> None:
        name, status = obj["metadata"]["name"], obj.get("status") or {}
        with self._changed:
            if kind == "DELETED":
                self.present.discard(name)
            else:
                self.present.add(name)
                if status.get("host") and name not in self.bound:
                    self.bound[name] = now
                    self.hosts[name] = status["host"]
                if status.get("phase") == "Running" and name not in self.running:
                    self.running[name] = now
            self._changed.notify_all()

    def wait(self, done: Any, timeout: float) -> bool:
        with self._changed:
            return bool(self._changed.wait_for(lambda: done(self), timeout=timeout))

    def names(self) -> list[str]:
        """The VMs present now (a copy: the watch thread changes the set)."""
        with self._changed:
            return sorted(self.present)

    def stop(self) -> None:
        self._stop.set()


def vm_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"memory": {"size": "64Mi"}},
    }


def create(api: client.CustomObjectsApi, name: str, created: dict[str, float]) -> None:
    created[name] = time.monotonic()
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, vm_body(name))


@contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        started = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield started
    finally:
        started.terminate()
        try:
            started.wait(timeout=30)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait()


def controller_argv(plane: ControlPlane) -> list[str]:
    return ControllerOptions(plane.kubeconfig, log_level="WARNING", metrics_port=0).argv()


def fleet_argv(plane: ControlPlane, hosts: int, work: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "kubevisor.cli.main", "dev", "--state-dir", str(work)),
        *("fleet", "--hosts", str(hosts), "--kubeconfig", str(plane.kubeconfig)),
    ]


def wait_line(log: Path, prefix: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line of `log` starting with `prefix` (the process writes it when ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
        if proc.poll() is not None:
            raise SystemExit(f"{log.name} ended:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise SystemExit(f"no {prefix!r} in {log} after {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def latencies(tracker: Tracker, created: dict[str, float]) -> list[float]:
    return [tracker.running[n] - t for n, t in created.items() if n in tracker.running]


def summary(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q), 3) for q in (50, 95, 99)} | {
        "max": round(max(values, default=0.0), 3)
    }


def burst(
    api: client.CustomObjectsApi, tracker: Tracker, count: int, clients: int, timeout: float
) -> dict[str, Any]:
    created: dict[str, float] = {}
    names = [f"burst-{i:05d}" for i in range(count)]
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(create, api, n, created) for n in names]:
            future.result()
    posted = time.monotonic()
    ok = tracker.wait(lambda t: all(n in t.running for n in names), timeout)
    first = min(created.values())
    bound = [tracker.bound[n] for n in names if n in tracker.bound]
    return {
        "ok": ok,
        "vms": count,
        "bound": len(bound),
        "running": sum(n in tracker.running for n in names),
        "create_rate": round(count / max(posted - first, 1e-9), 1),
        "bound_per_s": round(len(bound) / max(max(bound, default=first) - first, 1e-9), 1),
        "create_to_running": summary(latencies(tracker, created)),
    }


def steady(
    api: client.CustomObjectsApi, tracker: Tracker, count: int, interval: float, timeout: float
) -> dict[str, Any]:
    created: dict[str, float] = {}
    names = [f"steady-{i:05d}" for i in range(count)]
    start = time.monotonic()
    for i, name in enumerate(names):
        time.sleep(max(0.0, start + i * interval - time.monotonic()))
        create(api, name, created)
    ok = tracker.wait(lambda t: all(n in t.running for n in names), timeout)
    return {
        "ok": ok,
        "vms": count,
        "interval": interval,
        "running": sum(n in tracker.running for n in names),
        "create_to_running": summary(latencies(tracker, created)),
    }


def per_vm(delta: Counter[tuple[str, str]], vms: int) -> dict[str, Any]:
    """Requests per VM: reads and writes, and the writes by resource (creates included)."""
    writes = Counter({k: v for k, v in delta.items() if k[0] not in READ_VERBS and v > 0})
    reads = sum(v for k, v in delta.items() if k[0] in READ_VERBS)
    by_resource: Counter[str] = Counter()
    for (verb, resource), value in writes.items():
        by_resource[f"{verb} {resource}"] += value
    return {
        "writes": round(sum(writes.values()) / vms, 2),
        "reads": round(reads / vms, 2),
        "writes_by": {k: round(v / vms, 2) for k, v in sorted(by_resource.items())},
    }


def restart(
    plane: ControlPlane,
    api: client.CustomObjectsApi,
    tracker: Tracker,
    *,
    work: Path,
    pids: dict[str, int],
    timeout: float,
) -> dict[str, Any]:
    """Start a controller while every VM is present; seconds until it binds a new VM."""
    with process(controller_argv(plane), work / "controller-restarted.log") as proc:
        started = time.monotonic()
        created: dict[str, float] = {}
        create(api, "after-restart", created)
        ok = tracker.wait(lambda t: "after-restart" in t.bound, timeout)
        seconds = tracker.bound.get("after-restart", started + timeout) - started
        progress("restart-bound", {"ok": ok, "seconds": round(seconds, 2)})
        share = CpuShare(pids | {"controller": proc.pid})
        cleared = delete_all(api, tracker, timeout) | {"cores": share.cores()}
        return {
            "ok": ok,
            "seconds": round(seconds, 2),
            "host": tracker.hosts.get("after-restart"),
            "rss_mib": round(procfs.rss_bytes(proc.pid) / MIB),
            "delete": cleared,
        }


class CpuShare:
    """The CPU each process used since this was made, in cores (1.0: one core busy)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.used = {name: procfs.cpu_seconds(pid) for name, pid in pids.items()}

    def cores(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.started, 1e-9)
        return {
            name: round((procfs.cpu_seconds(pid) - self.used[name]) / wall, 2)
            for name, pid in self.pids.items()
        }


def host_vm_counts(api: client.CustomObjectsApi) -> list[int]:
    hosts = api.list_cluster_custom_object(GROUP, VERSION, "hypervisorhosts")["items"]
    return [int((h.get("status") or {}).get("vmCount") or 0) for h in hosts]


def delete_all(api: client.CustomObjectsApi, tracker: Tracker, timeout: float) -> dict[str, Any]:
    """Delete every VM; seconds until all are gone and every host counts none."""
    started = time.monotonic()
    # One DELETE of the collection (kubectl delete --all would send one per VM). The API
    # server gives up on it after 60 s (504; 1,200 VMs here): then one DELETE per VM left.
    try:
        api.delete_collection_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    except client.ApiException as error:
        print(f"delete: the collection DELETE failed ({error.status}); deleting one by one")
        for name in tracker.names():
            with contextlib.suppress(client.ApiException):
                api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    gone = tracker.wait(lambda t: not t.present, timeout)
    vms_gone = time.monotonic() - started
    deadline = started + timeout
    counts = host_vm_counts(api)
    while any(counts) and time.monotonic() < deadline:
        time.sleep(0.2)
        counts = host_vm_counts(api)
    return {
        "ok": gone and not any(counts),
        "vms_gone_s": round(vms_gone, 2),
        "hosts_empty_s": round(time.monotonic() - started, 2),
        "left": len(tracker.present),
        "hosts_counting_vms": sum(1 for c in counts if c),
    }


def progress(phase: str, figures: dict[str, Any]) -> None:
    """Each phase's figures as soon as it ends (a run cut short still shows them)."""
    print(f"{phase}: {json.dumps(figures)}", flush=True)


def rss(pids: dict[str, int]) -> dict[str, float]:
    return {name: round(procfs.rss_bytes(pid) / MIB, 1) for name, pid in pids.items()}


def measure(plane: ControlPlane, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    plane.kubectl("create", "namespace", SYSTEM_NAMESPACE)
    plane.kubectl("create", "namespace", NAMESPACE)
    names = fleet.host_names("hollow-", args.hosts)
    result: dict[str, Any] = {"hosts": args.hosts, "cpus": os.cpu_count()}
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = args.clients + 2
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    tracker = Tracker(api)
    with process(fleet_argv(plane, args.hosts, work), work / "fleet.log") as hollow:
        with process(controller_argv(plane), work / "controller.log") as controller:
            result["fleet_ready"] = wait_line(work / "fleet.log", "fleet:", hollow, args.timeout)
            wait_hosts_ready(plane, names, timeout=args.timeout)
            pids = {
                "controller": controller.pid,
                "fleet": hollow.pid,
                "kube-apiserver": plane.apiserver_pid,
                "etcd": plane.etcd_pid,
            }
            result["rss_idle_mib"] = rss(pids)
            before, cpu = requests(plane), procfs.cpu_seconds(controller.pid)
            share = CpuShare(pids)
            result["burst"] = burst(api, tracker, args.vms, args.clients, args.timeout)
            result["burst"]["cores"] = share.cores()
            progress("burst", result["burst"])
            result["steady"] = steady(api, tracker, args.steady, args.interval, args.timeout)
            progress("steady", result["steady"])
            delta = requests(plane) - before
            created = args.vms + args.steady
            result["requests_per_vm"] = per_vm(delta, created)
            result["controller_cpu_ms_per_vm"] = round(
                (procfs.cpu_seconds(controller.pid) - cpu) * 1000 / created, 1
            )
            result["rss_mib"] = rss(pids)
        del pids["controller"]
        result["restart"] = restart(plane, api, tracker, work=work, pids=pids, timeout=args.timeout)
        progress("restart", result["restart"])
    tracker.stop()
    fleet_mib = result["rss_mib"]["fleet"]
    empty = float(re.findall(r"([\d.]+) MiB before the hosts", result["fleet_ready"])[0])
    result["fleet_mib_empty"] = empty
    result["fleet_mib_per_host"] = round((fleet_mib - empty) / args.hosts, 2)
    result["ok"] = all(result[k]["ok"] for k in ("burst", "steady", "restart")) and bool(
        result["restart"]["delete"]["ok"]
    )
    return result


def report(result: dict[str, Any]) -> None:
    b, s, r = result["burst"], result["steady"], result["restart"]
    print(f"\n== {b['vms'] + s['vms']} VMs on {result['hosts']} hollow hosts ==")
    print(f"  {result['fleet_ready']}")
    print(
        f"  burst of {b['vms']}: posted at {b['create_rate']} VMs/s, bound {b['bound_per_s']}"
        f" VMs/s end to end; create->Running {fmt(b['create_to_running'])}{missing(b)}"
    )
    print(
        f"  steady {s['vms']} at {s['interval'] * 1000:.0f} ms apart: create->Running"
        f" {fmt(s['create_to_running'])}{missing(s)}"
    )
    print(f"  CPU in the burst, in cores: {cores(b['cores'])}")
    req = result["requests_per_vm"]
    print(
        f"  API requests per VM (apiserver_request_total): {req['writes']} writes,"
        f" {req['reads']} reads (incl. the create; watches count once)"
    )
    print("    writes: " + ", ".join(f"{k} {v}" for k, v in req["writes_by"].items()))
    print(f"  controller CPU per VM: {result['controller_cpu_ms_per_vm']} ms")
    idle, busy = result["rss_idle_mib"], result["rss_mib"]
    for name in busy:
        print(f"  RSS {name}: {idle[name]:.0f} MiB idle, {busy[name]:.0f} MiB with the VMs")
    print(
        f"  fleet RSS per hollow host with the VMs: {result['fleet_mib_per_host']} MiB"
        f" (over the {result['fleet_mib_empty']} MiB of the process before its hosts)"
    )
    print(
        f"  controller restart with {b['vms'] + s['vms']} VMs present -> new VM bound on"
        f" {r['host']}: {r['seconds']} s (RSS after {r['rss_mib']} MiB)"
    )
    d = r["delete"]
    print(
        f"  delete all: VMs gone in {d['vms_gone_s']} s, every host at vmCount 0 in"
        f" {d['hosts_empty_s']} s" + ("" if d["ok"] else f" (NOT DONE: {d['left']} VMs left)")
    )


def missing(phase: dict[str, Any]) -> str:
    return "" if phase["ok"] else f"  (ONLY {phase['running']} of {phase['vms']} Running)"


def cores(figures: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in figures.items())


def fmt(figures: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.2f} s" for k, v in figures.items())


def bin_dir() -> Path:
    if env := os.environ.get("KUBEVISOR_CONTROLPLANE_BIN"):
        return Path(env)
    built = subprocess.run(
        [str(REPO / "hack/controlplane/build.sh")], check=True, capture_output=True, text=True
    )
    return Path(built.stdout.split()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--vms", type=int, default=200, help="VMs in the burst")
    parser.add_argument("--hosts", type=int, default=20, help="hollow hosts")
    parser.add_argument("--steady", type=int, default=100, help="VMs created at a steady rate")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between those")
    parser.add_argument("--clients", type=int, default=8, help="threads posting the burst")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per phase")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="keep logs here (default: a temporary dir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (`timeout`, a test's teardown) stops the control plane as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="kubevisor-scale-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        plane = controlplane.start(
            bin_dir=bin_dir(), state_dir=work / "plane", crd_paths=[REPO / "deploy" / "crds"]
        )
        try:
            config.load_kube_config(config_file=str(plane.kubeconfig))
            result = measure(plane, args, work)
        finally:
            controlplane.stop(plane.state_dir)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
