"""Live migration decisions: the MigrationJob lifecycle, admission, timeouts, progress,
and which disks a storage migration copies.

Pure: no clocks (times come in as seconds from any monotonic or wall clock, as long as
one caller uses one clock), no libvirt, no event loop. Three callers:

- the controller checks every phase change with `check_transition`, and before letting a
  Pending job start asks `admit` (or `admit_in_order` for a whole queue at once, which is
  what keeps two jobs admitted in one pass from both taking the last slot);
- the source host's agent, while `Hypervisor.migrate` runs, samples
  `Hypervisor.job_stats` every few seconds and asks `step` what to do: carry on, switch
  to post-copy, or abort (`step` keeps a `Monitor`, folding each sample into a `Watermark`
  with `track`, and asks `judge`);
- the agent turns each sample into the MigrationJob's `status.progress` with `progress`.

Timeouts follow KubeVirt's defaults (the same field names as its MigrationPolicy):

- completion: `completionTimeoutPerGiB` x max(guest memory in GiB, 2) seconds from the
  start of the transfer (150 s/GiB; Nova's formula with KubeVirt's lower factor);
- progress: `progressTimeout` seconds in which neither the data processed grew nor the
  data remaining shrank. Only a transfer that moves nothing at all stalls: a migration that
  keeps copying but does not converge is the completion timeout's business. Nova removed
  its progress timeout because measuring progress by remaining data alone "frequently
  caused live-migrations to fail ... even though [they were] still making good progress"
  (bug 1644248).

On either expiry the migration switches to post-copy when the job allows it and it has not
already switched; otherwise it is aborted. Once in post-copy nothing is aborted: the guest
already runs on the target and aborting would lose it.
"""

from __future__ import annotations

import dataclasses
import enum
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kubevisor.api.migrationjob import TERMINAL_PHASES, MigrationOptions, Phase, Progress
from kubevisor.core import hypervisors
from kubevisor.core.placement.model import Request

GIB = 1024**3
MIN_GIB = 2  # a tiny guest still gets the timeout of a 2 GiB one (Nova and KubeVirt)

# --- lifecycle -----------------------------------------------------------------------------

PHASES: tuple[Phase, ...] = (
    "Pending",
    "Scheduling",
    "Preparing",
    "Running",
    "Succeeded",
    "Failed",
    "Cancelled",
)
TERMINAL: frozenset[Phase] = frozenset(p for p in PHASES if p in TERMINAL_PHASES)

# Pending: waiting for admission (concurrency limits). Scheduling: admitted, choosing or
# checking the target. Preparing: the target is claimed and getting ready (pCPUs, files).
# Running: the source agent transfers. Every phase may stay where it is; none goes back,
# because a job that lost its target fails and a new job is the retry (KubeVirt's VMIM
# never goes back either, and a status that only moves forward is easy to reason about).
_NEXT: Mapping[Phase, frozenset[Phase]] = {
    # Pending may go straight to Preparing: the controller picks and claims the target in
    # one step, so Scheduling is only ever seen by a job whose target it cannot claim yet.
    "Pending": frozenset({"Scheduling", "Preparing", "Failed", "Cancelled"}),
    "Scheduling": frozenset({"Preparing", "Failed", "Cancelled"}),
    "Preparing": frozenset({"Running", "Failed", "Cancelled"}),
    # A Running job that is cancelled may still succeed: post-copy cannot be undone.
    "Running": frozenset({"Succeeded", "Failed", "Cancelled"}),
    "Succeeded": frozenset(),
    "Failed": frozenset(),
    "Cancelled": frozenset(),
}


class IllegalTransition(ValueError):
    """A MigrationJob phase change the lifecycle does not allow: a bug in its caller."""


def check_transition(old: Phase | None, new: Phase) -> Phase:
    """Return `new` if a job may move from `old` (None: no status yet) to it, else raise."""
    if old is None:
        if new != "Pending":
            raise IllegalTransition(f"a MigrationJob starts Pending, not {new}")
        return new
    if old == new or new in _NEXT[old]:
        return new
    raise IllegalTransition(f"a MigrationJob cannot go from {old} to {new}")


def is_terminal(phase: Phase | None) -> bool:
    """Succeeded, Failed and Cancelled: nothing more happens to the job."""
    return phase in TERMINAL


# --- what can move, and where ----------------------------------------------------------------


def refusal(source_type: str) -> str | None:
    """Why a VM on a host of `source_type` cannot live-migrate at all, or None when it can.

    Asked by the controller before it looks for a target, so the job fails with the reason
    instead of the placement engine's "no other host" (`core.hypervisors` has the table).
    """
    if hypervisors.can_live_migrate(source_type):
        return None
    why = hypervisors.NO_LIVE_MIGRATION.get(source_type, "its driver has no live migration")
    return (
        f"{source_type} hosts cannot live-migrate ({why}); stop and start it on another "
        "host instead"
    )


