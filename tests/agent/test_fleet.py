"""Hollow hosts (`agent.fleet`): distinct hosts, one shared API client.

The fleet running against the real API server is exercised by tests/bench/test_scale.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from kubevisor.agent import fleet
from kubevisor.kube.client import Kube


def test_host_names_are_distinct_and_sort_in_order() -> None:
    names = fleet.host_names("hollow-", 1200)
    assert len(set(names)) == 1200
    assert names == sorted(names)
    assert names[0] == "hollow-0000" and names[-1] == "hollow-1199"


def test_each_host_has_its_own_identity() -> None:
    a, b = fleet.facts("hollow-0000"), fleet.facts("hollow-0001")
    assert (a.hostname, b.hostname) == ("hollow-0000", "hollow-0001")
    assert a.uuid != b.uuid
    assert fleet.facts("hollow-0000").uuid == a.uuid  # stable across restarts


def test_agents_share_the_client_and_nothing_else(tmp_path: Path) -> None:
    kube = cast(Kube, object())
    agents = fleet.agents(["h-0", "h-1"], kube=kube, state_dir=tmp_path)
    assert all(agent.kube is kube for agent in agents)
    assert agents[0].hv is not agents[1].hv
    assert agents[0].queue is not agents[1].queue
    assert {a.settings.state_dir for a in agents} == {tmp_path / "h-0", tmp_path / "h-1"}
    assert all(a.selffence is None for a in agents)


def test_the_pool_holds_every_watch() -> None:
    assert fleet.connections(500) >= 500 * fleet.WATCHES_PER_HOST
