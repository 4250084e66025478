"""The Argo CD health checks in deploy/argocd: each kind's health.lua, run on its testdata
exactly as Argo CD's health_test.yaml says, and the argocd-cm snippet kept identical.

Argo CD runs these scripts with gopher-lua (Lua 5.1) and the object as the global `obj`;
lupa's embedded Lua 5.1 does the same here. Regenerate the snippet after editing a script:
`.venv/bin/python tests/deploy/test_argocd_health.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.migrationjob import MigrationJob
from kubevisor.api.snapshot import VirtualMachineSnapshot
from kubevisor.api.virtualmachine import VirtualMachine

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "deploy" / "argocd"
CUSTOMIZATIONS = ARGOCD / "resource_customizations" / "kubevisor.io"
CONFIGMAP = ARGOCD / "argocd-cm.yaml"
KINDS = {
    "VirtualMachine": VirtualMachine,
    "HypervisorHost": HypervisorHost,
    "MigrationJob": MigrationJob,
    "VirtualMachineSnapshot": VirtualMachineSnapshot,
}
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def cases() -> list[Any]:
    params = []
    for kind in KINDS:
        tests = yaml.safe_load((CUSTOMIZATIONS / kind / "health_test.yaml").read_text())["tests"]
        for case in tests:
            path = CUSTOMIZATIONS / kind / case["inputPath"]
            params.append(pytest.param(kind, path, case["healthStatus"], id=f"{kind}-{path.stem}"))
    return params


def lua_health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run KIND/health.lua on `obj` the way Argo CD does: a Lua 5.1 chunk with global obj."""
    from harness import require  # here, so that the module also runs as a script

    try:
        import lupa.lua51 as lua51
    except ImportError:
        lua51 = None
    require(lua51 is not None, what="lupa (Lua for Python)", how="pip install lupa")
    assert lua51 is not None
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    script = (CUSTOMIZATIONS / kind / "health.lua").read_text()
    result = runtime.execute(script)
    return {str(k): str(v) for k, v in result.items()}


@pytest.mark.parametrize(("kind", "path", "expected"), cases())
def test_health_lua(kind: str, path: Path, expected: dict[str, str]) -> None:
    obj = yaml.safe_load(path.read_text())
    assert expected["status"] in STATUSES
    assert lua_health(kind, obj) == expected


@pytest.mark.parametrize(("kind", "path", "expected"), cases())
def test_testdata_is_a_valid_object_of_its_kind(
    kind: str, path: Path, expected: dict[str, str]
) -> None:
    """The scripts are tested on objects our API models accept, not on made-up shapes."""
    obj = yaml.safe_load(path.read_text())
    assert obj["kind"] == kind
    KINDS[kind].model_validate(obj)


def test_every_testdata_file_is_in_a_health_test() -> None:
    used = {path for _, path, _ in (p.values for p in cases())}
    assert set(CUSTOMIZATIONS.glob("*/testdata/*.yaml")) == used


def configmap_text() -> str:
    """argocd-cm.yaml as it must read: each health.lua verbatim under its key."""
    lines = [
        "# Argo CD health checks for kubevisor's kinds, for the argocd-cm ConfigMap (merge these",
        "# keys into yours, e.g. as a Kustomize patch). Generated from",
        "# resource_customizations/kubevisor.io/*/health.lua by",
        "# `.venv/bin/python tests/deploy/test_argocd_health.py`; tests keep them identical.",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: argocd-cm",
        "  namespace: argocd",
        "  labels:",
        "    app.kubernetes.io/name: argocd-cm",
        "    app.kubernetes.io/part-of: argocd",
        "data:",
    ]
    for kind in KINDS:
        lines.append(f"  resource.customizations.health.kubevisor.io_{kind}: |")
        script = (CUSTOMIZATIONS / kind / "health.lua").read_text()
        lines += [f"    {line}" if line else "" for line in script.splitlines()]
    return "\n".join(lines) + "\n"


def test_argocd_cm_carries_the_scripts_verbatim() -> None:
    assert CONFIGMAP.read_text() == configmap_text(), (
        "deploy/argocd/argocd-cm.yaml is stale: .venv/bin/python tests/deploy/test_argocd_health.py"
    )
    data = yaml.safe_load(CONFIGMAP.read_text())["data"]
    for kind in KINDS:
        script = (CUSTOMIZATIONS / kind / "health.lua").read_text()
        assert data[f"resource.customizations.health.kubevisor.io_{kind}"] == script


if __name__ == "__main__":
    CONFIGMAP.write_text(configmap_text())
    print(f"wrote {CONFIGMAP.relative_to(REPO)}")
