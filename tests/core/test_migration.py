"""Migration decisions: MigrationJob phases, admission limits, timeouts and progress."""

from __future__ import annotations

import pytest

from kubevisor.api.migrationjob import MigrationOptions, Phase, Progress
from kubevisor.core import migration
from kubevisor.core.migration import (
    Action,
    Admission,
    Flight,
    IllegalTransition,
    JobStats,
    Limits,
    Watermark,
)
from kubevisor.core.placement.model import Request

GIB = migration.GIB
MIB = 1024**2

# --- what can move, and where ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_type", "refused"),
    [
        pytest.param("kvm", None, id="kvm-migrates"),
        pytest.param("vmware", None, id="vmware-vmotions"),
        pytest.param("", None, id="unreported-type-is-not-judged"),
        pytest.param(
            "lxc",
            "lxc hosts cannot live-migrate (a system container has no memory state to move); "
            "stop and start it on another host instead",
            id="lxc-cannot",
        ),
    ],
)
def test_refusal_by_source_type(source_type: str, refused: str | None) -> None:
    assert migration.refusal(source_type) == refused


def test_target_request_requires_the_source_type() -> None:
    wanted = Request(
        name="default/a", vcpus=1, memory_mib=64, hypervisor_types=frozenset({"kvm", "qemu"})
    )
    assert migration.target_request(wanted, source_type="qemu").hypervisor_types == {"qemu"}
    assert migration.target_request(wanted, source_type="") == wanted


# --- lifecycle -----------------------------------------------------------------------------


def test_every_phase_has_a_row_and_terminal_phases_lead_nowhere() -> None:
    assert set(migration._NEXT) == set(migration.PHASES)
    assert frozenset({"Succeeded", "Failed", "Cancelled"}) == migration.TERMINAL
    assert all(not migration._NEXT[phase] for phase in migration.TERMINAL)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(None, "Pending", id="created-pending"),
        pytest.param("Pending", "Scheduling", id="admitted"),
        pytest.param("Scheduling", "Preparing", id="target-chosen"),
        pytest.param("Preparing", "Running", id="transfer-starts"),
        pytest.param("Running", "Succeeded", id="transfer-completes"),
        pytest.param("Running", "Failed", id="transfer-fails"),
        pytest.param("Running", "Cancelled", id="aborted-while-running"),
        pytest.param("Pending", "Cancelled", id="cancelled-while-waiting"),
        pytest.param("Scheduling", "Failed", id="no-target-fits"),
        pytest.param("Preparing", "Cancelled", id="cancelled-while-preparing"),
        pytest.param("Running", "Running", id="staying-is-fine"),
        pytest.param("Succeeded", "Succeeded", id="terminal-may-be-rewritten"),
    ],
)
def test_legal_transitions(old: Phase | None, new: Phase) -> None:
    assert migration.check_transition(old, new) == new


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(None, "Running", "starts Pending, not Running", id="must-start-pending"),
        pytest.param("Pending", "Running", "from Pending to Running", id="no-skipping-admission"),
        pytest.param("Running", "Preparing", "from Running to Preparing", id="no-going-back"),
        pytest.param("Succeeded", "Failed", "from Succeeded to Failed", id="succeeded-is-final"),
        pytest.param("Failed", "Pending", "from Failed to Pending", id="failed-is-final"),
        pytest.param("Cancelled", "Running", "from Cancelled to Running", id="cancelled-is-final"),
        pytest.param("Pending", "Succeeded", "from Pending to Succeeded", id="no-success-unrun"),
    ],
)
def test_illegal_transitions_raise(old: Phase | None, new: Phase, message: str) -> None:
    with pytest.raises(IllegalTransition, match=message):
        migration.check_transition(old, new)


@pytest.mark.parametrize(
    ("phase", "terminal"),
    [pytest.param(p, p in ("Succeeded", "Failed", "Cancelled"), id=p) for p in migration.PHASES]
    + [pytest.param(None, False, id="no-status")],
)
def test_is_terminal(phase: Phase | None, terminal: bool) -> None:
    assert migration.is_terminal(phase) is terminal


# --- admission -----------------------------------------------------------------------------


def flights(*pairs: tuple[str, str | None]) -> list[Flight]:
    return [Flight(f"ns/running-{i}", source, target) for i, (source, target) in enumerate(pairs)]


