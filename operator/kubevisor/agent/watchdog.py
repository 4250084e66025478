"""`kubevisor-watchdog`: the agent's watchdog process, beside the agent on its host
(`core.watchdog` says what it does and why).

    kubevisor-watchdog --host NAME --state-dir DIR [--libvirt-uri URI] [--stall-after 30]

It reads the agent's heartbeat in the agent's state directory every second, with its own
connection to libvirtd: when the agent is silent and its self-fence deadline has passed,
it destroys the host's kubevisor domains and records them in the agent's fence file
(`agent.selffence.FenceFile`); when the agent is silent for --stall-after seconds, it
kills it (SIGKILL) for its supervisor to restart. Under systemd, run it as a unit of its
own (deploy/systemd/); in the agent's DaemonSet it is the `watchdog` container of the
agent's pod, which shares the pod's process namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kubevisor import flags
from kubevisor.agent.selffence import (
    HEARTBEAT,
    Fenced,
    FenceFile,
    boot_id,
    destroy_kubevisor_domains,
    process_start_time,
)
from kubevisor.core import watchdog
from kubevisor.drivers.base import Hypervisor, HypervisorError
from kubevisor.drivers.libvirt import LibvirtHypervisor

log = logging.getLogger("kubevisor.watchdog")

INTERVAL = 1.0
"""Seconds between two reads of the heartbeat."""


class Watchdog:
    def __init__(
        self,
        *,
        host: str,
        state_dir: Path,
        hypervisor: Hypervisor,
        stall_after: float,
        clock: Callable[[], float] = time.monotonic,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        self._host = host
        self._heartbeat = state_dir / HEARTBEAT
        self._file = FenceFile(state_dir)
        self._hv = hypervisor
        self._stall_after = stall_after
        self._clock = clock
        self._kill = kill
        self._boot = boot_id()
        self._killed: tuple[int, int] | None = None
        """(pid, start time) of the agent last killed: one kill each."""

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except HypervisorError as error:
                log.error("libvirt failed, trying again: %s", error)
            await asyncio.sleep(INTERVAL)

    async def check(self) -> None:
        beat = self._read()
        if beat is None:
            return
        verdict = watchdog.judge(beat, now=self._clock(), stall_after=self._stall_after)
        if verdict.fence:
            await self._fence(verdict)
        if verdict.kill:
            self._kill_stalled(beat, verdict)

    def _read(self) -> watchdog.Heartbeat | None:
        try:
            beat = watchdog.parse(self._heartbeat.read_text())
        except FileNotFoundError:
            log.debug("no heartbeat at %s yet: the agent has not started", self._heartbeat)
            return None
        except (OSError, ValueError) as error:
            log.warning("cannot read the heartbeat %s: %s", self._heartbeat, error)
            return None
        # Monotonic times of another boot say nothing, and no guest outlived the reboot.
        return beat if beat.boot == self._boot else None

    async def _fence(self, verdict: watchdog.Verdict) -> None:
        destroyed = await destroy_kubevisor_domains(self._hv)
        if not destroyed:
            return
        notice = watchdog.notice(
            host=self._host, silent_for=verdict.silent_for, unrenewed_for=verdict.unrenewed_for
        )
        for _, ref, domain in destroyed:
            log.error(
                "%s: destroyed domain %s of VM %s/%s", notice, domain, ref.namespace, ref.name
            )
        with self._file.locked():
            recorded = self._file.read()
            for uuid, ref, domain in destroyed:
                recorded.setdefault(
                    uuid, Fenced(ref=ref, domain=domain, reason="FencedByWatchdog", notice=notice)
                )
            self._file.write(recorded)

    def _kill_stalled(self, beat: watchdog.Heartbeat, verdict: watchdog.Verdict) -> None:
        if self._killed == (beat.pid, beat.started):
            return
        try:
            same = process_start_time(beat.pid) == beat.started
        except (OSError, ValueError, IndexError):
            same = False
        self._killed = (beat.pid, beat.started)
        if not same:
            return  # it exited, and the pid may be another process's now
        log.error(
            "the agent of host %s (pid %d) was silent for %.0fs: killing it for its "
            "supervisor to restart it",
            self._host,
            beat.pid,
            verdict.silent_for,
        )
        with contextlib.suppress(ProcessLookupError):
            self._kill(beat.pid, signal.SIGKILL)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubevisor-watchdog",
        description="Stop the guests of a host whose agent hangs past its self-fence "
        "deadline, and kill a stalled agent for its supervisor to restart.",
    )
    parser.add_argument("--host", required=True, help="HypervisorHost name (for the logs)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/kubevisor"),
        help="the agent's --state-dir, where it writes its heartbeat (default: %(default)s)",
    )
    parser.add_argument("--libvirt-uri", default="qemu:///system", help="the agent's libvirt")
    parser.add_argument(
        "--stall-after",
        type=float,
        default=watchdog.DEFAULT_STALL_AFTER,
        help="seconds without a heartbeat after which the agent is killed (default: %(default)s)",
    )
    parser.add_argument("--log-level", default=os.environ.get("KUBEVISOR_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if problem := watchdog.check_stall_after(args.stall_after):
        parser.error(problem)
    return args


async def run(args: argparse.Namespace) -> None:
    hypervisor = LibvirtHypervisor(args.libvirt_uri)
    await hypervisor.connect()
    log.info("watching the agent of host %s through %s", args.host, args.state_dir / HEARTBEAT)
    try:
        await Watchdog(
            host=args.host,
            state_dir=args.state_dir,
            hypervisor=hypervisor,
            stall_after=args.stall_after,
        ).run()
    finally:
        await hypervisor.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    flags.start_logging(args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
