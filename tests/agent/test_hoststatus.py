"""The agent's HypervisorHost status fields (agent.hoststatus) from a fake host's facts and
its image cache's files."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest

from kubevisor.agent import hoststatus, probe
from kubevisor.agent.imagecache import Entry
from kubevisor.api.hypervisorhost import HostStorage
from kubevisor.core.domain.host import DomainType
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


@pytest.mark.parametrize(
    ("driver", "domain_type", "reported"),
    [
        pytest.param("QEMU", "kvm", "kvm", id="qemu-driver-with-kvm"),
        pytest.param("QEMU", "qemu", "qemu", id="qemu-driver-with-tcg"),
        pytest.param("TEST", "qemu", "test", id="libvirt-test-driver"),
        pytest.param("LXC", "qemu", "lxc", id="libvirt-lxc-driver"),
        pytest.param("vmware", "qemu", "vmware", id="vsphere"),
    ],
)
def test_hypervisor_type_as_placement_reads_it(
    driver: str, domain_type: DomainType, reported: str
) -> None:
    facts = dataclasses.replace(fake.default_host_facts(), hypervisor_type=driver)
    status = hoststatus.host_status(facts, domain_type=domain_type, disk_bytes=0)
    assert status["hypervisor"]["type"] == reported


def test_fake_host_reports_tcg_models_by_default() -> None:
    status = hoststatus.host_status(fake.default_host_facts(), domain_type="qemu", disk_bytes=0)
    assert status["cpu"]["usableModels"] == sorted(fake.TCG_CPU_MODELS)


def test_the_image_cache_is_listed_with_the_disks_using_each_image() -> None:
    entries = [
        Entry(sha256="b" * 64, size=16 << 20, last_used=1_800_000_000.7),
        Entry(sha256="a" * 64, size=1000, last_used=1_700_000_000.0),
    ]
    images = hoststatus.cached_images(entries, Counter({"b" * 64: 2, "c" * 64: 1}))
    status = hoststatus.host_status(
        fake.default_host_facts(),
        domain_type="qemu",
        disk_bytes=0,
        images=images,
        storage=HostStorage(image_cache="17Mi"),
    )
    assert status["images"] == [
        {
            "sha256": "a" * 64,
            "size": "1000",
            "lastUsed": "2023-11-14T22:13:20Z",
            "inUse": 0,
            "shared": False,
        },
        {
            "sha256": "b" * 64,
            "size": "16Mi",
            "lastUsed": "2027-01-15T08:00:00Z",
            "inUse": 2,
            "shared": False,
        },
    ]
    assert status["storage"]["imageCache"] == "17Mi"


def test_only_the_most_recently_used_images_fit_in_the_status() -> None:
    entries = [
        Entry(sha256=f"{n:064x}", size=1, last_used=float(n))
        for n in range(hoststatus.MAX_IMAGES + 5)
    ]
    images = hoststatus.cached_images(entries, {})
    assert len(images) == hoststatus.MAX_IMAGES
    assert min(int(i.sha256, 16) for i in images) == 5


def test_the_storage_probe_reports_the_image_caches_size(tmp_path: Path) -> None:
    storage = probe.storage(disk_root=tmp_path, virtual_bytes=0, image_cache_bytes=3 << 20)
    assert storage.image_cache == "3Mi"
    assert probe.storage(disk_root=tmp_path, virtual_bytes=0).image_cache is None


def test_a_fallback_to_tcg_says_why_in_the_hypervisor_status() -> None:
    facts = dataclasses.replace(fake.default_host_facts(), domain_types=("kvm", "qemu"))
    why = "libvirt offers KVM but it is not used: /dev/kvm cannot be opened; guests run on TCG"
    hypervisor = hoststatus.host_status(
        facts, domain_type="qemu", domain_type_message=why, disk_bytes=0
    )["hypervisor"]
    assert (hypervisor["type"], hypervisor["message"]) == ("qemu", why)
    plain = hoststatus.host_status(facts, domain_type="kvm", disk_bytes=0)["hypervisor"]
    assert "message" not in plain
