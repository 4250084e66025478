"""Every subcommand of `kubevisor` answers --help (exit 0, usage on stdout)."""

from __future__ import annotations

from typing import Any

import pytest

from kubevisor.cli import main

OURS = (
    "start",
    "stop",
    "restart",
    "pause",
    "unpause",
    "migrate",
    "wait",
    "hosts",
    "explain-placement",
    "create",
    "console",
)


def subcommands() -> list[str]:
    parser = main.build_parser()
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(actions[0].choices)  # type: ignore[union-attr]


def test_every_verb_of_the_issue_is_registered() -> None:
    assert set(OURS) <= set(subcommands())


@pytest.mark.parametrize(
    "argv",
    [pytest.param([name], id=name) for name in subcommands()]
    + [pytest.param(["create", "vm"], id="create-vm")],
)
def test_help(offline_cli: Any, argv: list[str]) -> None:
    result = offline_cli(*argv, "--help")
    assert result.code == 0
    assert result.out.startswith(f"usage: kubevisor {' '.join(argv)}")
    assert result.err == ""


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["stop"], id="missing-vm"),
        pytest.param(["wait", "x", "--timeout", "soon"], id="bad-duration"),
        pytest.param(["hosts", "-o", "xml"], id="bad-output"),
        pytest.param(["migrate", "x", "--dry-run", "--wait"], id="dry-run-and-wait"),
    ],
)
def test_usage_errors_exit_2(offline_cli: Any, argv: list[str]) -> None:
    result = offline_cli(*argv)
    assert (result.code, result.out) == (2, "")
