"""Object keys: one `namespace/name` for raw objects and models alike."""

from __future__ import annotations

from typing import Any

import pytest

from kubevisor.api import objects
from kubevisor.api.virtualmachine import VirtualMachine


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        pytest.param({"name": "a", "namespace": "prod"}, "prod/a", id="namespaced"),
        pytest.param({"name": "a"}, "default/a", id="no-namespace-is-default"),
        pytest.param({"name": "a", "namespace": ""}, "default/a", id="empty-namespace-is-default"),
    ],
)
def test_key(metadata: dict[str, Any], key: str) -> None:
    assert objects.key(metadata) == key


def test_a_model_and_its_raw_object_have_the_same_key() -> None:
    raw = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"memory": {"size": "64Mi"}},
    }
    assert objects.key(VirtualMachine.model_validate(raw).metadata) == "shop/web"
    assert objects.key(raw["metadata"]) == "shop/web"


def test_a_job_names_the_vm_it_moves_in_its_own_namespace_and_its_phase() -> None:
    job: dict[str, Any] = {"metadata": {"name": "j1", "namespace": "shop"}, "spec": {"vm": "web"}}
    assert objects.job_vm_key(job) == "shop/web"
    assert objects.job_phase(job) is None
    job["status"] = {"phase": "Running"}
    assert objects.job_phase(job) == "Running"
