"""deploy/grafana/kubevisor-dashboard.json: every panel's query names a metric kubevisor
exports (collected from the code's registries, not listed here), the metrics that matter
have a panel, and the dashboard is well-formed for Grafana (unique ids, a templated
Prometheus datasource)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client import REGISTRY

from harness import REPO
from kubevisor import metrics as metrics  # registers kubevisor's metrics with REGISTRY
from kubevisor.agent import vmmetrics

DASHBOARD = REPO / "deploy" / "grafana" / "kubevisor-dashboard.json"


def exported() -> dict[str, str]:
    """Every metric kubevisor exports, by name as PromQL sees it, with its type: the
    families registered by `kubevisor.metrics` (counters under their `_total` name) and
    those of the agent's per-VM collector."""
    names = {}
    for family in REGISTRY.collect():
        if family.name.startswith("kubevisor_"):
            suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
            names[family.name + suffix] = family.type
    for family in vmmetrics.FAMILIES:
        names[family.name] = "counter" if family.counter else "gauge"
    return names


EXPORTED = exported()
HISTOGRAMS = {name for name, kind in EXPORTED.items() if kind == "histogram"}
# What the dashboard must show (a subset of EXPORTED, checked below).
METRICS = (
    "kubevisor_vms",
    "kubevisor_placement_decisions_total",
    "kubevisor_placement_duration_seconds",
    "kubevisor_host_capacity",
    "kubevisor_host_allocated",
    "kubevisor_host_allocatable",
    "kubevisor_migrations_total",
    "kubevisor_migration_duration_seconds",
    "kubevisor_migration_bytes_total",
    "kubevisor_libvirt_call_duration_seconds",
    "kubevisor_reconcile_duration_seconds",
    "kubevisor_reconcile_errors_total",
    "kubevisor_api_requests_total",
    "kubevisor_vm_cpu_seconds_total",
    "kubevisor_vm_vcpu_delay_seconds_total",
    "kubevisor_vm_vcpu_wait_seconds_total",
    "kubevisor_vm_memory_rss_bytes",
    "kubevisor_vm_memory_actual_bytes",
    "kubevisor_vm_memory_unused_bytes",
    "kubevisor_vm_disk_read_bytes_total",
    "kubevisor_vm_disk_write_bytes_total",
    "kubevisor_vm_disk_read_requests_total",
    "kubevisor_vm_disk_write_requests_total",
    "kubevisor_vm_disk_read_seconds_total",
    "kubevisor_vm_disk_write_seconds_total",
    "kubevisor_vm_network_receive_bytes_total",
    "kubevisor_vm_network_transmit_bytes_total",
    "kubevisor_vm_network_receive_drops_total",
    "kubevisor_vm_network_transmit_drops_total",
    "kubevisor_vm_migration_dirty_pages_per_second",
)
# A metric name in PromQL, with the histogram suffixes a query may add.
NAME = re.compile(r"\bkubevisor_[a-z_]+?(?:_bucket|_sum|_count)?\b")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def base_name(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_has_a_panel(dashboard: dict[str, Any], metric: str) -> None:
    used = {base_name(n) for e in exprs(dashboard) for n in NAME.findall(e)}
    assert metric in used


def test_the_metrics_to_show_exist() -> None:
    assert set(METRICS) <= set(EXPORTED)
    assert "kubevisor_vm_cpu_seconds_total" in EXPORTED  # the per-VM collector's are in


def test_panels_use_only_exported_metrics_and_histograms_by_bucket(
    dashboard: dict[str, Any],
) -> None:
    for expr in exprs(dashboard):
        for name in NAME.findall(expr):
            assert base_name(name) in EXPORTED, f"unknown metric {name} in {expr}"
            if base_name(name) in HISTOGRAMS:
                assert name.endswith("_bucket"), f"histogram {name} used raw in {expr}"
        assert expr.count("(") == expr.count(")"), expr


def test_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "host", "resource", "namespace", "vm"} <= variables
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
