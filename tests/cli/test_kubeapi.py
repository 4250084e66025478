"""The CLI's connection and duration helpers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevisor.cli import kubeapi
from kubevisor.kube.cluster import Cluster


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("60", 60.0, id="plain-seconds"),
        pytest.param("1.5", 1.5, id="fraction"),
        pytest.param("90s", 90.0, id="seconds"),
        pytest.param("5m", 300.0, id="minutes"),
        pytest.param("1h", 3600.0, id="hours"),
        pytest.param("1m30s", 90.0, id="combined"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert kubeapi.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "m", "-1", "10s5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        kubeapi.parse_duration(text)


def kubeconfig(path: Path, *, namespace: str | None, server: str = "https://127.0.0.1:1") -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "main", "context": context},
                    {"name": "other", "context": {"cluster": "c", "user": "u", "namespace": "o"}},
                ],
                "current-context": "main",
            }
        )
    )
    return path


def connect(**flags: Any) -> Cluster:
    args = argparse.Namespace(**{"kubeconfig": None, "context": None, "namespace": None, **flags})
    return kubeapi.connect(args)


@pytest.mark.parametrize(
    ("in_config", "flags", "expected"),
    [
        pytest.param("team-a", {}, "team-a", id="from-the-current-context"),
        pytest.param(None, {}, "default", id="default"),
        pytest.param("team-a", {"namespace": "x"}, "x", id="flag-wins"),
        pytest.param("team-a", {"context": "other"}, "o", id="named-context"),
    ],
)
def test_namespace(
    tmp_path: Path, in_config: str | None, flags: dict[str, str], expected: str
) -> None:
    path = kubeconfig(tmp_path / "config", namespace=in_config)
    assert connect(kubeconfig=str(path), **flags).namespace == expected


def test_kubeconfig_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = kubeconfig(tmp_path / "config", namespace="from-env")
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert connect().namespace == "from-env"


def test_unknown_context_is_an_error(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", namespace=None)
    with pytest.raises(kubeapi.CliError, match="context 'nope' is not in the kubeconfig"):
        connect(kubeconfig=str(path), context="nope")


def test_unreachable_api_server_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kubeconfig(tmp_path / "config", namespace=None)
    args = argparse.Namespace(kubeconfig=str(path), context=None, namespace=None)
    code = kubeapi.with_cluster(args, lambda cluster: cluster.items(kubeapi.HOSTS) and 0)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: cannot reach the API server") and err.count("\n") == 1
