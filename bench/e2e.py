"""End-to-end benchmark: create -> Running through the real stack, KubeVirt's CI scenario.

    .venv/bin/python bench/e2e.py [--vms 100] [--interval 0.1] [--qemu 10] [--sequential 10]

Run 1: a real kube-apiserver + etcd, the controller, and two agents on libvirt's embedded
`test:///default` driver (so QEMU is not what is measured); N VMs created `interval`
seconds apart. Prints p50/p95/p99 create->Running, API write requests per VM (from the
apiserver's own apiserver_request_total), and the processes' resident memory.

Run 2 (root only): the same with `--qemu` real QEMU/TCG guests on two local libvirtd
hosts; then `--sequential` guests one at a time, each followed at once by `virsh create` of
the domain XML the agent defined for it on the same host, so the agent's overhead shows as
a ratio measured under the same load. Each run also prints the median time the watch took
to show each step: the controller's bind (status.host), its host label (which the agent
watches by), the agent's Running. `--vms 0` / `--qemu 0` / `--sequential 0` skip a run;
`--log-level INFO --keep DIR` keeps the components' logs.

KubeVirt's CI reports about 15-20 s p50 and 27-30 s p95 for 100 VMIs created 100 ms apart,
and budgets about 2 pod patches and 5-6 VMI updates per VM. Targets here: p95 under 2 s
on test:///default and at most 6 API writes per VM.
"""

from __future__ import annotations

import argparse
import functools
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from xml.etree import ElementTree

from kubernetes import client, config, watch

from kubevisor.api.wire import GROUP, HOST_LABEL, SYSTEM_NAMESPACE, VERSION, VIRTUAL_MACHINES
from kubevisor.kube.client import Object
from kubevisor.testbed import controlplane, guest, hosts
from kubevisor.testbed.commands import AgentOptions, ControllerOptions
from kubevisor.testbed.controlplane import ControlPlane
from kubevisor.testbed.stack import wait_hosts_ready

REPO = Path(__file__).resolve().parents[1]
PLURAL = VIRTUAL_MACHINES.plural
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def writes_by_resource(plane: ControlPlane) -> Counter[str]:
    """apiserver_request_total of write verbs, by resource[/subresource]."""
    pki = plane.state_dir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(f"{plane.server}/metrics", context=context) as reply:
        text = reply.read().decode()
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        key = labels.get("resource", "")
        if labels.get("subresource"):
            key += "/" + labels["subresource"]
        counts[key] += int(float(line.rsplit(" ", 1)[1]))
    return counts


