"""VM verbs on the real API server: each changes exactly the spec field it should.

`cli` runs `kubevisor` in this process; `objects` writes and reads with kubectl (what
the tests read back is what the API server stored). No controller runs here: where a
verb waits for the VM (restart, migrate --wait), the test plays the controller by
writing status through the status subresource.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from harness import eventually
from kubevisor.api import wire
from kubevisor.api.migrationjob import MigrationJob
from kubevisor.cli import vm as verbs

pytestmark = pytest.mark.apiserver

LAST = wire.LAST_RUN_STRATEGY_ANNOTATION


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.mark.parametrize(
    ("spec", "annotations", "verb", "changed", "annotation_after", "says"),
    [
        pytest.param(
            {"runStrategy": "Always"},
            {},
            "stop",
            {"runStrategy": "Halted"},
            "Always",
            "stopped (runStrategy Always -> Halted)",
            id="stop-halts-and-saves-the-strategy",
        ),
        pytest.param(
            {"runStrategy": "Manual"},
            {},
            "stop",
            {"runStrategy": "Halted"},
            "Manual",
            "stopped (runStrategy Manual -> Halted)",
            id="stop-saves-manual",
        ),
        pytest.param(
            {"runStrategy": "Halted"},
            {LAST: "RerunOnFailure"},
            "stop",
            {},
            "RerunOnFailure",
            "unchanged (runStrategy is already Halted)",
            id="stop-of-a-stopped-vm-changes-nothing",
        ),
        pytest.param(
            {"runStrategy": "Halted"},
            {LAST: "RerunOnFailure"},
            "start",
            {"runStrategy": "RerunOnFailure"},
            None,
            "started (runStrategy Halted -> RerunOnFailure)",
            id="start-restores-the-saved-strategy-and-drops-the-annotation",
        ),
        pytest.param(
            {"runStrategy": "Halted"},
            {},
            "start",
            {"runStrategy": "Always"},
            None,
            "started (runStrategy Halted -> Always)",
            id="start-without-a-saved-strategy-is-always",
        ),
        pytest.param(
            {"runStrategy": "Halted"},
            {LAST: "Halted"},
            "start",
            {"runStrategy": "Always"},
            None,
            "started (runStrategy Halted -> Always)",
            id="start-ignores-a-saved-halted",
        ),
        pytest.param(
            {"runStrategy": "Once"},
            {},
            "start",
            {},
            None,
            "unchanged (runStrategy is Once, not Halted)",
            id="start-of-a-vm-that-is-not-halted-changes-nothing",
        ),
        pytest.param({}, {}, "pause", {"paused": True}, None, "paused", id="pause-sets-paused"),
        pytest.param(
            {"paused": True},
            {},
            "unpause",
            {"paused": False},
            None,
            "unpaused",
            id="unpause-clears-paused",
        ),
        pytest.param(
            {"paused": True},
            {},
            "pause",
            {},
            None,
            "unchanged (spec.paused is already true)",
            id="pause-of-a-paused-vm-changes-nothing",
        ),
    ],
)
def test_verb_changes_exactly_its_field(
    cli: Any,
    objects: Any,
    name: str,
    spec: dict[str, Any],
    annotations: dict[str, str],
    verb: str,
    changed: dict[str, Any],
    annotation_after: str | None,
    says: str,
) -> None:
    before = objects.vm(name, spec=spec, metadata={"annotations": annotations})
    result = cli(verb, name, "-n", objects.namespace)
    assert (result.code, result.err) == (0, "")
    assert result.out == f"virtualmachine.kubevisor.io/{name} {says}\n"
    after = objects.get("vm", name)
    assert after["spec"] == {**before["spec"], **changed}
    assert (after["metadata"].get("annotations") or {}).get(LAST) == annotation_after
    if not changed:
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_stop_then_start_restores_the_strategy(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name, spec={"runStrategy": "RerunOnFailure"})
    assert cli("stop", name, "-n", objects.namespace).code == 0
    stopped = objects.get("vm", name)
    assert stopped["spec"]["runStrategy"] == "Halted"
    assert stopped["metadata"]["annotations"][LAST] == "RerunOnFailure"
    assert cli("start", name, "-n", objects.namespace).code == 0
    started = objects.get("vm", name)
    assert started["spec"]["runStrategy"] == "RerunOnFailure"
    assert LAST not in (started["metadata"].get("annotations") or {})


def test_dry_run_changes_nothing(cli: Any, objects: Any, name: str) -> None:
    before = objects.vm(name)
    result = cli("stop", name, "-n", objects.namespace, "--dry-run")
    assert result.code == 0
    assert result.out.endswith("(server dry run)\n")
    after = objects.get("vm", name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


@pytest.mark.parametrize(
    ("metadata", "who"),
    [
        pytest.param(
            {"labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}}, "Flux", id="flux-label"
        ),
        pytest.param(
            {"labels": {"app.kubernetes.io/instance": "apps"}}, "Argo CD", id="argo-label"
        ),
        pytest.param(
            {"annotations": {"argocd.argoproj.io/tracking-id": "apps:kubevisor.io/x"}},
            "Argo CD",
            id="argo-tracking-annotation",
        ),
    ],
)
def test_gitops_managed_vm_gets_a_warning_on_stderr(
    cli: Any, objects: Any, name: str, metadata: dict[str, Any], who: str
) -> None:
    objects.vm(name, metadata=metadata)
    result = cli("pause", name, "-n", objects.namespace)
    assert result.code == 0
    assert result.err.startswith(f"warning: virtualmachine {name} is managed by {who}")
    assert "self-heal" in result.err and result.err.count("\n") == 1
    assert objects.get("vm", name)["spec"]["paused"] is True


def test_missing_vm_fails_with_one_line(cli: Any, objects: Any) -> None:
    result = cli("stop", "no-such-vm", "-n", objects.namespace)
    assert result.code == 1
    assert result.out == ""
    assert result.err == 'error: virtualmachines.kubevisor.io "no-such-vm" not found\n'


# -- restart: stop, wait for Stopped, start ----------------------------------------------------


def test_restart_stops_waits_for_stopped_then_starts(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name, spec={"runStrategy": "RerunOnFailure"})
    process = cli.spawn("restart", name, "-n", objects.namespace, "--timeout", "60s")
    halted = eventually(
        lambda: (vm := objects.get("vm", name))["spec"]["runStrategy"] == "Halted" and vm,
        what="restart to stop the VM",
    )
    # Phase Stopped for the generation before the stop must not count...
    objects.patch_status(
        "vm", name, {"phase": "Stopped", "observedGeneration": halted["metadata"]["generation"] - 1}
    )
    assert process.poll() is None
    # ...the controller observing the stop does.
    objects.patch_status(
        "vm", name, {"phase": "Stopped", "observedGeneration": halted["metadata"]["generation"]}
    )
    code, out, err = finish(process)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"virtualmachine.kubevisor.io/{name} stopped (runStrategy RerunOnFailure -> Halted)",
        f"virtualmachine.kubevisor.io/{name} started (runStrategy Halted -> RerunOnFailure)",
    ]
    assert objects.get("vm", name)["spec"]["runStrategy"] == "RerunOnFailure"


def test_restart_that_does_not_stop_in_time_leaves_the_vm_stopped(
    cli: Any, objects: Any, name: str
) -> None:
    objects.vm(name)
    result = cli("restart", name, "-n", objects.namespace, "--timeout", "1s")
    assert result.code == 1
    assert result.err.startswith(f"error: virtualmachine {name} did not stop within 1s")
    assert f"run `kubevisor start {name}`" in result.err
    assert objects.get("vm", name)["spec"]["runStrategy"] == "Halted"


@pytest.mark.parametrize(
    ("before", "args", "flavor", "says"),
    [
        pytest.param(
            {"name": "m1.small"},
            ["--flavor", "m1.large"],
            {"name": "m1.large", "kind": "VirtualMachineClusterFlavor"},
            "resized (flavor m1.small -> m1.large; the new size applies at its next start)",
            id="cluster-flavor",
        ),
        pytest.param(
            None,
            ["--flavor", "big", "--namespaced"],
            {"name": "big", "kind": "VirtualMachineFlavor"},
            "resized (flavor none -> big; the new size applies at its next start)",
            id="namespaced-flavor-for-a-vm-without-one",
        ),
        pytest.param(
            {"name": "m1.small"},
            ["--flavor", "m1.small"],
            {"name": "m1.small", "kind": "VirtualMachineClusterFlavor"},
            "unchanged (flavor is already VirtualMachineClusterFlavor m1.small)",
            id="same-flavor-changes-nothing",
        ),
    ],
)
def test_resize_names_the_flavor(
    cli: Any,
    objects: Any,
    name: str,
    before: dict[str, str] | None,
    args: list[str],
    flavor: dict[str, str],
    says: str,
) -> None:
    spec = {} if before is None else {"flavor": before}
    created = objects.vm(name, spec=spec)
    result = cli("resize", name, "-n", objects.namespace, *args)
    assert (result.code, result.err) == (0, "")
    assert result.out == f"virtualmachine.kubevisor.io/{name} {says}\n"
    after = objects.get("vm", name)
    assert after["spec"] == {**created["spec"], "flavor": flavor}


def test_restart_of_a_stopped_vm_is_refused(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name, spec={"runStrategy": "Halted"})
    result = cli("restart", name, "-n", objects.namespace)
    assert result.code == 1
    assert "use `kubevisor start" in result.err


# -- migrate ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target_host(control_plane: Any) -> Iterator[str]:
    host = f"cli-migrate-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "kubevisor.io/v1alpha1",
                "kind": "HypervisorHost",
                "metadata": {"name": host},
                "spec": {},
            }
        ),
    )
    yield host
    control_plane.kubectl("delete", "hypervisorhost", host, check=False)


def test_migrate_creates_a_migration_job(
    cli: Any, objects: Any, name: str, target_host: str
) -> None:
    objects.vm(name)
    result = cli("migrate", name, "-n", objects.namespace, "--to", target_host)
    assert (result.code, result.err) == (0, "")
    [job] = [j for j in objects.items("migrationjob") if j["spec"]["vm"] == name]
    assert result.out == f"migrationjob.kubevisor.io/{job['metadata']['name']} created\n"
    assert job["metadata"]["generateName"] == f"{name}-migration-"
    assert job["spec"]["targetHost"] == target_host


def test_migrate_without_target_lets_placement_choose(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name)
    result = cli("migrate", name, "-n", objects.namespace, "--name", f"{name}-move", "-o", "yaml")
    assert result.code == 0
    created = yaml.safe_load(result.out)
    assert created["metadata"]["name"] == f"{name}-move"
    assert "targetHost" not in objects.get("migrationjob", f"{name}-move")["spec"]


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        pytest.param(["no-such-vm"], '"no-such-vm" not found', id="unknown-vm"),
        pytest.param(["VM", "--to", "no-such-host"], '"no-such-host" not found', id="unknown-host"),
    ],
)
def test_migrate_refuses_unknown_objects(
    cli: Any, objects: Any, name: str, argv: list[str], error: str
) -> None:
    objects.vm(name)
    result = cli("migrate", *[name if a == "VM" else a for a in argv], "-n", objects.namespace)
    assert result.code == 1
    assert error in result.err
    assert not [j for j in objects.items("migrationjob") if j["spec"]["vm"] == name]


def test_migrate_dry_run_prints_a_valid_manifest_without_a_cluster(offline_cli: Any) -> None:
    result = offline_cli("migrate", "db-0", "-n", "prod", "--to", "hv-b", "--dry-run")
    assert result.code == 0
    manifest = yaml.safe_load(result.out)
    assert manifest == {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "MigrationJob",
        "metadata": {"generateName": "db-0-migration-", "namespace": "prod"},
        "spec": {"vm": "db-0", "targetHost": "hv-b"},
    }
    MigrationJob.model_validate(manifest)


@pytest.mark.parametrize(
    ("phase", "reason", "code", "says"),
    [
        pytest.param("Succeeded", None, 0, "Succeeded", id="succeeded-exits-0"),
        pytest.param("Failed", "target refused", 1, "Failed: target refused", id="failed-exits-1"),
        pytest.param("Cancelled", None, 1, "Cancelled: no reason given", id="cancelled-exits-1"),
    ],
)
def test_migrate_wait_follows_the_job(
    cli: Any, objects: Any, name: str, phase: str, reason: str | None, code: int, says: str
) -> None:
    objects.vm(name)
    process = cli.spawn("migrate", name, "-n", objects.namespace, "--wait", "--timeout", "60s")
    job = eventually(
        lambda: next((j for j in objects.items("migrationjob") if j["spec"]["vm"] == name), None),
        what="the MigrationJob",
    )
    job_name = job["metadata"]["name"]
    objects.patch_status("migrationjob", job_name, {"phase": "Running"})
    assert process.poll() is None
    objects.patch_status(
        "migrationjob", job_name, {"phase": phase, **({"reason": reason} if reason else {})}
    )
    returned, out, err = finish(process)
    assert returned == code
    assert out.startswith(f"migrationjob.kubevisor.io/{job_name} created\n")
    assert says in (out if code == 0 else err)


def test_migrate_wait_times_out(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name)
    result = cli("migrate", name, "-n", objects.namespace, "--wait", "--timeout", "1s")
    assert result.code == 1
    assert "timed out after 1s waiting for migrationjob" in result.err


# -- the pure parts ----------------------------------------------------------------------------


def vm_object(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": "x", "resourceVersion": "7", **metadata}, "spec": spec}


@pytest.mark.parametrize(
    ("decide", "obj", "patch"),
    [
        pytest.param(
            verbs.stop_change,
            vm_object({}),
            {
                "metadata": {"annotations": {LAST: "Always"}, "resourceVersion": "7"},
                "spec": {"runStrategy": "Halted"},
            },
            id="stop-of-the-default-strategy",
        ),
        pytest.param(
            verbs.start_change,
            vm_object({"runStrategy": "Halted"}, annotations={LAST: "Manual"}),
            {
                "metadata": {"annotations": {LAST: None}, "resourceVersion": "7"},
                "spec": {"runStrategy": "Manual"},
            },
            id="start-deletes-the-annotation-with-null",
        ),
        pytest.param(
            verbs.start_change,
            vm_object({"runStrategy": "Halted"}, annotations={LAST: "Sometimes"}),
            {
                "metadata": {"annotations": {LAST: None}, "resourceVersion": "7"},
                "spec": {"runStrategy": "Always"},
            },
            id="start-ignores-an-invalid-saved-strategy",
        ),
    ],
)
def test_patches_are_conditional_merge_patches(
    decide: Any, obj: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert decide(obj).patch == patch
