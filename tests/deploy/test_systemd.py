"""The systemd units (deploy/systemd/) for hosts that run the agent outside Kubernetes:
systemd itself checks them, the agent's watchdog pings reach a NOTIFY_SOCKET, and the
flags the units pass are ones the programs accept."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO, require
from kubevisor.agent import main as agent_main
from kubevisor.agent import sdnotify
from kubevisor.agent import watchdog as agent_watchdog

UNITS = REPO / "deploy" / "systemd"
BIN = Path(sys.executable).parent


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, what="systemd-analyze", how="apt-get install systemd")
    assert analyze is not None
    units = []
    for unit in sorted(UNITS.glob("*.service")):
        # The programs where this checkout installed them, not /usr/local/bin.
        local = tmp_path / unit.name
        local.write_text(unit.read_text().replace("/usr/local/bin/", f"{BIN}/"))
        units.append(str(local))
    assert len(units) == 2
    done = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def exec_start(unit: str) -> list[str]:
    (line,) = [
        line for line in (UNITS / unit).read_text().splitlines() if line.startswith("ExecStart=")
    ]
    env = {"KUBEVISOR_HOST": "node-1", "KUBEVISOR_AGENT_ARGS": ""}
    words = shlex.split(line.removeprefix("ExecStart="))
    return [w.replace("${KUBEVISOR_HOST}", env["KUBEVISOR_HOST"]) for w in words
            if w != "$KUBEVISOR_AGENT_ARGS"]  # fmt: skip


def test_the_units_flags_are_ones_the_programs_accept() -> None:
    agent = exec_start("kubevisor-agent.service")
    dog = exec_start("kubevisor-watchdog.service")
    assert (Path(agent[0]).name, Path(dog[0]).name) == ("kubevisor-agent", "kubevisor-watchdog")
    agent_args = agent_main.parse_args(agent[1:])
    dog_args = agent_watchdog.parse_args(dog[1:])
    assert (dog_args.host, dog_args.state_dir) == (agent_args.host, agent_args.state_dir)


@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify_reaches_the_notify_socket(
    abstract: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        if abstract:
            name = f"kubevisor-test-{os.getpid()}"
            listener.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            path = tmp_path / "notify"
            listener.bind(str(path))
            monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        listener.settimeout(5)
        sdnotify.notify("WATCHDOG=1")
        assert listener.recv(64) == b"WATCHDOG=1"
