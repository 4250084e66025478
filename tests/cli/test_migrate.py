"""`kubevisor migrate`: the pure parts (flags, manifest, cancel, progress lines, outcome)
with fakes, and the calls on the real API server. No controller runs: the tests write the
job's status through the status subresource, as the controller and the agents would.

The older migrate tests (create, --to, --name, --dry-run, --wait exit codes) are in
test_vm.py, from when migrate was one of the VM verbs; they run against this module.
"""

from __future__ import annotations

import argparse
import queue
import subprocess
import threading
from collections.abc import Iterator
from typing import IO, Any

import pytest

from harness import eventually
from kubevisor.api.wire import Resource
from kubevisor.cli import migrate
from kubevisor.cli.kubeapi import MIGRATIONS, Object

GiB = 1 << 30
MiB = 1 << 20


def parsed(**flags: Any) -> argparse.Namespace:
    defaults: dict[str, Any] = {
        "vm": None,
        "cancel": None,
        "to": None,
        "name": None,
        "bandwidth": None,
        "post_copy": False,
        "auto_converge": False,
        "cold": False,
        "dry_run": False,
        "wait": False,
        "output": None,
    }
    return argparse.Namespace(**{**defaults, **flags})


# -- the pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        pytest.param({"vm": "db-0"}, None, id="vm"),
        pytest.param({"vm": "db-0", "wait": True, "post_copy": True}, None, id="vm-with-options"),
        pytest.param({"cancel": "j"}, None, id="cancel"),
        pytest.param({"cancel": "j", "wait": True}, None, id="cancel-and-wait"),
        pytest.param({}, "a VM to migrate (or --cancel JOB) is required", id="nothing"),
        pytest.param({"vm": "db-0", "cancel": "j"}, "not both", id="vm-and-cancel"),
        pytest.param(
            {"cancel": "j", "to": "hv-b", "bandwidth": 0},
            "--to, --bandwidth cannot be used with --cancel",
            id="cancel-with-create-flags",
        ),
        pytest.param({"cancel": "j", "output": "yaml"}, "-o yaml|json", id="cancel-with-yaml"),
        pytest.param({"vm": "db-0", "dry_run": True, "wait": True}, "--wait", id="dry-run-wait"),
        pytest.param({"vm": "db-0", "cold": True, "wait": True}, None, id="cold"),
        pytest.param(
            {"vm": "db-0", "cold": True, "post_copy": True},
            "--post-copy and --auto-converge apply to live migrations, not --cold",
            id="cold-with-post-copy",
        ),
        pytest.param({"cancel": "j", "cold": True}, "--cold cannot be used", id="cancel-cold"),
    ],
)
def test_usage_error(flags: dict[str, Any], problem: str | None) -> None:
    said = migrate.usage_error(parsed(**flags))
    if problem is None:
        assert said is None
    else:
        assert said is not None and problem in said


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("200", 200, id="mibps"),
        pytest.param("0", 0, id="unlimited"),
        pytest.param("-1", None, id="negative"),
        pytest.param("fast", None, id="not-a-number"),
    ],
)
def test_bandwidth(text: str, value: int | None) -> None:
    if value is None:
        with pytest.raises(argparse.ArgumentTypeError):
            migrate.bandwidth(text)
    else:
        assert migrate.bandwidth(text) == value


@pytest.mark.parametrize(
    ("bandwidth", "post_copy", "auto_converge", "options"),
    [
        pytest.param(None, False, False, {}, id="none-given-leaves-the-crd-defaults"),
        pytest.param(0, False, False, {"bandwidthMiBps": 0}, id="zero-is-written"),
        pytest.param(
            200,
            True,
            True,
            {"bandwidthMiBps": 200, "postCopy": True, "autoConverge": True},
            id="all",
        ),
    ],
)
def test_options(
    bandwidth: int | None, post_copy: bool, auto_converge: bool, options: Object
) -> None:
    assert (
        migrate.options(bandwidth_mibps=bandwidth, post_copy=post_copy, auto_converge=auto_converge)
        == options
    )


def test_manifest_with_options() -> None:
    assert migrate.manifest(
        "db-0", namespace="prod", target=None, name=None, options={"postCopy": True}
    ) == {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "MigrationJob",
        "metadata": {"generateName": "db-0-migration-", "namespace": "prod"},
        "spec": {"vm": "db-0", "options": {"postCopy": True}},
    }


