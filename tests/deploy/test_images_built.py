"""The images hack/images/build.sh builds with buildah (issue 25), run as a container
runtime runs them: each OCI archive unpacked by umoci into a runtime bundle and started by
runc with the image's own user and entrypoint; the agent's with a testbed libvirtd's
socket directory mounted where the DaemonSet mounts the host's. Their sizes are recorded,
unpacked and as pulled (the archive's compressed layers), and held to the targets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import images_dir, require
from kubevisor.testbed.hosts import LocalHost

pytestmark = pytest.mark.images

MB = 1_000_000
# Targets (issue 25) for what a node pulls: the archive's compressed layers.
PULL_TARGET_MB = {"controller": 200, "agent": 350}


@dataclass
class Image:
    name: str
    archive: Path
    bundle: Path
    config: dict[str, Any]  # the OCI image config's `config`: User, Entrypoint, Cmd, Env

    def run(
        self,
        args: Sequence[str],
        *,
        entrypoint: bool = True,
        mounts: Sequence[tuple[Path, str]] = (),
    ) -> subprocess.CompletedProcess[str]:
        """`args` after the image's entrypoint (or alone), as the image's user, in runc."""
        spec = json.loads((self.bundle / "config.umoci.json").read_text())
        spec["process"]["args"] = [*(self.config["Entrypoint"] if entrypoint else []), *args]
        spec["process"]["terminal"] = False
        spec["mounts"] += [
            {"destination": dest, "type": "bind", "source": str(src), "options": ["rbind", "rw"]}
            for src, dest in mounts
        ]
        (self.bundle / "config.json").write_text(json.dumps(spec))
        state = self.bundle.parent / "runc-state"
        name = f"kubevisor-smoke-{self.name}-{uuid.uuid4().hex[:8]}"
        return subprocess.run(
            ["runc", "--root", str(state), "run", "--bundle", str(self.bundle), name],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )


def unpack(name: str, archive: Path, into: Path) -> Image:
    layout, bundle = into / "layout", into / "bundle"
    layout.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(layout), "-xf", str(archive)], check=True)
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
        check=True,
        capture_output=True,
    )
    (bundle / "config.json").rename(bundle / "config.umoci.json")
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(layout, index["manifests"][0]["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))["config"]
    return Image(name=name, archive=archive, bundle=bundle, config=config)


def blob(layout: Path, digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return (layout / "blobs" / algorithm / hexdigest).read_text()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Image]]:
    built = images_dir()
    require(
        built is not None,
        what="the built images",
        how="build them with hack/images/build.sh (or run `make test`)",
    )
    missing = [tool for tool in ("runc", "umoci") if shutil.which(tool) is None]
    require(not missing, what=", ".join(missing), how="run hack/setup.sh as root")
    assert built is not None
    root = tmp_path_factory.mktemp("images")
    found = {
        name: unpack(name, built / f"{name}.oci.tar", root / name)
        for name in ("controller", "agent")
    }
    try:
        yield found
    finally:
        shutil.rmtree(root, ignore_errors=True)


def ids(image: Image) -> str:
    """`uid:gid` the image's processes run as."""
    done = image.run(
        ["python", "-c", "import os; print(f'{os.getuid()}:{os.getgid()}')"], entrypoint=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_controller_entrypoint_runs_as_the_declared_non_root_user(
    images: dict[str, Image],
) -> None:
    controller = images["controller"]
    assert controller.config["Entrypoint"] == ["kubevisor-controller"]
    assert controller.config["User"] == "65532:65532"
    done = controller.run(["--help"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kubevisor-controller")
    assert "--peering" in done.stdout
    assert ids(controller) == "65532:65532"


def test_controller_carries_neither_libvirt_nor_the_testbed(images: dict[str, Image]) -> None:
    script = (
        "import importlib.util as u\n"
        "for name in ('libvirt', 'kubevisor.testbed', 'kubevisor.handlers', 'pip'):\n"
        "    print(name, u.find_spec(name) is not None)\n"
    )
    done = images["controller"].run(["python", "-c", script], entrypoint=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == [
        "libvirt False",
        "kubevisor.testbed False",
        "kubevisor.handlers True",
        "pip False",
    ]


def test_agent_entrypoints_and_host_tools_run_as_root(images: dict[str, Image]) -> None:
    agent = images["agent"]
    assert agent.config["Entrypoint"] == ["kubevisor-agent"]
    assert ids(agent) == "0:0"
    done = agent.run(["--help"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kubevisor-agent")
    done = agent.run(["kubevisor-watchdog", "--help"], entrypoint=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kubevisor-watchdog")
    for tool in (
        ["qemu-img", "--version"],
        ["genisoimage", "--version"],
        ["dnsmasq", "--version"],
        ["nft", "--version"],
        ["prlimit", "--version"],
    ):
        done = agent.run(tool, entrypoint=False)
        assert done.returncode == 0, f"{tool}: {done.stderr}"


def test_agent_drives_a_testbed_libvirtd_through_its_socket(
    images: dict[str, Image], local_hosts: list[LocalHost]
) -> None:
    """libvirt-python in the image, the host's socket directory mounted at the DaemonSet's
    path and the default URI: the same libvirtd answers as the testbed reaches directly."""
    import libvirt

    host = local_hosts[0]
    direct = libvirt.open(host.unix_uri)
    try:
        expected = f"{direct.getType()} {direct.getLibVersion()} {direct.getHostname()}"
    finally:
        direct.close()
    script = (
        "import libvirt\n"
        "c = libvirt.open('qemu:///system')\n"
        "print(c.getType(), c.getLibVersion(), c.getHostname())\n"
    )
    done = images["agent"].run(
        ["python", "-c", script],
        entrypoint=False,
        mounts=[(host.socket.parent, "/var/run/libvirt")],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


@pytest.mark.parametrize("name", ["controller", "agent"])
def test_image_sizes(
    images: dict[str, Image], name: str, record_property: pytest.RecordProperty
) -> None:
    image = images[name]
    pulled = image.archive.stat().st_size
    unpacked = sum(
        os.lstat(os.path.join(top, f)).st_size
        for top, _, files in os.walk(image.bundle / "rootfs")
        for f in files
    )
    record_property(f"{name}_pulled_mb", round(pulled / MB))
    record_property(f"{name}_unpacked_mb", round(unpacked / MB))
    assert pulled <= PULL_TARGET_MB[name] * MB, (
        f"{name}: {pulled / MB:.0f} MB to pull (unpacked {unpacked / MB:.0f} MB), "
        f"target {PULL_TARGET_MB[name]} MB"
    )