@pytest.mark.parametrize(
    ("job", "in_flight", "limits", "expected"),
    [
        pytest.param(Flight("ns/j", "a", "b"), [], Limits(), Admission(True), id="idle-cluster"),
        pytest.param(
            Flight("ns/j", "a", "b"),
            flights(("a", "c")),
            Limits(),
            Admission(True),
            id="one-outbound-of-two",
        ),
        pytest.param(
            Flight("ns/j", "a", "b"),
            flights(("a", "c"), ("a", "d")),
            Limits(),
            Admission(False, "2 outbound migrations already running from host a (limit 2)"),
            id="outbound-limit",
        ),
        pytest.param(
            Flight("ns/j", "a", "b"),
            flights(("c", "b"), ("d", "b")),
            Limits(),
            Admission(False, "2 inbound migrations already running to host b (limit 2)"),
            id="inbound-limit",
        ),
        pytest.param(
            Flight("ns/j", "a", None),
            flights(("c", "b"), ("d", "b")),
            Limits(),
            Admission(True),
            id="inbound-unknown-until-placement-picks-a-target",
        ),
        pytest.param(
            Flight("ns/j", "a", "b"),
            flights(("c", "d"), ("e", "f"), ("g", "h"), ("i", "j"), ("k", "l")),
            Limits(),
            Admission(False, "5 migrations already running in the cluster (limit 5)"),
            id="cluster-limit-first",
        ),
        pytest.param(
            Flight("ns/j", "a", "b"),
            flights(("a", "c")),
            Limits(outbound_per_host=1),
            Admission(False, "1 outbound migration already running from host a (limit 1)"),
            id="configured-limit-singular",
        ),
        pytest.param(
            Flight("ns/running-0", "a", "b"),
            flights(("a", "b"), ("a", "c")),
            Limits(outbound_per_host=1, inbound_per_host=1, per_cluster=1),
            Admission(True),
            id="already-in-flight-stays-admitted",
        ),
    ],
)
def test_admit(job: Flight, in_flight: list[Flight], limits: Limits, expected: Admission) -> None:
    assert migration.admit(job, in_flight, limits) == expected


def test_admit_in_order_counts_jobs_admitted_earlier_in_the_same_pass() -> None:
    waiting = [Flight("ns/first", "a", "x"), Flight("ns/second", "a", "y"), Flight("ns/third", "b")]
    decisions = migration.admit_in_order(waiting, flights(("a", "z")), Limits())
    assert decisions == {
        "ns/first": Admission(True),
        "ns/second": Admission(
            False, "2 outbound migrations already running from host a (limit 2)"
        ),
        "ns/third": Admission(True),
    }


def test_admit_in_order_respects_the_cluster_limit_across_hosts() -> None:
    waiting = [Flight(f"ns/{i}", f"h{i}") for i in range(4)]
    decisions = migration.admit_in_order(waiting, [], Limits(per_cluster=3))
    assert [d.admitted for d in decisions.values()] == [True, True, True, False]


# --- progress ------------------------------------------------------------------------------


def stats(processed: int, remaining: int, *, total: int = 100 * MIB, **kw: int) -> JobStats:
    fields = dict(memory_iteration=1, bandwidth_bps=MIB, time_elapsed_ms=1000) | kw
    return JobStats(data_total=total, data_processed=processed, data_remaining=remaining, **fields)


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        pytest.param(
            stats(25 * MIB, 75 * MIB, memory_iteration=1),
            Progress(
                data_total=100 * MIB,
                data_processed=25 * MIB,
                data_remaining=75 * MIB,
                iteration=1,
                bandwidth_bps=MIB,
                percent=25,
            ),
            id="quarter-done",
        ),
        pytest.param(
            stats(0, 0, total=0),
            Progress(
                data_total=0,
                data_processed=0,
                data_remaining=0,
                iteration=1,
                bandwidth_bps=MIB,
                percent=None,
            ),
            id="job-just-started-no-total-yet",
        ),
        pytest.param(
            stats(300 * MIB, 1 * MIB, memory_iteration=4),
            Progress(
                data_total=100 * MIB,
                data_processed=300 * MIB,
                data_remaining=1 * MIB,
                iteration=4,
                bandwidth_bps=MIB,
                percent=99,
            ),
            id="later-iterations-resend-dirty-pages",
        ),
    ],
)
def test_progress_record(sample: JobStats, expected: Progress) -> None:
    assert migration.progress(sample) == expected


@pytest.mark.parametrize(
    ("previous", "sample", "expected"),
    [
        pytest.param(None, stats(10, 90), Watermark(10, 90, 5.0), id="first-sample"),
        pytest.param(
            Watermark(10, 90, 1.0), stats(20, 90), Watermark(20, 90, 5.0), id="more-processed"
        ),
        pytest.param(
            Watermark(10, 90, 1.0), stats(10, 80), Watermark(10, 80, 5.0), id="less-remaining"
        ),
        pytest.param(
            Watermark(50, 40, 1.0),
            stats(50, 60),
            Watermark(50, 40, 1.0),
            id="no-new-best-keeps-the-old-time",
        ),
        pytest.param(
            Watermark(50, 40, 1.0),
            stats(60, 60),
            Watermark(60, 40, 5.0),
            id="dirty-pages-grow-remaining-but-bytes-still-move",
        ),
    ],
)
def test_track(previous: Watermark | None, sample: JobStats, expected: Watermark) -> None:
    assert migration.track(previous, sample, now=5.0) == expected