def test_cold_manifest_sets_the_mode() -> None:
    assert migrate.manifest("ct-1", namespace=None, target="hv-b", name="m", cold=True)["spec"] == {
        "vm": "ct-1",
        "targetHost": "hv-b",
        "mode": "Cold",
    }


def test_manifest_refuses_what_the_crd_would() -> None:
    with pytest.raises(migrate.CliError) as refused:
        migrate.manifest("Not_A_Name", namespace=None, target=None, name=None)
    assert refused.value.code == 2 and "invalid MigrationJob: spec.vm" in str(refused.value)


def job(phase: str | None = None, *, cancel: bool = False, **status: Any) -> Object:
    return {
        "metadata": {"name": "db-0-migration-x"},
        "spec": {"vm": "db-0", "cancel": cancel},
        "status": {"phase": phase, **status} if phase else {},
    }


@pytest.mark.parametrize(
    ("obj", "patch", "done"),
    [
        pytest.param(job(), {"spec": {"cancel": True}}, "cancel requested", id="pending"),
        pytest.param(job("Running"), {"spec": {"cancel": True}}, "cancel requested", id="running"),
        pytest.param(
            job("Running", cancel=True),
            None,
            "unchanged (cancel already requested)",
            id="already-requested",
        ),
        pytest.param(job("Succeeded"), None, "unchanged (already Succeeded)", id="succeeded"),
        pytest.param(job("Cancelled"), None, "unchanged (already Cancelled)", id="cancelled"),
    ],
)
def test_cancel_change(obj: Object, patch: Object | None, done: str) -> None:
    assert migrate.cancel_change(obj) == migrate.CancelChange(patch, done)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        pytest.param(512, "512 B", id="bytes"),
        pytest.param(1536, "1.5 KiB", id="kib"),
        pytest.param(300 * MiB, "300.0 MiB", id="mib"),
        pytest.param(3 * GiB // 2, "1.5 GiB", id="gib"),
        pytest.param(0, "0 B", id="nothing-left"),
    ],
)
def test_size(count: int, text: str) -> None:
    assert migrate.size(count) == text


