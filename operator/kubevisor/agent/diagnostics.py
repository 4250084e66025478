"""The host's part of `kubevisor diagnose VM`, which the agent's console endpoint serves
(`console.agentserver`, `GET /diagnose/NAMESPACE/NAME?lines=N`) to the aggregated API.

`bundle` gathers what only this host has about one VM bound here: the live domain XML,
its `virsh domstats` record and the tail of its QEMU log (through the driver, which says
when it cannot supply one), the tail of the serial log the agent keeps
(`VmFiles.serial_log`), and the agent's own recent log lines that name the VM, kept in
memory by `LogRing`. Every text is redacted before it leaves the agent: secret
attributes of the XML (`core.redaction.redact_xml`) and every piece of the VM's secrets
(cloud-init user data, meta data, network config; `core.redaction.secret_values`)
wherever it appears, so a password the guest prints on its console is cut out too.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from kubevisor.core import redaction
from kubevisor.core.domain import identity
from kubevisor.drivers import base, logtail

Object = dict[str, Any]

LINES: Final = 200
"""Log lines per file when the request does not say (`kubevisor diagnose --lines`)."""
MAX_LINES: Final = 5000
RING_CAPACITY: Final = 10000
"""The agent's last log lines kept in memory (about 2 MB at 200 characters a line)."""
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The bundle's file names of the driver's parts (`base.DomainDiagnostics.missing` keys).
DRIVER_FILES: Final = {"domstats": "domstats.txt", "qemu.log": "qemu.log"}


class LogRing(logging.Handler):
    """The agent's last `capacity` log lines, formatted, in memory: installed on the root
    logger at start (`install`), read by `about`."""

    def __init__(self, capacity: int = RING_CAPACITY) -> None:
        super().__init__()
        self._lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            with self._guard:
                self._lines.append(line)
        except Exception:
            self.handleError(record)

    def about(self, names: tuple[str, ...], *, limit: int) -> list[str]:
        """The last `limit` lines naming any of `names` as a whole word (`ns/vm` is
        not `ns/vm2`)."""
        pattern = re.compile(
            r"(?<![\w.-])(" + "|".join(re.escape(n) for n in names if n) + r")(?![\w.-])"
        )
        with self._guard:  # emit runs on any thread: copy, then filter
            lines = list(self._lines)
        return [line for line in lines if pattern.search(line)][-limit:]

    def install(self) -> LogRing:
        logging.getLogger().addHandler(self)
        return self


def clamp_lines(text: str | None) -> int:
    """The `lines` query parameter: LINES when absent or not a number, at most MAX_LINES."""
    try:
        lines = int(text) if text is not None else LINES
    except ValueError:
        lines = LINES
    return max(0, min(lines, MAX_LINES))


async def _domain(
    hypervisor: base.Hypervisor, uid: str, lines: int, host: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The driver's parts: (files, why each missing one is)."""
    files: dict[str, str] = {}
    try:
        files["domain.xml"] = redaction.redact_xml(await hypervisor.domain_xml(uid))
        found = await hypervisor.domain_diagnostics(uid, lines=lines)
    except base.DomainNotFound:
        gone = f"host {host} has no domain for this VM (not defined yet, or already removed)"
        return files, {"domain.xml": gone, "domstats.txt": gone, "qemu.log": gone}
    except base.HypervisorError as error:
        failed = f"the hypervisor driver failed: {error}"
        return files, {
            f: failed for f in ("domain.xml", "domstats.txt", "qemu.log") if f not in files
        }
    if found.domstats is not None:
        files["domstats.txt"] = found.domstats
    if found.qemu_log is not None:
        files["qemu.log"] = found.qemu_log
    return files, {DRIVER_FILES.get(part, part): why for part, why in found.missing.items()}


async def bundle(
    vm: Object,
    *,
    host: str,
    hypervisor: base.Hypervisor,
    serial_log: Callable[[str], Path],
    ring: LogRing,
    lines: int = LINES,
) -> Object:
    """`{"host", "files": {name: text}, "missing": {name: why}}` for VM `vm`, redacted."""
    meta = vm.get("metadata") or {}
    uid, namespace, name = str(meta.get("uid")), str(meta.get("namespace")), str(meta.get("name"))
    files, missing = await _domain(hypervisor, uid, lines, host)
    path = serial_log(uid)
    absent = f"no serial log at {path} (the domain has not run on this host, or has none)"
    serial, why = await logtail.read(path, lines, absent=absent)
    if serial is None:
        missing["serial.log"] = why
    else:
        files["serial.log"] = serial
    names = (f"{namespace}/{name}", uid, identity.domain_name(namespace, name))
    files["agent.log"] = "".join(f"{line}\n" for line in ring.about(names, limit=lines))
    secrets = redaction.secret_values(vm)
    scrubbed = {file: redaction.scrub(text, secrets) for file, text in files.items()}
    if "domain.xml" in files:
        scrubbed["domain.xml"] = redaction.scrub_xml(files["domain.xml"], secrets)
    return {"host": host, "files": scrubbed, "missing": missing}


async def serial_tail(vm: Object, *, serial_log: Callable[[str], Path], lines: int = LINES) -> str:
    """The last `lines` lines of the VM's serial log, redacted (`kubevisor console --log`);
    FileNotFoundError when the VM has none on this host."""
    uid = str((vm.get("metadata") or {}).get("uid"))
    text = await asyncio.to_thread(logtail.tail, serial_log(uid), lines)
    return redaction.scrub(text, redaction.secret_values(vm))
