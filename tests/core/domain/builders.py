"""Small builders for domain tests: a VirtualMachine in namespace prod, the direct-boot
files of the tiny guest, and strings that would break XML built by string formatting."""

from __future__ import annotations

from typing import Any

import pytest

from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.domain.host import BootFiles

TINY_BOOT = BootFiles(
    kernel="/var/lib/kubevisor/guest/vmlinuz",
    initrd="/var/lib/kubevisor/guest/initrd.gz",
    cmdline="console=ttyS0 quiet",
)


def vm(
    spec: dict[str, Any], *, status: dict[str, Any] | None = None, name: str = "web"
) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {
            "metadata": {
                "namespace": "prod",
                "name": name,
                "uid": "6f1c1f9e-8a3b-4c55-9a55-0d7b5c2d1e01",
                "generation": 3,
            },
            "spec": spec,
            "status": status,
        }
    )


HOSTILE = [
    pytest.param('a"b', id="double-quote"),
    pytest.param("x'><evil/><y a='", id="single-quote-and-element"),
    pytest.param("<devices><disk/></devices>", id="angle-brackets"),
    pytest.param("]]><evil/><![CDATA[", id="cdata-terminator"),
    pytest.param("&amp;&lt;", id="entities"),
]
