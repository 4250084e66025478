"""deploy/manifests/components/alerts: every alert fires and stays silent where
tests/deploy/alerts.promtool.yaml says (promtool, against the series that file writes),
names only metrics that exist, and has a runbook in docs/runbooks/ with its four parts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from harness import REPO, require
from kubevisor import metrics

ALERTS = REPO / "deploy" / "manifests" / "components" / "alerts"
CASES = REPO / "tests" / "deploy" / "alerts.promtool.yaml"
RUNBOOKS = REPO / "docs" / "runbooks"
RUNBOOK_URL = "https://github.com/kubevisor/kubevisor/blob/main/docs/runbooks/"
RUNBOOK_PARTS = ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation")


def rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load((ALERTS / "prometheusrule.yaml").read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def promtool() -> str:
    found = shutil.which("promtool")
    require(
        found is not None,
        what="promtool",
        how="apt-get install prometheus (hack/setup.sh installs it as root)",
    )
    assert found is not None
    return found


def test_promtool_checks_the_rules_and_every_case_passes(tmp_path: Path) -> None:
    rule = yaml.safe_load((ALERTS / "prometheusrule.yaml").read_text())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(CASES, tmp_path / CASES.name)
    binary = promtool()
    for command in (["check", "rules", "rules.yaml"], ["test", "rules", CASES.name]):
        done = subprocess.run(
            [binary, *command], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_is_silent() -> None:
    evaluations = [
        check
        for case in yaml.safe_load(CASES.read_text())["tests"]
        for check in case["alert_rule_test"]
    ]
    for alert in (r["alert"] for r in rules()):
        outcomes = {bool(c["exp_alerts"]) for c in evaluations if c["alertname"] == alert}
        assert outcomes == {True, False}, alert


def exported_names() -> set[str]:
    """The series names kubevisor's own /metrics has, and the kubevisor_state_* ones the
    kube-state-metrics configuration of the component makes."""
    names = {"up"}
    for wrapper in vars(metrics).values():
        if not isinstance(wrapper, MetricWrapperBase):
            continue
        for family in wrapper.describe():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
            names.update(family.name + s for s in suffixes.get(family.type, [""]))
    config = yaml.safe_load(
        yaml.safe_load((ALERTS / "kube-state-metrics-config.yaml").read_text())["data"][
            "config.yaml"
        ]
    )
    for resource in config["spec"]["resources"]:
        names.update(f"{resource['metricNamePrefix']}_{m['name']}" for m in resource["metrics"])
    return names


def test_every_alert_reads_only_metrics_that_exist() -> None:
    known = exported_names()
    assert "kubevisor_host_condition" in known
    assert "kubevisor_migrations_total" in known
    for rule in rules():
        named = set(re.findall(r"\b(kubevisor_[a-z0-9_]+|up)\b", rule["expr"]))
        assert named, rule["alert"]
        assert named <= known, (rule["alert"], named - known)


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_alert_has_a_runbook_with_its_four_parts(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    assert url == f"{RUNBOOK_URL}{rule['alert']}.md"
    text = (RUNBOOKS / f"{rule['alert']}.md").read_text()
    assert text.startswith(f"# {rule['alert']}\n")
    positions = [text.index(part) for part in RUNBOOK_PARTS]
    assert positions == sorted(positions)
    assert "kubevisor " in text or "kubectl " in text
    assert rule["labels"]["severity"] in ("critical", "warning")


def test_the_readme_indexes_every_runbook() -> None:
    readme = (REPO / "README.md").read_text()
    runbooks = sorted(p.stem for p in RUNBOOKS.glob("*.md") if p.stem != "README")
    assert runbooks == sorted(r["alert"] for r in rules())
    for name in runbooks:
        assert f"(docs/runbooks/{name}.md)" in readme, name
