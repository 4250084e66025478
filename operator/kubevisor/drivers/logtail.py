"""The last lines of a log file on the host (a domain's QEMU log, its serial log), read
without loading a file that may have grown for months: at most `MAX_BYTES` from its end.

Used by the libvirt driver (`domain_diagnostics`) and the agent (`agent.diagnostics`).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Final

MAX_BYTES: Final = 1 << 20
"""Read no more than this much of a log's end, whatever `lines` asks."""


def tail(path: Path, lines: int, *, max_bytes: int = MAX_BYTES) -> str:
    """The last `lines` lines of `path` (undecodable bytes replaced); raises OSError
    (FileNotFoundError when there is no such log)."""
    if lines <= 0:
        return ""
    with path.open("rb") as log:
        size = log.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        log.seek(start)
        data = log.read()
    text = data.decode("utf-8", errors="replace")
    found = text.splitlines()
    if start > 0 and found:
        found = found[1:]  # the first line read is cut by the byte limit
    return "".join(f"{line}\n" for line in found[-lines:])


async def read(path: Path, lines: int, *, absent: str) -> tuple[str | None, str]:
    """(the last `lines` lines of `path`, "") off the event loop, or (None, why not):
    `absent` when there is no such file, the error otherwise."""
    try:
        return await asyncio.to_thread(tail, path, lines), ""
    except FileNotFoundError:
        return None, absent
    except OSError as error:
        return None, f"cannot read {path}: {error.strerror or error}"
