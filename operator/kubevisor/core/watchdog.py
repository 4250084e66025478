"""The agent's watchdog: what a second process on the host does when the agent stops
beating (hung, stopped, deadlocked or dead) while its guests run on.

Self-fencing (`core.selffence`) is the agent's own act, so an agent that hangs fences
nothing, and after the controller's grace its VMs would run twice. The agent therefore
writes a heartbeat file every second while its self-fence guard runs (`Heartbeat`): its
pid, the monotonic time of its last Lease renewal that succeeded, and its deadline. The
watchdog (`kubevisor-watchdog`, `agent.watchdog`) reads it every second and, once the
agent has not beaten for `STALE` seconds (`judge`):

- when the deadline has passed since that renewal, it destroys the host's kubevisor domains
  itself, the fence the agent would have done, and adds them to the fence file the agent
  adopts when it runs again (`agent.selffence`);
- when the agent has not beaten for `stall_after` seconds, it kills it, so that its
  supervisor (systemd, the kubelet) starts it again.

The guarantee of self-fencing thus holds whether or not the agent runs: the guests of a
host whose Lease was not renewed for the deadline are stopped by then (plus `STALE`, and
one check), as long as the watchdog and libvirtd run. Both processes read CLOCK_MONOTONIC
(`time.monotonic`), one clock for every process of a boot; a heartbeat of another boot is
ignored (no domain outlives a reboot).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

STALE = 3.0
"""Seconds without a beat after which the watchdog acts: the agent beats every second, and
while it beats it fences by itself."""

DEFAULT_STALL_AFTER = 30.0
"""Seconds without a beat after which the watchdog kills the agent for its supervisor to
restart it."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What the agent writes every second (`dumps`) and the watchdog reads (`parse`)."""

    pid: int
    started: int
    """The agent process's start time (/proc/PID/stat field 22): a pid reused by another
    process after the agent died is not killed."""
    boot: str
    """The boot id (/proc/sys/kernel/random/boot_id) the monotonic times belong to."""
    renewed: float
    """Monotonic seconds of the start of the last Lease renewal that succeeded."""
    deadline: float
    """The agent's --self-fence-after."""
    beat: float
    """Monotonic seconds when the agent wrote this."""

    def dumps(self) -> str:
        return json.dumps(asdict(self))


def parse(text: str) -> Heartbeat:
    """The heartbeat in `text`; ValueError saying what is wrong with it."""
    try:
        raw = json.loads(text)
        return Heartbeat(
            pid=int(raw["pid"]),
            started=int(raw["started"]),
            boot=str(raw["boot"]),
            renewed=float(raw["renewed"]),
            deadline=float(raw["deadline"]),
            beat=float(raw["beat"]),
        )
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"not a heartbeat: {error!r}") from None


@dataclass(frozen=True, slots=True)
class Verdict:
    fence: bool
    """Destroy the host's kubevisor domains now."""
    kill: bool
    """Kill the agent (it is stalled) for its supervisor to restart it."""
    silent_for: float
    """Seconds since the agent last beat."""
    unrenewed_for: float
    """Seconds since the agent's last Lease renewal that succeeded."""


def judge(beat: Heartbeat, *, now: float, stall_after: float) -> Verdict:
    """What the watchdog does at monotonic `now` about an agent whose last heartbeat is
    `beat`. An agent that beats fences by itself: the watchdog leaves it alone."""
    silent_for = now - beat.beat
    unrenewed_for = now - beat.renewed
    stale = silent_for >= STALE
    return Verdict(
        fence=stale and unrenewed_for >= beat.deadline,
        kill=silent_for >= stall_after,
        silent_for=silent_for,
        unrenewed_for=unrenewed_for,
    )


def check_stall_after(stall_after: float) -> str | None:
    """Why `--stall-after` cannot work, or None."""
    if stall_after < STALE:
        return (
            f"--stall-after {stall_after:g}s is shorter than {STALE:g}s, the silence after "
            "which the watchdog takes the agent for stopped: the agent beats once a second"
        )
    return None


def notice(*, host: str, silent_for: float, unrenewed_for: float) -> str:
    """What the watchdog logs, and the agent records as an event on each VM it fenced."""
    return (
        f"fenced by the watchdog on host {host}: its agent was silent for {silent_for:.0f}s "
        f"and its Lease not renewed for {unrenewed_for:.0f}s"
    )