@pytest.mark.parametrize(
    ("obj", "line"),
    [
        pytest.param(job(), "Pending", id="no-status-yet"),
        pytest.param(
            job("Preparing", source="hv-a", target="hv-b"), "Preparing: hv-a -> hv-b", id="hosts"
        ),
        pytest.param(
            job(
                "Running",
                source="hv-a",
                target="hv-b",
                progress={"percent": 42, "dataRemaining": 3 * GiB // 2, "dataTotal": 4 * GiB},
            ),
            "Running: hv-a -> hv-b: 42%, 1.5 GiB remaining of 4.0 GiB",
            id="progress",
        ),
        pytest.param(
            job(
                "Running",
                source="hv-a",
                target="hv-b",
                progress={"percent": 97, "dataRemaining": 0, "iteration": 6},
                transfer={"state": "Running", "postCopy": True},
            ),
            "Running: hv-a -> hv-b: 97%, 0 B remaining, pass 6, post-copy",
            id="post-copy",
        ),
    ],
)
def test_progress_line(obj: Object, line: str) -> None:
    assert migrate.progress_line(obj) == line


DONE = {"source": "hv-a", "target": "hv-b", "transfer": {"state": "Succeeded"}}


@pytest.mark.parametrize(
    ("obj", "wanted", "code", "message"),
    [
        pytest.param(job("Running"), "Succeeded", None, None, id="running-goes-on"),
        pytest.param(
            job("Succeeded", **{**DONE, "transfer": {"state": "S", "message": "migrated in 2.1s"}}),
            "Succeeded",
            0,
            "migrationjob.kubevisor.io/db-0-migration-x Succeeded from hv-a to hv-b "
            "(migrated in 2.1s)",
            id="succeeded",
        ),
        pytest.param(
            job("Failed", reason="progress timeout: 150s without progress"),
            "Succeeded",
            1,
            "migrationjob db-0-migration-x Failed: progress timeout: 150s without progress",
            id="failed-says-why",
        ),
        pytest.param(
            job("Cancelled"),
            "Succeeded",
            1,
            "migrationjob db-0-migration-x Cancelled: no reason given",
            id="cancelled-is-a-failure-of-a-migration",
        ),
        pytest.param(
            job("Cancelled", reason="cancelled by spec.cancel"),
            "Cancelled",
            0,
            "migrationjob.kubevisor.io/db-0-migration-x Cancelled (cancelled by spec.cancel)",
            id="cancelled-is-what-a-cancel-waits-for",
        ),
        pytest.param(
            job("Succeeded", **DONE),
            "Cancelled",
            1,
            "migrationjob db-0-migration-x Succeeded before the cancel took effect",
            id="cancel-too-late",
        ),
    ],
)
def test_outcome(obj: Object, wanted: Any, code: int | None, message: str | None) -> None:
    ended = migrate.outcome("db-0-migration-x", obj, wanted)
    if code is None:
        assert ended is None
    else:
        assert ended == migrate.Outcome(code, message or "")


class FakeCluster:
    """Versions of one job, as `Cluster.observe` yields them; then the deadline passes."""

    def __init__(self, versions: list[Object | None]) -> None:
        self.versions = versions
        self.asked: list[tuple[Resource, str]] = []

    def observe(self, resource: Resource, name: str, *, timeout: float) -> Iterator[Object | None]:
        self.asked.append((resource, name))
        yield from self.versions


RUNNING_40 = job("Running", progress={"percent": 40, "dataRemaining": 600 * MiB})
RUNNING_90 = job("Running", progress={"percent": 90, "dataRemaining": 100 * MiB})


@pytest.mark.parametrize(
    ("versions", "code", "said", "message"),
    [
        pytest.param(
            [job(), job("Scheduling"), RUNNING_40, RUNNING_40, RUNNING_90, job("Succeeded")],
            0,
            [
                "Pending",
                "Scheduling",
                "Running: 40%, 600.0 MiB remaining",
                "Running: 90%, 100.0 MiB remaining",
            ],
            "migrationjob.kubevisor.io/j Succeeded",
            id="says-each-change-once-then-succeeds",
        ),
        pytest.param(
            [RUNNING_40, None],
            1,
            ["Running: 40%, 600.0 MiB remaining"],
            "migrationjob j was deleted while waiting",
            id="deleted",
        ),
        pytest.param(
            [RUNNING_40],
            1,
            ["Running: 40%, 600.0 MiB remaining"],
            "timed out after 5s waiting for migrationjob j to finish "
            "(Running: 40%, 600.0 MiB remaining)",
            id="times-out-saying-where-it-was",
        ),
    ],
)
def test_follow(versions: list[Object | None], code: int, said: list[str], message: str) -> None:
    cluster = FakeCluster(versions)
    lines: list[str] = []
    ended = migrate.follow(cluster, "j", wanted="Succeeded", timeout=5, say=lines.append)
    assert ended == migrate.Outcome(code, message)
    assert lines == [f"migrationjob j: {line}" for line in said]
    assert cluster.asked == [(MIGRATIONS, "j")]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["migrate"], id="no-vm"),
        pytest.param(["migrate", "db-0", "--cancel", "j"], id="vm-and-cancel"),
        pytest.param(["migrate", "--cancel", "j", "--post-copy"], id="cancel-with-options"),
        pytest.param(["migrate", "db-0", "--bandwidth", "-5"], id="negative-bandwidth"),
    ],
)
def test_usage_errors_exit_2_without_a_cluster(offline_cli: Any, argv: list[str]) -> None:
    result = offline_cli(*argv)
    assert (result.code, result.out) == (2, "")
    assert "error:" in result.err


def test_dry_run_writes_the_options(offline_cli: Any) -> None:
    result = offline_cli(
        "migrate", "db-0", "--bandwidth", "64", "--auto-converge", "--dry-run", "-o", "json"
    )
    assert result.code == 0, result.err
    assert '"options": {\n      "bandwidthMiBps": 64,\n      "autoConverge": true\n    }' in (
        result.out
    )


# -- on the real API server -------------------------------------------------------------------


@pytest.mark.apiserver
def test_migrate_creates_the_job_the_flags_describe(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name)
    result = cli(
        "migrate", name, "-n", objects.namespace, "--bandwidth", "200", "--post-copy",
        "--auto-converge",
    )  # fmt: skip
    assert (result.code, result.err) == (0, "")
    [created] = [j for j in objects.items("migrationjob") if j["spec"]["vm"] == name]
    assert result.out == f"migrationjob.kubevisor.io/{created['metadata']['name']} created\n"
    assert created["metadata"]["name"].startswith(f"{name}-migration-")
    # What the flags gave, and the CRD's defaults for the rest (the controller's timeouts).
    assert created["spec"] == {
        "vm": name,
        "mode": "Live",
        "cancel": False,
        "options": {
            "bandwidthMiBps": 200,
            "postCopy": True,
            "autoConverge": True,
            "completionTimeoutPerGiB": 150,
            "progressTimeout": 150,
        },
    }
    assert "status" not in created


