"""The domain names the host paths the agent resolved (HostEnvironment.host_paths), never
the spec's strings; a path the agent did not resolve is refused (issue 16, point 2)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from kubevisor.core.domain import converter
from kubevisor.core.domain.document import DomainError
from kubevisor.core.domain.host import HostEnvironment

from .builders import vm

KERNEL = {"memory": {"size": "64Mi"}, "boot": {"kernel": "/srv/boot/k", "initrd": "/srv/boot/i"}}
CONTAINER = {"memory": {"size": "64Mi"}, "container": {"rootfs": "/srv/ct/web"}}


@pytest.mark.parametrize(
    ("spec", "domain_type", "host_paths", "found"),
    [
        pytest.param(
            KERNEL,
            "qemu",
            {"boot.kernel": "/real/k", "boot.initrd": "/real/i"},
            {"os/kernel": "/real/k", "os/initrd": "/real/i"},
            id="kernel-and-initrd",
        ),
        pytest.param(
            CONTAINER,
            "lxc",
            {"container.rootfs": "/real/web"},
            {"devices/filesystem/source[@dir='/real/web']": ""},
            id="container-root",
        ),
        pytest.param(
            KERNEL,
            "qemu",
            None,
            {"os/kernel": "/srv/boot/k", "os/initrd": "/srv/boot/i"},
            id="nothing-resolved-the-spec-as-written",
        ),
    ],
)
def test_the_domain_names_the_resolved_paths(
    spec: dict[str, Any],
    domain_type: Any,
    host_paths: dict[str, str] | None,
    found: dict[str, str],
) -> None:
    host = HostEnvironment(domain_type=domain_type, host_paths=host_paths)
    root = ET.fromstring(converter.render(vm(spec), host=host))
    for path, text in found.items():
        element = root.find(path)
        assert element is not None, path
        assert (element.text or "") == text


@pytest.mark.parametrize(
    ("spec", "domain_type", "host_paths", "field"),
    [
        pytest.param(KERNEL, "qemu", {"boot.kernel": "/real/k"}, "boot.initrd", id="initrd"),
        pytest.param(KERNEL, "qemu", {}, "boot.kernel", id="kernel"),
        pytest.param(CONTAINER, "lxc", {}, "container.rootfs", id="rootfs"),
    ],
)
def test_a_path_the_agent_did_not_resolve_is_refused(
    spec: dict[str, Any], domain_type: Any, host_paths: dict[str, str], field: str
) -> None:
    host = HostEnvironment(domain_type=domain_type, host_paths=host_paths)
    with pytest.raises(DomainError, match=f"{field}: .* was not resolved"):
        converter.render(vm(spec), host=host)