def target_request(request: Request, *, source_type: str) -> Request:
    """What a migration's target must offer: what the VM asks for, on the source's type of
    hypervisor (a running domain moves only between two hypervisors of one kind)."""
    if not source_type:
        return request  # an agent that does not say: libvirt refuses a mismatch itself
    return dataclasses.replace(request, hypervisor_types=frozenset({source_type}))


# --- admission: how many migrations may run at once ----------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """Concurrent migrations allowed; KubeVirt's defaults plus the inbound limit it lacks."""

    per_cluster: int = 5
    outbound_per_host: int = 2
    inbound_per_host: int = 2


@dataclass(frozen=True, slots=True)
class Flight:
    """One migration as admission sees it; `target` is None until placement picked one."""

    job: str  # namespace/name, unique
    source: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a job may start now; `reason` says why it waits (for its status)."""

    admitted: bool
    reason: str = ""


ADMITTED = Admission(admitted=True)


def admit(job: Flight, in_flight: Iterable[Flight], limits: Limits = Limits()) -> Admission:
    """May `job` start, given the jobs already admitted and not yet finished (`in_flight`)?

    Called by the controller for a Pending job, and again once placement chose the target
    (the inbound limit needs it). A job already in flight is admitted again, so asking
    twice is harmless.
    """
    flying = list(in_flight)
    others = [f for f in flying if f.job != job.job]
    if len(others) < len(flying):
        return ADMITTED
    # (running, limit, which, where): the first limit reached refuses the job.
    counts = [
        (len(others), limits.per_cluster, "", "in the cluster"),
        (
            sum(f.source == job.source for f in others),
            limits.outbound_per_host,
            "outbound ",
            f"from host {job.source}",
        ),
    ]
    if job.target is not None:
        counts.append(
            (
                sum(f.target == job.target for f in others),
                limits.inbound_per_host,
                "inbound ",
                f"to host {job.target}",
            )
        )
    for running, limit, which, where in counts:
        if running >= limit:
            counted = "migration" if running == 1 else "migrations"
            return Admission(
                False, f"{running} {which}{counted} already running {where} (limit {limit})"
            )
    return ADMITTED


def admit_in_order(
    waiting: Sequence[Flight], in_flight: Iterable[Flight], limits: Limits = Limits()
) -> dict[str, Admission]:
    """Admission of each waiting job, oldest first, counting those admitted before it.

    Deciding the whole queue in one pass is what keeps two jobs from both taking the last
    slot (KubeVirt's per-node limit "might be ignored because of race condition", #15201).
    """
    flying = list(in_flight)
    decisions: dict[str, Admission] = {}
    for job in waiting:
        decision = admit(job, flying, limits)
        decisions[job.job] = decision
        if decision.admitted and all(f.job != job.job for f in flying):
            flying.append(job)
    return decisions


# --- progress and timeouts -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobStats:
    """A running migration job as the hypervisor reports it (virDomainGetJobStats).

    Returned by `Hypervisor.job_stats`; bytes, bytes/s and milliseconds as libvirt says.
    """

    data_total: int
    data_processed: int
    data_remaining: int
    memory_iteration: int  # pre-copy pass over guest memory, from 1
    bandwidth_bps: int  # memory transfer rate now
    time_elapsed_ms: int
    dirty_rate_pps: int = 0  # pages dirtied per second by the guest
    post_copy: bool = False  # the job switched to post-copy (the guest runs on the target)


def progress(stats: JobStats) -> Progress:
    """The MigrationJob `status.progress` record for one sample; the agent writes it."""
    percent = None
    if stats.data_total > 0:
        done = stats.data_total - min(stats.data_remaining, stats.data_total)
        percent = min(100, max(0, done * 100 // stats.data_total))
    return Progress(
        data_total=stats.data_total,
        data_processed=stats.data_processed,
        data_remaining=stats.data_remaining,
        iteration=stats.memory_iteration,
        bandwidth_bps=stats.bandwidth_bps,
        percent=percent,
    )


@dataclass(frozen=True, slots=True)
class Watermark:
    """The best progress seen so far and when it was last beaten; the agent keeps one."""

    processed: int
    remaining: int
    at: float


def track(previous: Watermark | None, stats: JobStats, *, now: float) -> Watermark:
    """Fold one job-stats sample into the watermark; `now` is when it was taken."""
    if previous is None:
        return Watermark(stats.data_processed, stats.data_remaining, now)
    if stats.data_processed > previous.processed or stats.data_remaining < previous.remaining:
        return Watermark(
            max(stats.data_processed, previous.processed),
            min(stats.data_remaining, previous.remaining),
            now,
        )
    return previous


def completion_timeout(options: MigrationOptions, *, memory_bytes: int) -> float:
    """Seconds the transfer may take: completionTimeoutPerGiB x max(memory GiB, 2)."""
    return float(options.completion_timeout_per_gi_b * max(memory_bytes / GIB, MIN_GIB))


class Action(enum.Enum):
    """What the agent does with a running migration after a sample."""

    CONTINUE = "continue"
    SWITCH_TO_POST_COPY = "switch-to-post-copy"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class Verdict:
    """`action` and, unless continuing quietly, why (for the job's status and events)."""

    action: Action
    reason: str = ""


CONTINUE = Verdict(Action.CONTINUE)


def judge(
    watermark: Watermark | None,
    *,
    started_at: float,
    now: float,
    options: MigrationOptions,
    memory_bytes: int,
    post_copy_active: bool = False,
    cancel_requested: bool = False,
) -> Verdict:
    """Continue, switch to post-copy, or abort a running migration; called by the source agent.

    `watermark` is None before the first sample (the progress clock then runs from
    `started_at`); `post_copy_active` is True once the latest `JobStats.post_copy` says so
    or the agent has asked for the switch (so it asks once); `cancel_requested` is the
    job's `spec.cancel`.
    """
    if post_copy_active:
        if cancel_requested:
            return Verdict(
                Action.CONTINUE,
                "cancel requested, but the migration is in post-copy: the guest already runs "
                "on the target and aborting now would lose it",
            )
        return CONTINUE
    if cancel_requested:
        return Verdict(Action.ABORT, "cancelled (spec.cancel)")
    elapsed = now - started_at
    limit = completion_timeout(options, memory_bytes=memory_bytes)
    stalled = now - (watermark.at if watermark is not None else started_at)
    if elapsed > limit:
        expired = (
            f"not completed after {elapsed:.0f}s (completion timeout {limit:.0f}s: "
            f"{options.completion_timeout_per_gi_b}s/GiB x "
            f"{max(memory_bytes / GIB, MIN_GIB):.2f} GiB)"
        )
    elif stalled > options.progress_timeout:
        expired = f"no progress for {stalled:.0f}s (progress timeout {options.progress_timeout}s)"
    else:
        return CONTINUE
    if options.post_copy:
        return Verdict(Action.SWITCH_TO_POST_COPY, f"{expired}; switching to post-copy")
    return Verdict(Action.ABORT, f"{expired}; aborted (post-copy not allowed)")


@dataclass(frozen=True, slots=True)
class Monitor:
    """A running transfer as the source agent's monitor loop knows it between samples."""

    started_at: float
    watermark: Watermark | None = None
    moved: int = 0
    """Bytes processed by the latest sample (what the transfer moved, once it ends)."""
    post_copy: bool = False
    """The job is in post-copy: a sample said so, or the agent switched it."""
    aborted: str | None = None
    """Why the agent aborted the job, once it has asked libvirt to."""


@dataclass(frozen=True, slots=True)
class Step:
    """What `step` decided: the monitor after the sample, and what to do now."""

    monitor: Monitor
    action: Action = Action.CONTINUE
    reason: str = ""


def step(
    monitor: Monitor,
    stats: JobStats | None,
    *,
    now: float,
    options: MigrationOptions,
    memory_bytes: int,
    cancel_requested: bool,
) -> Step:
    """Fold one sample (None: libvirt said nothing) into the monitor and decide: carry on,
    switch to post-copy, or abort. An abort is asked for once; a switch until it took
    (the agent then calls `switched`)."""
    if stats is not None:
        monitor = dataclasses.replace(
            monitor,
            moved=max(monitor.moved, stats.data_processed),
            watermark=track(monitor.watermark, stats, now=now),
            post_copy=monitor.post_copy or stats.post_copy,
        )
    verdict = judge(
        monitor.watermark,
        started_at=monitor.started_at,
        now=now,
        options=options,
        memory_bytes=memory_bytes,
        post_copy_active=monitor.post_copy,
        cancel_requested=cancel_requested,
    )
    if verdict.action is Action.ABORT and monitor.aborted is None:
        return Step(
            dataclasses.replace(monitor, aborted=verdict.reason), Action.ABORT, verdict.reason
        )
    if verdict.action is Action.SWITCH_TO_POST_COPY:
        return Step(monitor, Action.SWITCH_TO_POST_COPY, verdict.reason)
    return Step(monitor)


def switched(monitor: Monitor) -> Monitor:
    """The monitor once libvirt accepted the switch to post-copy."""
    return dataclasses.replace(monitor, post_copy=True)


def writable_disks(xml: str) -> dict[str, str]:
    """Target dev -> file of the domain's writable file disks."""
    devs = {}
    for disk in ET.fromstring(xml).iterfind("devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
            continue
        if source is not None and source.get("file") and target is not None:
            devs[str(target.get("dev"))] = str(source.get("file"))
    return devs


def disks_to_copy(source_xml: str, target_xml: str | None, shared: str | None) -> list[str]:
    """Target devs storage migration must copy: every writable file disk except those the
    two hosts share, i.e. under the shared storage path and the same file on both sides."""
    there = writable_disks(target_xml) if target_xml else {}
    return [
        dev
        for dev, path in writable_disks(source_xml).items()
        if not (shared is not None and there.get(dev) == path and _under(path, shared))
    ]


def _under(path: str, root: str) -> bool:
    return path.startswith(root.rstrip("/") + "/")
