"""Helpers shared by every test tier (importable as `harness`; see pytest's pythonpath).

Outside CI a tier whose infrastructure is missing skips with one line saying how to get
it; with CI=true the same situation fails the run, so CI can never go green by skipping.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from kubevisor.testbed import controlplane
from kubevisor.testbed.commands import ControllerOptions
from kubevisor.testbed.controlplane import ControlPlane

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, *, what: str, how: str) -> None:
    """Skip (outside CI) or fail (CI=true) unless `available`; `how` tells how to get `what`."""
    if available:
        return
    message = f"{what} is not available: {how}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


REPO = Path(__file__).resolve().parents[1]


def _built(env: str, script: str) -> Path | None:
    """What hack/SCRIPT/build.sh built: $ENV, else its cache (`build.sh --check`)."""
    if value := os.environ.get(env):
        return Path(value)
    check = subprocess.run(
        [str(REPO / "hack" / script / "build.sh"), "--check"], capture_output=True, text=True
    )
    return Path(check.stdout.strip()) if check.returncode == 0 else None


def controlplane_bin() -> Path | None:
    """The built control-plane binaries: $KUBEVISOR_CONTROLPLANE_BIN, else the build cache."""
    return _built("KUBEVISOR_CONTROLPLANE_BIN", "controlplane")


def quantity_bin() -> Path | None:
    """The built quantity oracle's bin dir: $KUBEVISOR_QUANTITY_BIN, else the build cache."""
    return _built("KUBEVISOR_QUANTITY_BIN", "quantity")


def vcsim_bin() -> Path | None:
    """The built vSphere simulator's bin dir: $KUBEVISOR_VCSIM_BIN, else the build cache."""
    return _built("KUBEVISOR_VCSIM_BIN", "vcsim")


def images_dir() -> Path | None:
    """The directory of the built images' OCI archives: $KUBEVISOR_IMAGES, else the cache."""
    return _built("KUBEVISOR_IMAGES", "images")


@contextmanager
def running_control_plane(state_dir: Path) -> Iterator[ControlPlane]:
    """A real kube-apiserver + etcd with kubevisor's CRDs installed, stopped afterwards
    (skipped outside CI, failed in CI, when the binaries are not built)."""
    bin_dir = controlplane_bin()
    require(
        bin_dir is not None,
        what="the local kube-apiserver + etcd",
        how="build them with hack/controlplane/build.sh (or run `make test`)",
    )
    assert bin_dir is not None
    plane = controlplane.start(
        bin_dir=bin_dir,
        state_dir=state_dir,
        crd_paths=sorted((REPO / "deploy" / "crds").glob("*.yaml")),
    )
    try:
        yield plane
    finally:
        controlplane.stop(plane.state_dir)


async def until(check: Callable[[], T | None], *, timeout: float = 30.0, what: str) -> T:
    """Poll `check` on the event loop until it returns something other than None/False, or
    fail after `timeout`: `eventually` for tests whose work runs on the loop (an
    AssertionError from `check` counts as not yet, and the last one is in the failure)."""

    async def awaited() -> T | None:
        return check()

    return await until_awaited(awaited, timeout=timeout, what=what)


async def until_awaited(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30.0,
    what: str,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """`until` for a check that awaits (a driver call): an AssertionError, or one of
    `retry_on`, counts as not yet."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = await check()
        except (AssertionError, *retry_on) as error:
            last, result = error, None
        if result is not None and result is not False:
            return result
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})", pytrace=False)


def eventually(check: Callable[[], T | None], *, timeout: float = 60.0, what: str) -> T:
    """Poll `check` until it returns something other than None/False, or fail after `timeout`.

    This is waiting on a condition with a deadline, not sleeping for a guessed duration.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except AssertionError as error:
            last, result = error, None
        if result is not None and result is not False:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})", pytrace=False)


def holds_until(check: Callable[[], None], *, deadline: float, every: float = 1.0) -> None:
    """Run `check` (its assertions) every `every` seconds until the monotonic `deadline`:
    for what must keep holding for a while, where `eventually` waits for a change."""
    while True:
        check()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(every, left))


class ManagedProcess:
    """A kubevisor process started by a test: output to a log file, killable, restartable."""

    def __init__(self, argv: list[str], *, log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL, *, timeout: float = 30.0) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def controller_process(
    plane: ControlPlane, *, lease_namespace: str, log: Path, extra: tuple[str, ...] = ()
) -> ManagedProcess:
    """A standalone kubevisor controller on `plane` (not started), its metrics on a free
    port; `extra` adds flags."""
    (port,) = controlplane.free_ports(1)
    options = ControllerOptions(
        plane.kubeconfig, lease_namespace=lease_namespace, metrics_port=port, extra=extra
    )
    return ManagedProcess(options.argv(), log=log)
