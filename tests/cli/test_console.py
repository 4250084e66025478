"""`kubevisor console` offline: attaching or reading the log without a reachable cluster
fails in one line. Attaching and `--log` for real: tests/console."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize("extra", [[], ["--log"]], ids=["attach", "log"])
def test_console_without_a_cluster_fails_in_one_line(offline_cli: Any, extra: list[str]) -> None:
    result = offline_cli("console", "db-0", *extra)
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith("error: ") and result.err.count("\n") == 1


def test_console_without_the_aggregated_api_says_what_is_missing(cli: Any) -> None:
    """The shared control plane has no console APIService: the apiserver answers 404."""
    result = cli("console", "db-0")
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        "error: the console API is not served here (404): is the APIService "
        "v1alpha1.subresources.kubevisor.io installed and Available?\n"
    )
