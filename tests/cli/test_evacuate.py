"""`kubevisor evacuate`: the request it writes (refused while the host is Ready) and its
outcome, read back from what the controller writes; then on the real API server."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kubevisor.cli import evacuate
from kubevisor.cli.kubeapi import CliError

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
STAMP = "2026-01-01T12:00:00Z"


def host(ready: str | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "h1"}}
    if ready is not None:
        obj["status"] = {"conditions": [{"type": "Ready", "status": ready}]}
    return obj


@pytest.mark.parametrize(
    ("ready", "confirmed"),
    [
        pytest.param("False", True, id="lost-confirmed"),
        pytest.param("Unknown", False, id="unknown-unconfirmed"),
        pytest.param(None, False, id="never-judged"),
    ],
)
def test_the_request_names_the_time_and_the_confirmation(
    ready: str | None, confirmed: bool
) -> None:
    assert evacuate.request(host(ready), confirmed=confirmed, now=NOW) == {
        "spec": {"evacuate": {"requestedAt": STAMP, "confirmedFenced": confirmed}}
    }


def test_a_ready_host_is_refused() -> None:
    with pytest.raises(CliError, match=r"host h1 is Ready .*only a lost host is evacuated"):
        evacuate.request(host("True"), confirmed=True, now=NOW)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(None, None, id="not-yet"),
        pytest.param(
            {"requestedAt": "2025-01-01T00:00:00Z", "outcome": "Evacuated"},
            None,
            id="an-older-request",
        ),
        pytest.param(
            {"requestedAt": STAMP, "outcome": "Waiting", "message": "w"}, None, id="waiting"
        ),
        pytest.param(
            {"requestedAt": STAMP, "outcome": "Refused", "message": "no"},
            ("Refused", "no"),
            id="refused",
        ),
    ],
)
def test_outcome(status: dict[str, Any] | None, expected: tuple[str, str] | None) -> None:
    obj = host("False")
    if status is not None:
        obj["status"]["evacuation"] = status
    assert evacuate.outcome(obj, STAMP) == expected


RUN = uuid.uuid4().hex[:6]


@pytest.fixture
def hosts(control_plane: Any, objects: Any) -> Iterator[dict[str, str]]:
    """Two hosts as the controller judged them: one Ready, one lost."""
    names = {"True": f"ev-ready-{RUN}", "False": f"ev-lost-{RUN}"}
    for ready, name in names.items():
        objects.create(
            {
                "apiVersion": "kubevisor.io/v1alpha1",
                "kind": "HypervisorHost",
                "metadata": {"name": name},
            }
        )
        objects.patch_status(
            "hypervisorhost",
            name,
            {"conditions": [{"type": "Ready", "status": ready, "reason": "R"}]},
        )
    yield {"ready": names["True"], "lost": names["False"]}
    for name in names.values():
        control_plane.kubectl("delete", "hypervisorhost", name, check=False)


@pytest.mark.apiserver
def test_evacuate_on_the_api_server(cli: Any, objects: Any, hosts: dict[str, str]) -> None:
    refused = cli("evacuate", hosts["ready"], "--confirm-fenced", "--timeout", "0")
    assert refused.code == 1
    assert f"host {hosts['ready']} is Ready" in refused.err
    assert "evacuate" not in objects.get("hypervisorhost", hosts["ready"]).get("spec", {})

    done = cli("evacuate", hosts["lost"], "--confirm-fenced", "--timeout", "0")
    assert (done.code, done.err) == (0, "")
    request = objects.get("hypervisorhost", hosts["lost"])["spec"]["evacuate"]
    assert request["confirmedFenced"] is True
    assert f"requested at {request['requestedAt']}" in done.out
