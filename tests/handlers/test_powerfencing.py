"""Power fencing in the controller (`handlers.powerfencing` with `core.powerfence`): a lost
host with spec.fencing is powered off through its BMC and failed over at once, without the
grace; a fence that fails leaves its VMs where they are with FencingFailed saying why, is
tried again later, and `kubevisor evacuate --confirm-fenced` still moves them. The BMC is a
fake here (tests/api/test_power_redfish.py drives the real driver against a Redfish
emulator, tests/e2e/test_power_fencing_e2e.py the whole stack)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from kubevisor.api import schema
from kubevisor.api.hypervisorhost import Fencing
from kubevisor.drivers import power
from kubevisor.handlers.controller import Settings
from kubevisor.kube.client import Object

from .fake_cluster import LEASE_NAMESPACE, Cluster, host, vm
from .test_selffence_failover import (
    NO_FAILOVER,
    condition,
    evacuation,
    fencing_host,
    lose_h1,
    request_evacuation,
)

SECRET = "bmc-h1"
REDFISH = {"address": "https://127.0.0.1:8443", "systemId": "1", "credentialsSecret": SECRET}
BMC = "Redfish BMC https://127.0.0.1:8443 (system 1)"


@dataclass
class FakeBmc:
    """A BMC whose power the test sets: `error` makes every call fail, `stuck` ignores
    the power-off."""

    description: str = BMC
    off: bool = False
    error: Exception | None = None
    stuck: bool = False
    connected: list[tuple[Fencing, power.Credentials]] = field(default_factory=list)
    requests: int = 0

    def connect(self, fencing: Fencing, credentials: power.Credentials, **_: Any) -> FakeBmc:
        self.connected.append((fencing, credentials))
        return self

    def is_off(self) -> bool:
        if self.error is not None:
            raise self.error
        return self.off

    def force_off(self) -> None:
        if self.error is not None:
            raise self.error
        self.requests += 1
        self.off = self.off or not self.stuck


def power_fenced_host(name: str, *, deadline: int | None = 60) -> Object:
    obj = fencing_host(name, deadline)
    obj["spec"]["fencing"] = {"redfish": dict(REDFISH)}
    return obj


def fenced_cluster(bmc: FakeBmc, settings: Settings | None = None) -> Cluster:
    cluster = Cluster(
        settings or Settings(lease_namespace=LEASE_NAMESPACE, power_fence_timeout=1.0),
        connect_bmc=bmc.connect,
    )
    cluster.kube.secrets[f"{LEASE_NAMESPACE}/{SECRET}"] = {"username": "root", "password": "pw"}
    return cluster


def host_events(cluster: Cluster, name: str = "h1") -> list[tuple[str, str]]:
    return [(e[1], e[2]) for e in cluster.kube.events if e[0] == name]


def test_a_lost_host_is_powered_off_and_failed_over_at_once_without_the_grace() -> None:
    bmc = FakeBmc()
    cluster = fenced_cluster(bmc)

    async def main() -> None:
        await cluster.start(
            hosts=[power_fenced_host("h1"), host("h2")],
            vms=[vm("a", host="h1"), vm("m", host="h1", run_strategy="Manual")],
        )
        await lose_h1(cluster, 39)
        assert (bmc.connected, bmc.requests) == ([], 0), "a Ready host is never fenced"
        await lose_h1(cluster, 2)  # the heartbeat (40 s) expired: the grace is 120 s
        assert bmc.off and bmc.requests == 1
        ((fencing, credentials),) = bmc.connected
        assert fencing.redfish is not None and fencing.redfish.system_id == "1"
        assert credentials == power.Credentials("root", "pw")
        assert cluster.vm_status("a")["host"] == "h2"
        assert cluster.vm_status("m")["host"] == "h1", "Manual waits for its host"
        fenced = condition(cluster, "h1", "Fenced")
        assert (fenced["status"], fenced["reason"]) == ("True", "PoweredOff")
        assert f"{BMC} confirmed power Off at" in fenced["message"]
        failed = condition(cluster, "h1", "FencingFailed")
        assert (failed["status"], failed["reason"]) == ("False", "PoweredOff")
        assert cluster.kube.host("h1")["status"]["lastFenced"] == schema.timestamp(
            cluster.clock.now
        )
        assert host_events(cluster) == [("Normal", "PoweredOff")]
        ((_, rescheduling),) = cluster.kube.said("a", "Rescheduling")
        assert rescheduling.startswith(
            "host h1 was lost and powered off through its BMC; its old copy was powered off: "
            f"{BMC} confirmed power Off at 2024-05-01T12:00:41Z, 0.0s after the power-off request"
        )
        await lose_h1(cluster, 60)
        assert bmc.requests == 1, "a host confirmed off is not fenced again"

    asyncio.run(main())


def test_a_host_the_bmc_already_reports_off_is_not_switched_again() -> None:
    bmc = FakeBmc(off=True)
    cluster = fenced_cluster(bmc)

    async def main() -> None:
        await cluster.start(hosts=[power_fenced_host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await lose_h1(cluster, 41)
        assert bmc.requests == 0
        assert cluster.vm_status("a")["host"] == "h2"

    asyncio.run(main())


@pytest.mark.parametrize(
    ("breakage", "reason", "said"),
    [
        pytest.param(
            "stuck", "Timeout", "accepted the power-off but still reports power On", id="stuck-on"
        ),
        pytest.param(
            "unreachable",
            "BMCUnreachable",
            f"{BMC} cannot be reached: [Errno 111]",
            id="unreachable",
        ),
        pytest.param("error", "BMCError", f"{BMC} failed: Internal Server Error", id="error"),
        pytest.param(
            "no-secret",
            "CredentialsMissing",
            "Secret kubevisor-system/bmc-h1 does not exist",
            id="no-secret",
        ),
        pytest.param(
            "no-password", "CredentialsMissing", "bmc-h1 has no password key", id="no-password"
        ),
    ],
)
def test_a_failed_fence_blocks_the_failover_until_one_succeeds(
    breakage: str, reason: str, said: str
) -> None:
    bmc = FakeBmc(
        stuck=breakage == "stuck",
        error={
            "unreachable": ConnectionRefusedError("[Errno 111] Connection refused"),
            "error": RuntimeError("Internal Server Error"),
        }.get(breakage),
    )
    cluster = fenced_cluster(bmc)
    secret = f"{LEASE_NAMESPACE}/{SECRET}"
    if breakage == "no-secret":
        del cluster.kube.secrets[secret]
    if breakage == "no-password":
        cluster.kube.secrets[secret] = {"username": "root"}

    async def main() -> None:
        await cluster.start(hosts=[power_fenced_host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await lose_h1(cluster, 41)
        failed = condition(cluster, "h1", "FencingFailed")
        assert (failed["status"], failed["reason"]) == ("True", reason)
        assert said in failed["message"]
        assert "kubevisor evacuate h1 --confirm-fenced" in failed["message"]
        fenced = condition(cluster, "h1", "Fenced")
        assert (fenced["status"], fenced["reason"]) == ("False", "AwaitingPowerOff")
        assert host_events(cluster) == [("Warning", "FencingFailed")]
        # Past the grace (120 s) and the agent's self-fence deadline: still not moved.
        for _ in range(10):
            await lose_h1(cluster, 14)
        vm_status = cluster.vm_status("a")
        assert (vm_status["host"], vm_status["phase"]) == ("h1", "Unknown")
        # Tried again 15, 30, 60 s after each failure: 4 attempts in 140 s.
        assert [r for _, r in host_events(cluster)] == ["FencingFailed"] * 4
        assert "(attempt 4; next at" in condition(cluster, "h1", "FencingFailed")["message"]
        # The operator fixes it; the next attempt (2 min after the 4th) succeeds.
        bmc.error, bmc.stuck = None, False
        cluster.kube.secrets[secret] = {"username": "root", "password": "pw"}
        await lose_h1(cluster, 120)
        assert cluster.vm_status("a")["host"] == "h2"
        assert condition(cluster, "h1", "FencingFailed")["status"] == "False"
        assert condition(cluster, "h1", "Fenced")["reason"] == "PoweredOff"

    asyncio.run(main())


def test_evacuate_confirmed_moves_the_vms_of_a_host_whose_fence_failed() -> None:
    bmc = FakeBmc(error=ConnectionRefusedError("refused"))
    cluster = fenced_cluster(bmc)

    async def main() -> None:
        await cluster.start(hosts=[power_fenced_host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await lose_h1(cluster, 41)
        assert condition(cluster, "h1", "FencingFailed")["status"] == "True"
        await request_evacuation(cluster, "2026-01-01T00:00:00Z", confirmed=False)
        outcome, message = evacuation(cluster)
        assert outcome == "Waiting"
        assert message.startswith("waiting for host h1 to be powered off through its BMC")
        await request_evacuation(cluster, "2026-01-01T00:01:00Z", confirmed=True)
        assert evacuation(cluster)[0] == "Evacuated"
        assert cluster.vm_status("a")["host"] == "h2"
        assert condition(cluster, "h1", "Fenced")["reason"] == "ConfirmedByHand"
        ((_, rescheduling),) = cluster.kube.said("a", "Rescheduling")
        assert "confirmed stopped by hand" in rescheduling

    asyncio.run(main())


def test_without_automatic_failover_only_an_evacuation_powers_a_host_off() -> None:
    bmc = FakeBmc()
    cluster = fenced_cluster(
        bmc, Settings(lease_namespace=LEASE_NAMESPACE, failover_grace=None, power_fence_timeout=1)
    )
    assert NO_FAILOVER.failover_grace is None

    async def main() -> None:
        await cluster.start(hosts=[power_fenced_host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await lose_h1(cluster, 600)
        assert (bmc.requests, cluster.vm_status("a")["host"]) == (0, "h1")
        await request_evacuation(cluster, "2026-01-01T00:00:00Z", confirmed=False)
        assert bmc.requests == 1
        await lose_h1(cluster, 2)
        assert evacuation(cluster)[0] == "Evacuated"
        assert cluster.vm_status("a")["host"] == "h2"
        ((_, rescheduling),) = cluster.kube.said("a", "Rescheduling")
        assert f"its old copy was powered off: {BMC} confirmed power Off" in rescheduling

    asyncio.run(main())


def test_a_host_ready_again_forgets_its_failed_fence() -> None:
    bmc = FakeBmc(error=RuntimeError("boom"))
    cluster = fenced_cluster(bmc)

    async def main() -> None:
        await cluster.start(hosts=[power_fenced_host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await lose_h1(cluster, 41)
        assert condition(cluster, "h1", "FencingFailed")["status"] == "True"
        cluster.controller.remember_lease(
            {
                "metadata": {"name": "h1"},
                "spec": {"renewTime": schema.timestamp(cluster.clock.now)},
            }
        )
        await cluster.controller.check_host("h1")
        failed = condition(cluster, "h1", "FencingFailed")
        assert (failed["status"], failed["reason"]) == ("False", "HostReady")
        assert cluster.controller.power.outcome("h1") is None

    asyncio.run(main())
