"""The host's part of `kubevisor diagnose` against a FakeHypervisor: the agent's ring
buffer of log lines, and the bundle with every secret cut out."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid as uuidlib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from kubevisor.agent import diagnostics
from kubevisor.core.redaction import REDACTED
from kubevisor.drivers.fake import FakeHypervisor

SECRET = "hunter2-do-not-leak"
UID = str(uuidlib.uuid4())
VM: dict[str, Any] = {
    "metadata": {"namespace": "team", "name": "db", "uid": UID},
    "spec": {"cloudInit": {"userData": f"#cloud-config\npassword: {SECRET}\n"}},
    "status": {"host": "h1"},
}
XML = (
    f"<domain type='test'><name>team_db</name><uuid>{UID}</uuid>"
    "<memory unit='MiB'>64</memory><os><type>hvm</type></os>"
    "<devices><graphics type='vnc' passwd='vnc-pass-1'/></devices>"
    f"<description>{SECRET}</description></domain>"
)


def record(ring: diagnostics.LogRing, message: str, *args: object) -> None:
    ring.handle(
        logging.LogRecord("kubevisor.agent", logging.INFO, __file__, 1, message, args, None)
    )


def test_ring_keeps_only_its_capacity() -> None:
    ring = diagnostics.LogRing(capacity=3)
    for i in range(5):
        record(ring, "team/db: step %d", i)
    assert [line.rsplit(" ", 1)[1] for line in ring.about(("team/db",), limit=10)] == [
        "2",
        "3",
        "4",
    ]


@pytest.mark.parametrize(
    ("message", "about"),
    [
        pytest.param("team/db: define-and-start", True, id="namespace-name"),
        pytest.param(f"domain {UID} crashed", True, id="uid"),
        pytest.param("shutting down team_db", True, id="domain-name"),
        pytest.param("team/db2: define-and-start", False, id="not-a-longer-name"),
        pytest.param("team/dbx-1 started", False, id="not-a-prefix"),
        pytest.param("other/db: start", False, id="not-another-namespace"),
    ],
)
def test_ring_finds_lines_naming_the_vm_as_a_word(message: str, about: bool) -> None:
    ring = diagnostics.LogRing()
    record(ring, message)
    found = ring.about(("team/db", UID, "team_db"), limit=10)
    assert (found != []) is about
    assert all(line.endswith(message) for line in found)


def test_ring_takes_lines_from_other_threads_while_read() -> None:
    ring = diagnostics.LogRing(capacity=100)
    writers = [
        threading.Thread(target=lambda: [record(ring, "team/db: %d", i) for i in range(500)])
        for _ in range(4)
    ]
    for writer in writers:
        writer.start()
    while any(w.is_alive() for w in writers):
        assert len(ring.about(("team/db",), limit=1000)) <= 100
    for writer in writers:
        writer.join()
    assert len(ring.about(("team/db",), limit=1000)) == 100


def bundle(tmp_path: Path, hv: FakeHypervisor, ring: diagnostics.LogRing) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        return await diagnostics.bundle(
            VM,
            host="h1",
            hypervisor=hv,
            serial_log=lambda uid: tmp_path / uid / "serial.log",
            ring=ring,
            lines=2,
        )

    return asyncio.run(go())


def test_bundle_has_every_part_redacted(tmp_path: Path) -> None:
    hv = FakeHypervisor()
    asyncio.run(hv.connect())
    asyncio.run(hv.define(XML))
    hv.domains[UID].qemu_log = f"qemu line 1\n-append password={SECRET}\nqemu line 3\n"
    (tmp_path / UID).mkdir()
    (tmp_path / UID / "serial.log").write_text(f"boot\nlogin\ncloud-init: {SECRET}\n")
    ring = diagnostics.LogRing()
    record(ring, "team/db: define-and-start")
    record(ring, "team/other: define-and-start")
    found = bundle(tmp_path, hv, ring)
    assert found["host"] == "h1"
    assert found["missing"] == {}
    files = found["files"]
    assert sorted(files) == ["agent.log", "domain.xml", "domstats.txt", "qemu.log", "serial.log"]
    assert SECRET not in json.dumps(found) and "vnc-pass-1" not in json.dumps(found)
    domain = ET.fromstring(files["domain.xml"])  # still well-formed
    assert domain.findtext("description") == REDACTED
    assert domain.find("devices/graphics").get("passwd") == REDACTED  # type: ignore[union-attr]
    assert files["qemu.log"] == f"-append password={REDACTED}\nqemu line 3\n"
    assert files["serial.log"] == f"login\ncloud-init: {REDACTED}\n"
    assert files["agent.log"].endswith("team/db: define-and-start\n")
    assert "team/other" not in files["agent.log"]
    assert "state.state=shutoff" in files["domstats.txt"]


def test_bundle_says_why_a_part_is_missing(tmp_path: Path) -> None:
    hv = FakeHypervisor()
    asyncio.run(hv.connect())
    found = bundle(tmp_path, hv, diagnostics.LogRing())
    assert sorted(found["files"]) == ["agent.log"]
    assert found["files"]["agent.log"] == ""
    gone = "host h1 has no domain for this VM (not defined yet, or already removed)"
    assert found["missing"] == {
        "domain.xml": gone,
        "domstats.txt": gone,
        "qemu.log": gone,
        "serial.log": f"no serial log at {tmp_path / UID / 'serial.log'} (the domain has not "
        "run on this host, or has none)",
    }
    asyncio.run(hv.define(XML))
    assert bundle(tmp_path, hv, diagnostics.LogRing())["missing"]["qemu.log"] == (
        "the fake driver keeps no QEMU log"
    )


@pytest.mark.parametrize(
    ("given", "lines"),
    [
        pytest.param(None, diagnostics.LINES, id="default"),
        pytest.param("50", 50, id="asked"),
        pytest.param("x", diagnostics.LINES, id="not-a-number"),
        pytest.param("999999", diagnostics.MAX_LINES, id="capped"),
        pytest.param("-3", 0, id="not-negative"),
    ],
)
def test_clamp_lines(given: str | None, lines: int) -> None:
    assert diagnostics.clamp_lines(given) == lines


def test_serial_tail_is_redacted(tmp_path: Path) -> None:
    log = tmp_path / UID / "serial.log"
    log.parent.mkdir()
    log.write_text(f"a\nb\nsecret {SECRET}\n")
    text = asyncio.run(diagnostics.serial_tail(VM, serial_log=lambda uid: log, lines=2))
    assert text == f"b\nsecret {REDACTED}\n"
