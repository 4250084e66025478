"""deploy/gitops: the Argo CD Applications and Flux objects point at paths that exist and
apply what they say (parsed; no Argo CD or Flux runs here)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from harness import REPO

GITOPS = REPO / "deploy" / "gitops"


def load(name: str) -> dict[tuple[str, str], dict[str, Any]]:
    docs = yaml.safe_load_all((GITOPS / name).read_text())
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}


@pytest.mark.parametrize(
    ("name", "path"),
    [
        pytest.param("kubevisor", "deploy/manifests", id="operator"),
        pytest.param("kubevisor-examples", "deploy/examples", id="examples"),
    ],
)
def test_argocd_applications(name: str, path: str) -> None:
    app = load("argocd-application.yaml")[("Application", name)]
    assert app["spec"]["source"]["path"] == path
    assert (REPO / path).is_dir()
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_argocd_examples_skip_the_simulator_inputs() -> None:
    app = load("argocd-application.yaml")[("Application", "kubevisor-examples")]
    assert app["spec"]["source"]["directory"]["recurse"] is False
    assert (REPO / "deploy" / "examples" / "placement").is_dir()


@pytest.mark.parametrize(
    ("name", "path"),
    [
        pytest.param("kubevisor", "deploy/manifests", id="operator"),
        pytest.param("kubevisor-examples", "deploy/examples", id="examples"),
    ],
)
def test_flux_kustomizations_wait_on_kstatus(name: str, path: str) -> None:
    objects = load("flux.yaml")
    kustomization = objects[("Kustomization", name)]
    assert kustomization["spec"]["path"] == f"./{path}"
    assert (REPO / path).is_dir()
    assert kustomization["spec"]["wait"] is True
    source = kustomization["spec"]["sourceRef"]
    ignore = objects[(source["kind"], source["name"])]["spec"]["ignore"]
    assert f"!/{path}/" in ignore.split()
    assert "/deploy/examples/placement/" in ignore.split()
    if target := kustomization["spec"].get("targetNamespace"):
        assert ("Namespace", target) in objects
