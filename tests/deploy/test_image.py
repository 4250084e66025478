"""The Dockerfile, read (no Docker engine here to build it): its stages, who each image runs
as, what it runs, that build tools stay in the build stage, that every runtime
dependency is pinned in requirements.lock, and that the testbed stays out of the wheel and
the images while the CLI still works without it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field

import pytest
import setuptools

from harness import REPO
from kubevisor.cli import main as cli_main

DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"
BUILD_TOOLS = ("gcc", "libc6-dev", "pkg-config", "libvirt-dev", "build-essential")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for kw, args in self.instructions if kw == keyword]
        return found[-1] if found else None

    def text(self, keyword: str) -> str:
        return "\n".join(args for kw, args in self.instructions if kw == keyword)


def parse(text: str) -> dict[str, Stage]:
    """Instructions per stage: continuation lines joined, comments and blank lines dropped."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert match, line
            stage = Stage(name=match[2] or str(len(stages)), base=match[1])
            stages[stage.name] = stage
        elif stage is not None:
            stage.instructions.append((keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse(DOCKERFILE.read_text())


def test_stages(stages: dict[str, Stage]) -> None:
    assert list(stages) == ["wheels", "runtime", "controller", "agent"]
    assert stages["controller"].base == stages["agent"].base == "runtime"
    assert "slim" in DOCKERFILE.read_text().split("ARG PYTHON_IMAGE=")[1].split()[0]


@pytest.mark.parametrize(
    ("target", "user", "entrypoint"),
    [
        pytest.param("controller", "65532:65532", ["kubevisor-controller"], id="controller"),
        pytest.param("agent", "0:0", ["kubevisor-agent"], id="agent"),
    ],
)
def test_targets_user_and_entrypoint(
    stages: dict[str, Stage], target: str, user: str, entrypoint: list[str]
) -> None:
    stage = stages[target]
    assert stage.last("USER") == user
    assert json.loads(stage.last("ENTRYPOINT") or "null") == entrypoint


@pytest.mark.parametrize("target", ["runtime", "controller", "agent"])
def test_no_build_tools_in_the_final_images(stages: dict[str, Stage], target: str) -> None:
    installs = stages[target].text("RUN")
    for tool in BUILD_TOOLS:
        assert not re.search(rf"\b{re.escape(tool)}\b", installs), f"{tool} in {target}"
    assert "COPY" not in {kw for kw, _ in stages[target].instructions}, "wheels via bind mount"


def test_only_the_agent_carries_libvirt(stages: dict[str, Stage]) -> None:
    assert "libvirt0" in stages["agent"].text("RUN")
    assert "libvirt0" not in stages["controller"].text("RUN")
    assert "grep -v '/libvirt_python-'" in stages["controller"].text("RUN")


def test_controller_image_defaults_match_the_deployment(stages: dict[str, Stage]) -> None:
    cmd = json.loads(stages["controller"].last("CMD") or "[]")
    assert cmd == ["--peering=kubevisor", "--liveness=http://0.0.0.0:8080/healthz"]


def test_every_runtime_dependency_is_pinned() -> None:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        assert re.sub(r"[-_.]+", "-", name).lower() in pins, f"{name} missing from {LOCK.name}"


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied.update(line.split()[1:-1])
    assert copied == allowed


def test_the_wheel_leaves_the_testbed_out_and_keeps_every_other_package() -> None:
    """The packages setuptools puts in the wheel (pyproject's find rules), which is what
    both images install."""
    rules = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    find = rules["packages"]["find"]
    packaged = set(
        setuptools.find_packages(where=str(REPO / find["where"][0]), exclude=find["exclude"])
    )
    everything = set(setuptools.find_packages(where=str(REPO / find["where"][0])))
    assert everything - packaged == {p for p in everything if p.startswith("kubevisor.testbed")}
    assert {"kubevisor.testbed", "kubevisor.cli", "kubevisor.agent"} <= everything
    # Else files a stale egg-info lists would come back as package data.
    assert rules["include-package-data"] is False
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "operator/kubevisor/testbed/" in lines


def test_the_cli_works_without_the_testbed_and_has_no_dev_command() -> None:
    """As installed from the wheel: `kubevisor.testbed` cannot be imported."""
    script = (
        "import sys; sys.modules['kubevisor.testbed'] = None\n"
        "from kubevisor.cli import main\n"
        "names = main.build_parser()._subparsers._group_actions[0].choices\n"
        "print(' '.join(sorted(names)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    parser = cli_main.build_parser()
    with_testbed = sorted(parser._subparsers._group_actions[0].choices)
    assert "dev" in with_testbed
    assert done.stdout.split() == [c for c in with_testbed if c != "dev"]
