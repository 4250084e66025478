"""kubevisor_host_condition: the controller counts every condition of a host, the ones
other writers set (a fencing failure) as well as its own, and forgets a deleted host."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from .fake_cluster import Cluster, host


def held(name: str, condition: str) -> dict[str, float | None]:
    return {
        status: REGISTRY.get_sample_value(
            "kubevisor_host_condition",
            {"host": name, "condition": condition, "status": status},
        )
        for status in ("True", "False", "Unknown")
    }


def test_the_gauge_holds_each_condition_of_a_host_and_is_dropped_with_the_host(
    cluster: Cluster,
) -> None:
    fenced = host("gauge-h1")
    fenced["status"]["conditions"] = [
        {"type": "FencingFailed", "status": "True", "reason": "PowerOffFailed"}
    ]

    async def main() -> None:
        await cluster.start(hosts=[fenced])
        await cluster.controller.check_host("gauge-h1")
        assert held("gauge-h1", "FencingFailed") == {"True": 1, "False": 0, "Unknown": 0}
        # The controller's own condition, as it wrote it from the heartbeat judgement.
        (written,) = [
            c for c in cluster.kube.host("gauge-h1")["status"]["conditions"] if c["type"] == "Ready"
        ]
        ready = held("gauge-h1", "Ready")
        assert sorted(ready.values()) == [0, 0, 1]
        assert ready[written["status"]] == 1

        await cluster.controller.on_host("DELETED", cluster.kube.host("gauge-h1"))
        assert held("gauge-h1", "FencingFailed") == {"True": None, "False": None, "Unknown": None}
        assert held("gauge-h1", "Ready") == {"True": None, "False": None, "Unknown": None}

    asyncio.run(main())
