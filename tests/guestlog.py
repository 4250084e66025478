"""Reading the testbed guest's serial log (importable as `guestlog`): the counter it prints
every second once booted (`testbed.guest.COUNTER_PREFIX`) and the lines it prints on the
way, for the driver, testbed and e2e tests that watch a real guest run."""

from __future__ import annotations

import re
from pathlib import Path

from harness import eventually, until
from kubevisor.testbed import guest as guest_image

COUNTER = re.compile(rf"^{guest_image.COUNTER_PREFIX}(\d+)", re.MULTILINE)


def text(path: Path) -> str:
    """The serial log so far ("" before QEMU has created it)."""
    return path.read_text(errors="replace") if path.exists() else ""


def counters(path: Path) -> list[int]:
    """Every counter the guest has printed, in order."""
    return [int(n) for n in COUNTER.findall(text(path))]


def _latest_above(path: Path, value: int) -> int | None:
    seen = counters(path)
    return seen[-1] if seen and seen[-1] > value else None


async def counter_above(path: Path, value: int, *, timeout: float = 30.0) -> int:
    """The guest's latest counter once it is above `value`: the guest runs."""
    return await until(
        lambda: _latest_above(path, value),
        timeout=timeout,
        what=f"guest counter above {value} in {path}",
    )


def wait_for_counter(path: Path, *, above: int, timeout: float = 90.0) -> int:
    """`counter_above` for a test that does not run an event loop."""
    return eventually(
        lambda: _latest_above(path, above),
        timeout=timeout,
        what=f"guest counter above {above} in {path}",
    )


async def line(path: Path, pattern: str, *, timeout: float) -> re.Match[str]:
    """The last line of the serial log matching `pattern`, once there is one."""

    def last_match() -> re.Match[str] | None:
        seen = text(path)
        matches = list(re.finditer(pattern, seen, re.MULTILINE))
        assert matches, f"not yet; the log ends:\n{seen[-2000:]}"
        return matches[-1]

    return await until(last_match, timeout=timeout, what=f"{pattern!r} in {path}")