@pytest.mark.apiserver
def test_cancel_sets_spec_cancel_once(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name)
    assert cli("migrate", name, "-n", objects.namespace, "--name", name).code == 0
    first = cli("migrate", "--cancel", name, "-n", objects.namespace)
    assert (first.code, first.out) == (0, f"migrationjob.kubevisor.io/{name} cancel requested\n")
    assert objects.get("migrationjob", name)["spec"]["cancel"] is True
    again = cli("migrate", "--cancel", name, "-n", objects.namespace)
    assert again.out == f"migrationjob.kubevisor.io/{name} unchanged (cancel already requested)\n"


@pytest.mark.apiserver
def test_cancel_of_an_unknown_job_fails(cli: Any, objects: Any) -> None:
    result = cli("migrate", "--cancel", "no-such-job", "-n", objects.namespace)
    assert result.code == 1
    assert '"no-such-job" not found' in result.err


class Lines:
    """A process's stderr, line by line as it comes (a reader thread), for waiting on a
    line with a deadline rather than a guessed sleep."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        while not any(text in line for line in self.seen):
            try:
                self.seen.append(self._queue.get(timeout=timeout))
            except queue.Empty:
                pytest.fail(f"no line with {text!r} on stderr; saw {self.seen}")

    def rest(self) -> str:
        self._thread.join(timeout=30)
        while not self._queue.empty():
            self.seen.append(self._queue.get())
        return "".join(self.seen)


def finish(process: subprocess.Popen[str], lines: Lines) -> tuple[int, str, str]:
    assert process.stdout is not None
    out = process.stdout.read()
    returned = process.wait(timeout=60)
    return returned, out, lines.rest()


@pytest.mark.apiserver
def test_wait_reports_progress_then_success(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name)
    process = cli.spawn("migrate", name, "-n", objects.namespace, "--wait", "--timeout", "60s")
    lines = Lines(process)
    created = eventually(
        lambda: next((j for j in objects.items("migrationjob") if j["spec"]["vm"] == name), None),
        what="the MigrationJob",
    )
    job_name = created["metadata"]["name"]
    objects.patch_status(
        "migrationjob",
        job_name,
        {
            "phase": "Running",
            "source": "hv-a",
            "target": "hv-b",
            "progress": {"percent": 25, "dataRemaining": 768 * MiB, "dataTotal": GiB},
        },
    )
    lines.wait_for("25%")
    assert process.poll() is None
    objects.patch_status(
        "migrationjob",
        job_name,
        {"phase": "Succeeded", "transfer": {"state": "Succeeded", "message": "migrated in 1.2s"}},
    )
    returned, out, err = finish(process, lines)
    assert returned == 0, err
    assert out == (
        f"migrationjob.kubevisor.io/{job_name} created\n"
        f"migrationjob.kubevisor.io/{job_name} Succeeded from hv-a to hv-b (migrated in 1.2s)\n"
    )
    assert (
        f"migrationjob {job_name}: Running: hv-a -> hv-b: 25%, 768.0 MiB remaining of 1.0 GiB\n"
        in err
    )


@pytest.mark.apiserver
def test_cancel_and_wait_ends_when_the_job_is_cancelled(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name)
    assert cli("migrate", name, "-n", objects.namespace, "--name", name).code == 0
    objects.patch_status("migrationjob", name, {"phase": "Running"})
    process = cli.spawn("migrate", "--cancel", name, "-n", objects.namespace, "--wait")
    lines = Lines(process)
    eventually(
        lambda: objects.get("migrationjob", name)["spec"]["cancel"], what="spec.cancel: true"
    )
    objects.patch_status(
        "migrationjob", name, {"phase": "Cancelled", "reason": "cancelled by spec.cancel"}
    )
    returned, out, err = finish(process, lines)
    assert returned == 0, err
    assert out.splitlines() == [
        f"migrationjob.kubevisor.io/{name} cancel requested",
        f"migrationjob.kubevisor.io/{name} Cancelled (cancelled by spec.cancel)",
    ]
