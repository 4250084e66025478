"""deploy/grafana/kubevisor-dashboard.json: every metric kubevisor exports has a panel, and
the dashboard is well-formed for Grafana (unique ids, a templated Prometheus datasource)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from harness import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "kubevisor-dashboard.json"
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
)
HISTOGRAMS = {m for m in METRICS if m.endswith("_seconds")}
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


def test_panels_use_only_known_metrics_and_histograms_by_bucket(dashboard: dict[str, Any]) -> None:
    for expr in exprs(dashboard):
        for name in NAME.findall(expr):
            assert base_name(name) in METRICS, f"unknown metric {name} in {expr}"
            if base_name(name) in HISTOGRAMS:
                assert name.endswith("_bucket"), f"histogram {name} used raw in {expr}"
        assert expr.count("(") == expr.count(")"), expr


def test_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "host", "resource"} <= variables
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
