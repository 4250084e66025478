"""kubevisor.api.cpuset: Linux cpuset lists to and from sets of CPU numbers."""

from __future__ import annotations

import pytest

from kubevisor.api import cpuset


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        pytest.param("", set(), id="empty"),
        pytest.param("3", {3}, id="single"),
        pytest.param("0-3", {0, 1, 2, 3}, id="range"),
        pytest.param("0-1,4,6-7", {0, 1, 4, 6, 7}, id="mixed"),
        pytest.param("2,2-3", {2, 3}, id="overlap"),
    ],
)
def test_parse(text: str, cpus: set[int]) -> None:
    assert cpuset.parse(text) == cpus


@pytest.mark.parametrize("text", ["0-3;8", "a", "1-", "-1", "3-1", "1,,2"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        cpuset.parse(text)


@pytest.mark.parametrize(
    ("cpus", "text"),
    [
        pytest.param([], "", id="empty"),
        pytest.param([5], "5", id="single"),
        pytest.param([3, 0, 1, 2], "0-3", id="unordered-range"),
        pytest.param([0, 1, 2, 5, 7, 8], "0-2,5,7-8", id="mixed"),
        pytest.param([1, 1, 2], "1-2", id="duplicates"),
    ],
)
def test_format_round_trips(cpus: list[int], text: str) -> None:
    assert cpuset.render(cpus) == text
    assert cpuset.parse(text) == set(cpus)
