"""Both processes' /metrics move as the stack works (scraped during the e2e run)."""

from __future__ import annotations

import pytest

from harness import eventually
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    """The value of `name` whose labels include `labels` (0 when absent)."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if key.split("{")[0] == name and all(w in key for w in wanted)
    )


def test_metrics_count_placements_libvirt_calls_and_phases(stack: Stack, namespace: str) -> None:
    placed = sample(
        stack.scrape("controller"), "kubevisor_placement_decisions_total", result="placed"
    )
    started = {
        h.name: sample(
            stack.scrape(h.name),
            "kubevisor_libvirt_call_duration_seconds_count",
            operation="define-and-start",
        )
        for h in stack.hosts
    }
    stack.apply(
        namespace,
        {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "measured"},
            "spec": {"memory": {"size": "128Mi"}},
        },
    )
    running = stack.wait_phase(namespace, "measured", "Running")
    host = running["status"]["host"]
    controller = eventually(
        lambda: (
            (s := stack.scrape("controller"))
            and sample(s, "kubevisor_placement_decisions_total", result="placed") > placed
            and sample(s, "kubevisor_vms", phase="Running") >= 1
            # Host gauges follow the host's periodic judgement (every 2 s).
            and sample(s, "kubevisor_host_allocated", host=host, resource="memory") > 0
            and s
        ),
        what="the controller's placement counter, Running gauge and host allocation",
    )
    assert sample(controller, "kubevisor_placement_duration_seconds_count") >= 1
    assert sample(controller, "kubevisor_hosts", ready="true") == len(stack.hosts)
    assert sample(controller, "kubevisor_api_requests_total", verb="APPLY", code="2xx") > 0
    agent = stack.scrape(host)
    assert (
        sample(agent, "kubevisor_libvirt_call_duration_seconds_count", operation="define-and-start")
        == started[host] + 1
    )
    assert sample(agent, "kubevisor_reconcile_duration_seconds_count", handler="agent-vm") > 0
