"""The agent's HypervisorHost status fields (agent.hoststatus) from a fake host's facts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from kubevisor.agent import hoststatus
from kubevisor.core.domain import DomainType
from kubevisor.drivers import fake


@pytest.mark.parametrize(
    ("usable", "domain_type", "listed"),
    [
        pytest.param(
            {"qemu": ("qemu64", "Nehalem"), "kvm": ("pentium",)},
            "qemu",
            ["Nehalem", "qemu64"],
            id="the-agents-domain-type-sorted",
        ),
        pytest.param(
            {"qemu": ("qemu64",), "kvm": ("pentium", "486")},
            "kvm",
            ["486", "pentium"],
            id="kvm-lists-its-own",
        ),
        pytest.param({"qemu": ()}, "qemu", [], id="custom-models-unsupported-lists-none"),
        pytest.param({"qemu": ("qemu64",)}, "kvm", None, id="domain-type-not-described"),
        pytest.param({}, "test", None, id="test-driver-cannot-say"),
    ],
)
def test_usable_cpu_models_of_the_agents_domain_type(
    usable: Mapping[str, tuple[str, ...]], domain_type: DomainType, listed: list[str] | None
) -> None:
    facts = dataclasses.replace(fake.default_host_facts(), usable_cpu_models=usable)
    cpu = hoststatus.host_status(facts, domain_type=domain_type, disk_bytes=1 << 30)["cpu"]
    assert cpu.get("usableModels") == listed
    assert ("usableModels" in cpu) is (listed is not None)


def test_fake_host_reports_tcg_models_by_default() -> None:
    status = hoststatus.host_status(fake.default_host_facts(), domain_type="qemu", disk_bytes=0)
    assert status["cpu"]["usableModels"] == sorted(fake.TCG_CPU_MODELS)