@pytest.mark.parametrize(
    ("per_gib", "memory", "seconds"),
    [
        pytest.param(150, 256 * MIB, 300.0, id="small-guest-counts-as-2-gib"),
        pytest.param(150, 8 * GIB, 1200.0, id="8-gib-guest"),
        pytest.param(20, 3 * GIB, 60.0, id="openshift-20s-per-gib"),
        pytest.param(150, 5 * GIB // 2, 375.0, id="fractional-gib"),
    ],
)
def test_completion_timeout(per_gib: int, memory: int, seconds: float) -> None:
    options = MigrationOptions.model_validate({"completionTimeoutPerGiB": per_gib})
    assert migration.completion_timeout(options, memory_bytes=memory) == seconds


# --- judge ---------------------------------------------------------------------------------

DEFAULTS = MigrationOptions()
POST_COPY = MigrationOptions.model_validate({"postCopy": True})
FAST = MigrationOptions.model_validate(
    {"completionTimeoutPerGiB": 10, "progressTimeout": 5, "postCopy": True}
)


@pytest.mark.parametrize(
    ("watermark", "now", "options", "post_copy_active", "cancel", "action", "reason"),
    [
        pytest.param(None, 10.0, DEFAULTS, False, False, Action.CONTINUE, "", id="just-started"),
        pytest.param(
            Watermark(1, 1, 299.0),
            299.0,
            DEFAULTS,
            False,
            False,
            Action.CONTINUE,
            "",
            id="progressing-inside-the-completion-timeout",
        ),
        pytest.param(
            Watermark(1, 1, 300.0),
            301.0,
            DEFAULTS,
            False,
            False,
            Action.ABORT,
            "not completed after 301s (completion timeout 300s: 150s/GiB x 2.00 GiB); "
            "aborted (post-copy not allowed)",
            id="completion-timeout-aborts",
        ),
        pytest.param(
            Watermark(1, 1, 300.0),
            301.0,
            POST_COPY,
            False,
            False,
            Action.SWITCH_TO_POST_COPY,
            "not completed after 301s (completion timeout 300s: 150s/GiB x 2.00 GiB); "
            "switching to post-copy",
            id="completion-timeout-switches-to-post-copy",
        ),
        pytest.param(
            Watermark(1, 1, 10.0),
            161.0,
            DEFAULTS,
            False,
            False,
            Action.ABORT,
            "no progress for 151s (progress timeout 150s); aborted (post-copy not allowed)",
            id="stall-aborts",
        ),
        pytest.param(
            None,
            151.0,
            DEFAULTS,
            False,
            False,
            Action.ABORT,
            "no progress for 151s (progress timeout 150s); aborted (post-copy not allowed)",
            id="no-sample-ever-counts-as-stalled-from-the-start",
        ),
        pytest.param(
            Watermark(1, 1, 10.0),
            16.0,
            FAST,
            False,
            False,
            Action.SWITCH_TO_POST_COPY,
            "no progress for 6s (progress timeout 5s); switching to post-copy",
            id="stall-switches-to-post-copy",
        ),
        pytest.param(
            Watermark(1, 1, 10.0),
            1000.0,
            FAST,
            True,
            False,
            Action.CONTINUE,
            "",
            id="post-copy-is-never-judged-again",
        ),
        pytest.param(
            Watermark(1, 1, 10.0),
            11.0,
            DEFAULTS,
            False,
            True,
            Action.ABORT,
            "cancelled (spec.cancel)",
            id="cancel-aborts",
        ),
        pytest.param(
            Watermark(1, 1, 10.0),
            11.0,
            DEFAULTS,
            True,
            True,
            Action.CONTINUE,
            "cancel requested, but the migration is in post-copy: the guest already runs on "
            "the target and aborting now would lose it",
            id="cancel-in-post-copy-cannot-abort",
        ),
    ],
)
def test_judge(
    watermark: Watermark | None,
    now: float,
    options: MigrationOptions,
    post_copy_active: bool,
    cancel: bool,
    action: Action,
    reason: str,
) -> None:
    verdict = migration.judge(
        watermark,
        started_at=0.0,
        now=now,
        options=options,
        memory_bytes=256 * MIB,
        post_copy_active=post_copy_active,
        cancel_requested=cancel,
    )
    assert (verdict.action, verdict.reason) == (action, reason)


def test_judge_uses_the_guest_memory_above_two_gib() -> None:
    verdict = migration.judge(
        Watermark(1, 1, 590.0),
        started_at=0.0,
        now=599.0,
        options=DEFAULTS,
        memory_bytes=4 * GIB,
    )
    assert verdict.action is Action.CONTINUE
    late = migration.judge(
        Watermark(1, 1, 700.0), started_at=0.0, now=701.0, options=DEFAULTS, memory_bytes=4 * GIB
    )
    assert late.action is Action.ABORT
    assert "completion timeout 600s: 150s/GiB x 4.00 GiB" in late.reason


# --- the source agent's monitor: one step per sample --------------------------------------

NO_POST_COPY = MigrationOptions.model_validate({"progressTimeout": 5})


def monitor_step(
    monitor: migration.Monitor,
    sample: JobStats | None,
    now: float,
    options: MigrationOptions = NO_POST_COPY,
    *,
    cancel: bool = False,
) -> migration.Step:
    return migration.step(
        monitor,
        sample,
        now=now,
        options=options,
        memory_bytes=GIB,
        cancel_requested=cancel,
    )


def test_step_folds_samples_into_the_monitor() -> None:
    first = monitor_step(migration.Monitor(started_at=0.0), stats(10 * MIB, 90 * MIB), 1.0)
    assert first.action is Action.CONTINUE
    assert first.monitor.watermark == Watermark(10 * MIB, 90 * MIB, 1.0)
    assert first.monitor.moved == 10 * MIB
    later = monitor_step(first.monitor, stats(30 * MIB, 70 * MIB), 2.0)
    assert (later.monitor.moved, later.monitor.watermark) == (
        30 * MIB,
        Watermark(30 * MIB, 70 * MIB, 2.0),
    )
    unchanged = monitor_step(later.monitor, None, 3.0)
    assert unchanged.monitor == later.monitor, "no sample: nothing to fold"


def test_step_aborts_a_stalled_transfer_once() -> None:
    stalled = monitor_step(migration.Monitor(started_at=0.0), stats(10 * MIB, 90 * MIB), 1.0)
    still = monitor_step(stalled.monitor, stats(10 * MIB, 90 * MIB), 5.0)
    assert still.action is Action.CONTINUE, "4s without progress: inside the 5s timeout"
    aborted = monitor_step(still.monitor, stats(10 * MIB, 90 * MIB), 7.0)
    assert aborted.action is Action.ABORT
    assert (
        aborted.reason
        == "no progress for 6s (progress timeout 5s); aborted (post-copy not allowed)"
    )
    assert aborted.monitor.aborted == aborted.reason
    again = monitor_step(aborted.monitor, stats(10 * MIB, 90 * MIB), 8.0)
    assert again.action is Action.CONTINUE, "asked once: the job ends aborted"
    assert again.monitor.aborted == aborted.reason


def test_step_switches_to_post_copy_until_it_took() -> None:
    options = MigrationOptions.model_validate({"progressTimeout": 5, "postCopy": True})
    first = monitor_step(migration.Monitor(started_at=0.0), stats(10 * MIB, 90 * MIB), 1.0, options)
    switch = monitor_step(first.monitor, stats(10 * MIB, 90 * MIB), 7.0, options)
    assert switch.action is Action.SWITCH_TO_POST_COPY
    assert switch.reason == "no progress for 6s (progress timeout 5s); switching to post-copy"
    retried = monitor_step(switch.monitor, stats(10 * MIB, 90 * MIB), 8.0, options)
    assert retried.action is Action.SWITCH_TO_POST_COPY, "the switch failed: asked again"
    switched = migration.switched(retried.monitor)
    done = monitor_step(switched, stats(10 * MIB, 90 * MIB), 9.0, options, cancel=True)
    assert done.action is Action.CONTINUE, "in post-copy nothing is aborted, not even a cancel"


def test_step_takes_post_copy_from_the_sample() -> None:
    sample = JobStats(
        data_total=100 * MIB,
        data_processed=50 * MIB,
        data_remaining=50 * MIB,
        memory_iteration=1,
        bandwidth_bps=MIB,
        time_elapsed_ms=1000,
        post_copy=True,
    )
    assert monitor_step(migration.Monitor(started_at=0.0), sample, 1.0).monitor.post_copy


def test_step_aborts_on_cancel() -> None:
    cancelled = monitor_step(migration.Monitor(started_at=0.0), None, 0.5, cancel=True)
    assert (cancelled.action, cancelled.reason) == (Action.ABORT, "cancelled (spec.cancel)")
