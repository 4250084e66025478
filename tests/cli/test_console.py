"""`kubevisor console` is not available yet, and says so: exit 3, one line on stderr."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize(
    "flags", [pytest.param([], id="attach"), pytest.param(["--log"], id="log")]
)
def test_console_is_not_available_yet(offline_cli: Any, flags: list[str]) -> None:
    result = offline_cli("console", "db-0", *flags)
    assert (result.code, result.out) == (3, "")
    assert result.err == (
        "error: console is not available yet: the agent serves no console endpoint "
        "(design: docs/cli.md#console, or `kubevisor console --help`)\n"
    )
