"""`kubevisor console` offline: attaching or reading the log without a reachable cluster
fails in one line, `--web` without noVNC says how to get it. Attaching, `--log` and the
web console in a browser for real: tests/console."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import REPO
from kubevisor.cli import webconsole


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


def test_web_console_without_novnc_says_how_to_get_it(offline_cli: Any, tmp_path: Path) -> None:
    result = offline_cli("console", "db-0", "--web", "--novnc", str(tmp_path))
    assert (result.code, result.out) == (1, "")
    prefix = webconsole.default_novnc().parents[2]
    assert result.err == (
        f"error: noVNC is not installed: no core/rfb.js in {tmp_path}; install it with "
        f"`npm install --prefix {prefix} @novnc/novnc@{webconsole.NOVNC_VERSION}` (in a "
        "kubevisor checkout: hack/novnc/build.sh), or pass --novnc with the directory of an "
        "installed @novnc/novnc package\n"
    )


@pytest.mark.parametrize(
    "flags",
    [pytest.param(["--port", "8080"], id="port"), pytest.param(["--novnc", "/x"], id="novnc")],
)
def test_web_flags_without_web_are_a_usage_error(offline_cli: Any, flags: list[str]) -> None:
    result = offline_cli("console", "db-0", *flags)
    assert (result.code, result.out, result.err) == (
        2,
        "",
        "error: --port and --novnc go with --web\n",
    )


def test_the_novnc_the_page_is_written_for_is_the_one_setup_installs() -> None:
    """hack/novnc/build.sh installs the version package.json pins (and the lock file
    holds with its hash) into the directory the CLI looks in by default."""
    here = REPO / "hack" / "novnc"
    pinned = json.loads((here / "package.json").read_text())["dependencies"]["@novnc/novnc"]
    locked = json.loads((here / "package-lock.json").read_text())["packages"]
    assert pinned == locked["node_modules/@novnc/novnc"]["version"] == webconsole.NOVNC_VERSION
    assert webconsole.default_novnc().parts[-5:] == (
        "novnc",
        f"novnc-{pinned}",
        "node_modules",
        "@novnc",
        "novnc",
    )
