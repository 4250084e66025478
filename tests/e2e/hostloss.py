"""Pieces of the e2e tests that lose a host (the migration module's failover, watchdog and
partition tests, power fencing): a VM started on the extra host, a census of every host's
running domains, the VM running elsewhere, what the Events said."""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from typing import Any

from harness import eventually
from stacks import ExtraHost, Stack


def host_spec(stack: Stack, host: str, spec: dict[str, Any]) -> None:
    stack.kubectl("patch", "hvh", host, "--type=merge", "-p", json.dumps({"spec": spec}))


def start_on_extra(
    stack: Stack, extra: ExtraHost, namespace: str, *manifests: dict[str, Any]
) -> dict[str, str]:
    """Start the VMs of `manifests` on the extra host (the shared hosts cordoned until they
    run there, then schedulable again); their uids by name."""
    for host in stack.hosts:
        host_spec(stack, host.name, {"unschedulable": True})
    stack.apply(namespace, *manifests)
    uids = {}
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        running = stack.wait_phase(namespace, name, "Running")
        assert running["status"]["host"] == extra.name, running["status"]
        uids[name] = str(running["metadata"]["uid"])
    for host in stack.hosts:
        host_spec(stack, host.name, {"unschedulable": False})
    return uids


def all_uris(stack: Stack, extra: ExtraHost) -> list[str]:
    """The libvirt URIs of the shared hosts, then the extra host's (last)."""
    assert extra.host is not None
    return [h.uri for h in stack.hosts] + [extra.host.uri]


def running_elsewhere(stack: Stack, namespace: str, name: str, lost: str) -> Any:
    """VM `name` if it runs on a host other than `lost`, else None."""
    vm_ = stack.get("vm", name, namespace)
    status = vm_["status"]
    return vm_ if status.get("phase") == "Running" and status.get("host") != lost else None


def moved_away(stack: Stack, namespace: str, name: str, lost: str, *, what: str) -> Any:
    """VM `name` once it runs on another host than `lost` (the failover grace included)."""
    return eventually(
        lambda: running_elsewhere(stack, namespace, name, lost), timeout=120, what=what
    )


def said(stack: Stack, namespace: str, name: str, reason: str) -> str:
    """The messages of the Events of `reason` about object `name`, joined by " | "."""
    events = json.loads(
        stack.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"reason={reason},involvedObject.name={name}",
            "-o",
            "json",
        ).stdout
    )["items"]
    return " | ".join(e["message"] for e in events)


def running_on(uri: str) -> list[str]:
    """UUIDs of running domains at `uri`; none when the host is down."""
    done = subprocess.run(
        ["virsh", "-c", uri, "list", "--uuid"], capture_output=True, text=True, timeout=30
    )
    return done.stdout.split() if done.returncode == 0 else []


def virsh_all(uri: str) -> list[str]:
    """UUIDs of every domain defined at `uri`, running or not."""
    done = subprocess.run(
        ["virsh", "-c", uri, "list", "--all", "--uuid"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


class DomainCensus:
    """Counts, from a background thread, the running domains of each VM across all hosts,
    and keeps the highest count seen: a VM must never run in two places."""

    def __init__(self, uris: list[str]) -> None:
        self.uris = uris
        self.worst: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            seen = Counter(uid for uri in self.uris for uid in running_on(uri))
            self.samples += 1
            for uid, count in seen.items():
                self.worst[uid] = max(self.worst[uid], count)

    def __enter__(self) -> DomainCensus:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def assert_never_twice(self, *, samples: int = 10) -> None:
        """More than `samples` censuses were taken, and none saw a VM run twice."""
        assert self.samples > samples, self.samples
        assert max(self.worst.values(), default=0) <= 1, self.worst
