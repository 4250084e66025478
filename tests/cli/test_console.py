"""`kubevisor console` offline: `--log` is not available yet (exit 3), and attaching
without a reachable cluster fails in one line. Attaching for real: tests/console."""

from __future__ import annotations

from typing import Any


def test_console_log_is_not_available_yet(offline_cli: Any) -> None:
    result = offline_cli("console", "db-0", "--log")
    assert (result.code, result.out) == (3, "")
    assert result.err == (
        "error: console --log is not available yet: the agent keeps the serial log on its "
        "host but serves no log endpoint (docs/cli.md#console)\n"
    )


def test_console_without_a_cluster_fails_in_one_line(offline_cli: Any) -> None:
    result = offline_cli("console", "db-0")
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
