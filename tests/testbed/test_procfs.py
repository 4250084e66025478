"""testbed.procfs.alive, the one liveness check of the testbed's processes: a running
process is alive; an exited child is not (and is reaped on the way); a gone pid is not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness import eventually
from kubevisor.testbed import procfs


def test_a_running_process_is_alive() -> None:
    # Blocked reading a pipe nobody writes: running until killed.
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    ) as child:
        try:
            assert procfs.alive(child.pid)
        finally:
            child.kill()


def test_an_exited_child_is_not_alive_and_is_reaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Not waited for: it stays a zombie until someone reaps it.
    eventually(lambda: procfs.is_zombie(child.pid), timeout=10, what="the child to exit")
    assert not procfs.alive(child.pid)
    assert procfs.stat_fields(child.pid) == []
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)


def test_a_reaped_pid_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not procfs.alive(child.pid)