class RunningWatch:
    """Records, per VM name, when its phase was first Running (a watch in a thread), and
    when the watch first showed each step on the way: `status.host` written (bound), the
    host label the agent watches by (labelled)."""

    def __init__(self, api: client.CustomObjectsApi, namespace: str) -> None:
        self.running: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.labelled: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(api, namespace), daemon=True)
        self._thread.start()

    def _run(self, api: client.CustomObjectsApi, namespace: str) -> None:
        stream = watch.Watch()
        while not self._stop.is_set():
            for event in stream.stream(
                api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                timeout_seconds=5,
            ):
                obj = event["object"]
                phase = (obj.get("status") or {}).get("phase")
                name = obj["metadata"]["name"]
                now = time.monotonic()
                if (obj.get("status") or {}).get("host"):
                    self.bound.setdefault(name, now)
                if HOST_LABEL in (obj["metadata"].get("labels") or {}):
                    self.labelled.setdefault(name, now)
                if phase == "Running" and name not in self.running:
                    self.running[name] = now
                if self._stop.is_set():
                    break

    def wait(self, names: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n in self.running for n in names):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def processes(
    argvs: dict[str, list[str]], logs: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    started = {}
    try:
        for name, argv in argvs.items():
            out = (logs / f"{name}.log").open("wb")
            started[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        yield started
    finally:
        for process in started.values():
            process.terminate()
        for process in started.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def run(
    plane: ControlPlane,
    *,
    label: str,
    agents: list[tuple[str, str, str]],
    boot: list[str],
    count: int,
    interval: float,
    memory: str,
    work: Path,
    sequential: bool = False,
    log_level: str = "WARNING",
    baseline: Callable[[Object], float] | None = None,
) -> dict[str, Any]:
    """Create `count` VMs and time each to Running; with `sequential`, one at a time, and
    with `baseline` too, after each one `baseline(vm)` is timed right away, so both see the
    same load on this shared machine."""
    namespace = f"bench-{label}"
    start = time.monotonic()
    plane.kubectl("create", "namespace", namespace, check=False)
    argvs = {
        "controller": ControllerOptions(
            plane.kubeconfig, log_level=log_level, metrics_port=0
        ).argv()
    }
    for host, uri, kind in agents:
        state = work / label / host
        argvs[f"agent-{host}"] = AgentOptions(
            host,
            uri,
            plane.kubeconfig,
            state,
            domain_type=kind,
            log_level=log_level,
            metrics_port=0,
            extra=boot,
        ).argv()
    (work / label).mkdir(parents=True, exist_ok=True)
    with processes(argvs, work / label) as procs:
        wait_hosts_ready(plane, [a[0] for a in agents], timeout=120)
        # Hosts of an earlier run may still look Ready: keep each run on its own hosts.
        for host, _, _ in agents:
            plane.kubectl("label", "hvh", host, f"bench-run={label}", "--overwrite")
        idle_rss = {name: rss_mib(p.pid) for name, p in procs.items()}
        config.load_kube_config(config_file=str(plane.kubeconfig))
        api = client.CustomObjectsApi()
        watcher = RunningWatch(api, namespace)
        before = writes_by_resource(plane)
        created: dict[str, float] = {}
        raw_times: list[float] = []
        names = [f"vm-{i:03d}" for i in range(count)]
        start = time.monotonic()
        for i, name in enumerate(names):
            target = start + i * interval
            time.sleep(max(0.0, target - time.monotonic()))
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "VirtualMachine",
                "metadata": {"name": name},
                "spec": {
                    "memory": {"size": memory},
                    "placement": {"hostSelector": {"bench-run": label}},
                },
            }
            created[name] = time.monotonic()
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            if sequential:
                watcher.wait([name], timeout=120)
                if baseline is not None:
                    obj = cast(
                        Object,
                        api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
                    )
                    raw_times.append(baseline(obj))
        ok = watcher.wait(names, timeout=300)
        if not ok:
            print(plane.kubectl("get", "vm", "-n", namespace, "-o", "wide").stdout)
            for name in procs:
                print(f"--- {name} ---\n" + (work / label / f"{name}.log").read_text()[-1500:])
        after = writes_by_resource(plane)
        watcher.stop()
        busy_rss = {name: rss_mib(p.pid) for name, p in procs.items()}
        latencies = [watcher.running[n] - created[n] for n in names if n in watcher.running]
        steps = {
            "create->bound": [watcher.bound[n] - created[n] for n in names if n in watcher.bound],
            "bound->labelled": [
                watcher.labelled[n] - watcher.bound[n]
                for n in names
                if n in watcher.labelled and n in watcher.bound
            ],
            "labelled->Running": [
                watcher.running[n] - watcher.labelled[n]
                for n in names
                if n in watcher.running and n in watcher.labelled
            ],
        }
        delta = after - before
        vm_writes = sum(v for k, v in delta.items() if k.startswith("virtualmachines"))
        event_writes = delta.get("events", 0)
        plane.kubectl(
            "delete", "vm", "--all", "-n", namespace, "--wait=true", "--timeout=300s", timeout=320
        )
    return {
        "ok": ok,
        "latencies": latencies,
        "steps": steps,
        "baseline": raw_times,
        "writes": delta,
        "per_vm_total": (vm_writes + event_writes) / count,
        "per_vm_components": (vm_writes + event_writes - count) / count,
        "idle_rss": idle_rss,
        "busy_rss": busy_rss,
    }


def report(label: str, count: int, result: dict[str, Any]) -> None:
    lat = result["latencies"]
    print(f"\n== {label}: {count} VMs ==")
    if not result["ok"]:
        print(f"  only {len(lat)}/{count} reached Running within the timeout")
    if lat:
        print(
            f"  create->Running  p50 {percentile(lat, 50):.2f} s  p95 {percentile(lat, 95):.2f} s"
            f"  p99 {percentile(lat, 99):.2f} s  max {max(lat):.2f} s"
        )
    steps = ", ".join(
        f"{step} {statistics.median(values) * 1000:.0f} ms"
        for step, values in result["steps"].items()
        if values
    )
    print(f"  medians as the watch saw them: {steps}")
    writes = result["writes"]
    shown = ", ".join(f"{k} {v}" for k, v in sorted(writes.items()) if v)
    print(f"  API writes during the run: {shown}")
    print(
        f"  per VM to Running: {result['per_vm_total']:.2f} writes incl. the user's create,"
        f" {result['per_vm_components']:.2f} by kubevisor (virtualmachines + events)"
    )
    for name in result["idle_rss"]:
        print(
            f"  RSS {name}: {result['idle_rss'][name]:.0f} MiB idle,"
            f" {result['busy_rss'][name]:.0f} MiB with the VMs"
        )


class VirshBaseline:
    """`virsh create` of the very XML the agent defined for a VM (its inactive definition,
    renamed, with its own serial log, without kubevisor's metadata), on the VM's host, then
    destroyed: the time QEMU and libvirt alone take to start the same guest under the same
    load."""

    def __init__(self, uris: dict[str, str], work: Path) -> None:
        self.uris = uris
        self.work = work
        self.count = 0

    def __call__(self, vm: Object) -> float:
        uri = self.uris[vm["status"]["host"]]
        domain = ElementTree.fromstring(
            subprocess.run(
                ["virsh", "-c", uri, "dumpxml", "--inactive", vm["metadata"]["uid"]],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        self.count += 1
        name = f"baseline-raw-{self.count}"
        for tag, value in (("name", name), ("uuid", str(uuid.uuid4()))):
            element = domain.find(tag)
            assert element is not None
            element.text = value
        for log in domain.iter("log"):
            log.set("file", str(self.work / f"{name}.log"))
        # Without kubevisor's metadata (inert to QEMU), else the agent fences the copy as a
        # second domain of its VM, and its writes would count in the VMs' figures.
        metadata = domain.find("metadata")
        if metadata is not None:
            domain.remove(metadata)
        path = self.work / f"{name}.xml"
        path.write_bytes(ElementTree.tostring(domain))
        start = time.monotonic()
        subprocess.run(["virsh", "-c", uri, "create", str(path)], check=True, capture_output=True)
        took = time.monotonic() - start
        subprocess.run(["virsh", "-c", uri, "destroy", name], capture_output=True)
        return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--qemu", type=int, default=10, help="real guests in run 2 (0: skip)")
    parser.add_argument(
        "--sequential", type=int, default=10, help="QEMU guests one at a time (0: skip)"
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="of the components in the one-at-a-time run"
    )
    parser.add_argument("--keep", type=Path, help="keep the work directory (logs) here")
    args = parser.parse_args()
    bin_dir = Path(
        subprocess.run(
            [str(REPO / "hack/controlplane/build.sh")], check=True, capture_output=True, text=True
        ).stdout.split()[-1]
    )
    with tempfile.TemporaryDirectory(prefix="kubevisor-bench-") as tmp:
        work = args.keep or Path(tmp)
        plane = controlplane.start(
            bin_dir=bin_dir, state_dir=work / "plane", crd_paths=[REPO / "deploy" / "crds"]
        )
        try:
            plane.kubectl("create", "namespace", SYSTEM_NAMESPACE)
            print(
                f"kube-apiserver {plane.version}; {args.vms} VMs, {args.interval * 1000:.0f} ms"
                " apart"
            )
            if args.vms:
                test_agents = [(f"bench-test-{i}", "test:///default", "test") for i in (1, 2)]
                result = run(
                    plane,
                    label="test-driver",
                    agents=test_agents,
                    boot=[],
                    count=args.vms,
                    interval=args.interval,
                    memory="64Mi",
                    work=work,
                )
                report("test:///default hosts", args.vms, result)
            if (args.qemu or args.sequential) and not hosts.missing_prerequisites():
                local = hosts.start_hosts(2, state_dir=work / "hosts")
                try:
                    tiny = guest.build_guest(Path.home() / ".cache" / "kubevisor" / "guest")
                    boot = [
                        "--guest-kernel",
                        str(tiny.kernel),
                        "--guest-initrd",
                        str(tiny.initrd),
                        "--guest-cmdline",
                        tiny.cmdline,
                    ]
                    on_qemu = functools.partial(
                        run,
                        plane,
                        agents=[(h.name, h.uri, "qemu") for h in local],
                        boot=boot,
                        memory="128Mi",
                        work=work,
                    )
                    if args.qemu:
                        qemu = on_qemu(label="qemu", count=args.qemu, interval=args.interval)
                        report("real QEMU/TCG guests on 2 libvirtd hosts", args.qemu, qemu)
                    if args.sequential:
                        one = on_qemu(
                            label="qemu-one-at-a-time",
                            count=args.sequential,
                            interval=0.0,
                            sequential=True,
                            log_level=args.log_level,
                            baseline=VirshBaseline({h.name: h.uri for h in local}, work),
                        )
                        report(
                            "one QEMU guest at a time (create, wait Running, next)",
                            args.sequential,
                            one,
                        )
                        raw, ours = one["baseline"], one["latencies"]
                        print(
                            "  virsh create of the same XML on the same host right after each:"
                            f" median {statistics.median(raw):.2f} s; kubevisor create->Running"
                            f" median {statistics.median(ours):.2f} s"
                            f" = {statistics.median(ours) / statistics.median(raw):.2f}x"
                        )
                finally:
                    hosts.stop_hosts(work / "hosts")
            elif args.qemu or args.sequential:
                print("\n(run 2 skipped: local libvirtd hosts need root and libvirt/QEMU)")
        finally:
            controlplane.stop(plane.state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
