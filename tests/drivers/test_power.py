"""The power driver (`drivers.power`) against real BMC services on 127.0.0.1: sushy against
sushy-tools' Redfish emulator, pyghmi against pyghmi's IPMI BMC server, both serving
testbed hosts (`testbed.bmc`). Powering a system off stops its testbed host for real (the
libvirtd-tier cases); a BMC that refuses the credentials, has no such system, accepts the
power-off but stays On, or does not answer fails with the reason the host condition
carries, within the fence's bound."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import eventually, require
from kubevisor.api.hypervisorhost import Fencing
from kubevisor.drivers import power
from kubevisor.testbed import bmc, hosts
from kubevisor.testbed.controlplane import free_ports
from stacks import BmcProcess

USERS = {"admin": "s3cret"}
RIGHT = power.Credentials("admin", "s3cret")


def serve(root: Path, systems: list[bmc.System], protocol: str = "redfish") -> BmcProcess:
    return BmcProcess(root, systems, USERS, protocol).start()


@pytest.fixture(scope="module")
def redfish(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BmcProcess, Path]]:
    """A Redfish BMC with system "kubevisor-host-1" (a testbed host under the returned
    state directory, not started) and "stuck-1", which ignores power-offs."""
    root = tmp_path_factory.mktemp("redfish")
    state = root / "hosts"
    state.mkdir()
    process = serve(
        root,
        [bmc.System("kubevisor-host-1", state), bmc.System("stuck-1", state, stuck=True)],
    )
    try:
        eventually(lambda: _answers(process), timeout=30, what="the Redfish emulator to answer")
        yield process, state
    finally:
        process.stop()


def _answers(process: BmcProcess) -> bool:
    try:
        return _is_off(process, "stuck-1") is False
    except power.FenceError:
        return False


def _redfish(process: BmcProcess, system: str, credentials: power.Credentials) -> power.Bmc:
    fencing = Fencing.model_validate(
        {
            "redfish": {
                "address": process.address,
                "systemId": system,
                "credentialsSecret": "bmc",
            }
        }
    )
    return power.connect(fencing, credentials, timeout=5)


def _is_off(process: BmcProcess, system: str) -> bool:
    try:
        return _redfish(process, system, RIGHT).is_off()
    except Exception as error:
        raise power.classify("bmc", error) from error


def fence(driver: power.Bmc, timeout: float = 5) -> float:
    """Seconds a fence that succeeded took."""
    return asyncio.run(power.power_off(driver, timeout=timeout))


def failure(driver: power.Bmc, timeout: float) -> tuple[power.FenceError, float]:
    """A fence that must fail: its error and the seconds it took, measured inside the loop
    (`asyncio.run` then waits for the worker thread of a request the fence gave up on; the
    controller's loop does not)."""

    async def timed() -> tuple[power.FenceError, float]:
        started = time.monotonic()
        with pytest.raises(power.FenceError) as failed:
            await power.power_off(driver, timeout=timeout)
        return failed.value, time.monotonic() - started

    return asyncio.run(timed())


@pytest.mark.parametrize(
    ("system", "credentials", "reason", "said"),
    [
        pytest.param(
            "kubevisor-host-1",
            power.Credentials("admin", "wrong"),
            "BMCRefusedCredentials",
            "refused the credentials: HTTP GET",
            id="wrong-password",
        ),
        pytest.param("nope", RIGHT, "SystemNotFound", "has no such system", id="no-such-system"),
        pytest.param(
            "stuck-1",
            RIGHT,
            "Timeout",
            "accepted the power-off but still reports power On 2s later",
            id="stays-on",
        ),
    ],
)
def test_a_redfish_fence_that_fails_says_why(
    redfish: tuple[BmcProcess, Path],
    system: str,
    credentials: power.Credentials,
    reason: str,
    said: str,
) -> None:
    process, _ = redfish
    error, took = failure(_redfish(process, system, credentials), timeout=2)
    assert (error.reason, said in error.message) == (reason, True), error
    assert f"Redfish BMC http://127.0.0.1:{process.port}" in error.message
    assert took < 3


def test_a_bmc_that_does_not_answer_fails_within_the_bound() -> None:
    """A TCP listener that never replies: the fence gives up at its timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        fencing = Fencing.model_validate(
            {
                "redfish": {
                    "address": f"http://127.0.0.1:{silent.getsockname()[1]}",
                    "credentialsSecret": "bmc",
                }
            }
        )
        error, took = failure(power.connect(fencing, RIGHT, timeout=2), timeout=2)
        assert error.reason == "Timeout"
        assert "did not answer a power state reading within 2s" in error.message
        assert took < 2.5


def test_an_unreachable_bmc_fails_as_unreachable() -> None:
    port = free_ports(1)[0]  # nothing listens there
    fencing = Fencing.model_validate(
        {"redfish": {"address": f"http://127.0.0.1:{port}", "credentialsSecret": "bmc"}}
    )
    error, _ = failure(power.connect(fencing, RIGHT, timeout=5), timeout=10)
    assert error.reason == "BMCUnreachable", error


@pytest.fixture
def testbed_host(redfish: tuple[BmcProcess, Path]) -> Iterator[hosts.LocalHost]:
    missing = hosts.missing_prerequisites()
    require(not missing, what=f"a libvirtd host ({', '.join(missing)})", how=hosts.HOW_TO_INSTALL)
    _, state = redfish
    try:
        yield hosts.start_hosts(1, state_dir=state)[0]
    finally:
        hosts.stop_hosts(state)


@pytest.mark.libvirtd
def test_powering_a_redfish_system_off_stops_its_testbed_host(
    redfish: tuple[BmcProcess, Path], testbed_host: hosts.LocalHost
) -> None:
    process, state = redfish
    assert testbed_host.name == "kubevisor-host-1" and testbed_host.pid is not None
    namespace = hosts.host_pid_namespace(testbed_host)
    assert namespace is not None and hosts.namespace_processes(namespace)
    driver = _redfish(process, "kubevisor-host-1", RIGHT)
    assert driver.is_off() is False
    took = fence(driver, timeout=30)
    assert took < 30
    assert [h.pid for h in hosts.list_hosts(state)] == [None]
    assert hosts.namespace_processes(namespace) == [], "libvirtd and its guests are gone"
    assert fence(driver) < 1, "a host already off is confirmed at once"


@pytest.mark.libvirtd
def test_powering_an_ipmi_system_off_stops_its_testbed_host(tmp_path: Path) -> None:
    missing = hosts.missing_prerequisites()
    require(not missing, what=f"a libvirtd host ({', '.join(missing)})", how=hosts.HOW_TO_INSTALL)
    state = tmp_path / "hosts"
    state.mkdir()
    process = serve(tmp_path, [bmc.System("kubevisor-host-1", state)], protocol="ipmi")
    try:
        host = hosts.start_hosts(1, state_dir=state)[0]
        fencing = Fencing.model_validate(
            {
                "ipmi": {
                    "address": "127.0.0.1",
                    "port": process.port,
                    "credentialsSecret": "bmc",
                }
            }
        )
        refused, _ = failure(
            power.connect(fencing, power.Credentials("admin", "wrong"), timeout=5), 10
        )
        assert (refused.reason, refused.message) == (
            "BMCRefusedCredentials",
            f"IPMI BMC 127.0.0.1:{process.port} refused the credentials: "
            "Incorrect password provided",
        )
        assert hosts.list_hosts(state)[0].pid is not None
        driver = power.connect(fencing, RIGHT, timeout=5)
        assert driver.is_off() is False
        fence(driver, timeout=30)
        assert host.pid is not None and hosts.list_hosts(state)[0].pid is None
    finally:
        process.stop()
        hosts.stop_hosts(state)
