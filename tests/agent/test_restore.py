"""Which restore a VM asks for, once; and the snapshots it refuses, with reasons."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kubevisor.agent import restore
from kubevisor.agent.imagecache import ImageCache
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.destinations import Policy
from kubevisor.drivers.base import PermanentError, RetryableError

UID = "vm-uid"
SHA = "ab" * 32


def vm(annotation: str | None) -> VirtualMachine:
    annotations = {"kubevisor.io/restore": annotation} if annotation else {}
    return VirtualMachine.model_validate(
        {
            "metadata": {"name": "web", "namespace": "n", "uid": UID, "annotations": annotations},
            "spec": {"memory": {"size": "128Mi"}, "disks": [{"name": "data", "size": "16Mi"}]},
        }
    )


def snapshot(phase: str, *, vm_uid: str = UID) -> dict[str, Any]:
    return {
        "metadata": {"name": "one", "namespace": "n"},
        "spec": {"vm": "web"},
        "status": {
            "phase": phase,
            "host": "hv-a",
            "vmUID": vm_uid,
            "disks": [{"name": "data", "sha256": SHA, "size": 1}],
        },
    }


@pytest.mark.parametrize(
    ("annotation", "marker", "expected"),
    [
        pytest.param(None, None, None, id="none-asked"),
        pytest.param("one@1", None, "one", id="asked"),
        pytest.param("one", None, "one", id="asked-by-name-only"),
        pytest.param("one@1", "one@1", None, id="done-already"),
        pytest.param("one@2", "one@1", "one", id="asked-again"),
    ],
)
def test_pending(
    tmp_path: Path, annotation: str | None, marker: str | None, expected: str | None
) -> None:
    if marker is not None:
        (tmp_path / restore.MARKER).write_text(marker)
    assert restore.pending(vm(annotation), tmp_path) == expected


@pytest.mark.parametrize(
    ("snap", "error", "message"),
    [
        pytest.param(None, PermanentError, "does not exist", id="missing"),
        pytest.param(snapshot("InProgress"), RetryableError, "not Ready", id="not-ready"),
        pytest.param(
            snapshot("Ready", vm_uid="other"), PermanentError, "copies another VM", id="other-vm"
        ),
        pytest.param(snapshot("Ready"), PermanentError, "not on this host", id="images-elsewhere"),
    ],
)
def test_refused(
    tmp_path: Path, snap: dict[str, Any] | None, error: type[Exception], message: str
) -> None:
    cache = ImageCache(tmp_path / "cache", policy=Policy())
    with pytest.raises(error, match=message):
        asyncio.run(
            restore.restore(
                vm=vm("one@1"),
                snapshot=snap,
                name="one",
                disk_dir=tmp_path,
                vm_dir=tmp_path,
                cache=cache,
            )
        )
    assert not (tmp_path / restore.MARKER).exists()
