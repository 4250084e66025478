"""What /proc says about the testbed's processes: alive, parents, zombies, namespaces.

Used by `hosts` (a host's init and what is left in its PID namespace), `netns` (what is
left in a network namespace), `controlplane` and `stack` (are their processes still up).
Reads only, but for reaping this process's own children; a process that ends while it is
read is skipped.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def namespace_processes(namespace: str) -> list[int]:
    """Live (non-zombie) processes in `namespace`, as /proc/PID/ns/* names it: "pid:[N]" for
    a PID namespace, "net:[N]" for a network namespace."""
    kind = namespace.partition(":")[0]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / kind) != namespace:
                continue
            if is_zombie(int(entry.name)):
                continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


def namespace_of(pid: int, kind: str = "pid") -> str | None:
    """The `kind` namespace ("pid", "net", ...) of `pid` as "kind:[N]"; None once it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def child_of(parent: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == parent:
            return int(entry.name)
    return None


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, ...; empty once `pid` is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name is in parentheses and may contain spaces.
    return stat[stat.rindex(")") + 2 :].split()


def parent_pid(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def is_zombie(pid: int) -> bool:
    fields = stat_fields(pid)
    return bool(fields) and fields[0] in ("Z", "X")


def alive(pid: int) -> bool:
    """Whether `pid` runs: it exists and is not a zombie. A zombie child of this process is
    reaped on the way, so a stopped child does not linger until its Popen is collected."""
    if is_zombie(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return bool(stat_fields(pid))


def reap_if_child(pid: int) -> None:
    """Reap `pid` if this process started it (else it is not ours to reap)."""
    deadline = time.monotonic() + 2.0
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(pid, os.WNOHANG)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)


def rss_bytes(pid: int | str) -> int:
    """Resident memory of `pid` ("self": this process) in bytes; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time `pid` used so far, user and system; 0.0 once it is gone."""
    fields = stat_fields(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
