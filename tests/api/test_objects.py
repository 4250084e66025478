"""Object keys (one `namespace/name` for raw objects and models alike), which of two
versions of an object is newer, and why an object cannot be read, in a line."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubevisor.api import objects
from kubevisor.api.hypervisorhost import HypervisorHost
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


def _at(version: str, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"name": "a", "uid": uid, "resourceVersion": version}}


@pytest.mark.parametrize(
    ("candidate", "cached", "stale"),
    [
        pytest.param(_at("41"), _at("42"), True, id="an-event-behind-a-write-reply"),
        pytest.param(_at("42"), _at("42"), False, id="the-same-version"),
        pytest.param(_at("100"), _at("99"), False, id="newer-compared-as-numbers-not-text"),
        pytest.param(_at("41"), None, False, id="nothing-cached"),
        pytest.param(_at("41", uid="u2"), _at("42"), False, id="a-new-incarnation"),
        pytest.param(_at("x"), _at("42"), False, id="not-a-number-the-candidate-wins"),
    ],
)
def test_stale(candidate: dict[str, Any], cached: dict[str, Any] | None, stale: bool) -> None:
    assert objects.stale(candidate, cached) is stale


@pytest.mark.parametrize(
    ("cached", "listed_at", "gone"),
    [
        pytest.param(_at("41"), "50", True, id="deleted-before-the-listing"),
        pytest.param(_at("50"), "50", True, id="at-the-listing"),
        pytest.param(_at("51"), "50", False, id="created-after-the-listing"),
        pytest.param(_at("51"), "", True, id="no-listing-version-the-listing-wins"),
    ],
)
def test_gone_since(cached: dict[str, Any], listed_at: str, gone: bool) -> None:
    assert objects.gone_since(cached, listed_at) is gone


def test_unreadable_names_the_fields_and_their_problems() -> None:
    raw = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "HypervisorHost",
        "metadata": {"name": "h"},
        "spec": {"cpuSharedSet": "7-2", "allocationRatios": {"cpu": 1e308}},
    }
    with pytest.raises(ValidationError) as invalid:
        HypervisorHost.model_validate(raw)
    assert objects.unreadable(invalid.value) == (
        "spec.allocationRatios.cpu: Input should be less than or equal to 100; "
        "spec.cpuSharedSet: '7-2': range 7-2 runs backwards; each range must run upwards, "
        "e.g. 2-7 (not 7-2)"
    )
    assert objects.unreadable(OverflowError("too big")) == "too big"
    assert len(objects.unreadable(ValueError("x" * 5000))) == objects.MAX_REASON
