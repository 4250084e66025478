"""kubevisor.api.cpuset: Linux cpuset lists to and from sets of CPU numbers."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubevisor.api import cpuset


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        pytest.param("", set(), id="empty"),
        pytest.param("3", {3}, id="single"),
        pytest.param("0-3", {0, 1, 2, 3}, id="range"),
        pytest.param("0-1,4,6-7", {0, 1, 4, 6, 7}, id="mixed"),
        pytest.param("2,2-3", {2, 3}, id="overlap"),
        pytest.param("5-5", {5}, id="one-cpu-range"),
        pytest.param("8191", {8191}, id="highest-cpu"),
        pytest.param(",".join(str(i) for i in range(0, 128, 2)), set(range(0, 128, 2)), id="64"),
    ],
)
def test_parse(text: str, cpus: set[int]) -> None:
    assert cpuset.parse(text) == cpus


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("0-3;8", "such as 0-3,8,10-11", id="semicolon"),
        pytest.param("a", "such as 0-3,8,10-11", id="letter"),
        pytest.param("1-", "such as 0-3,8,10-11", id="open-range"),
        pytest.param("-1", "such as 0-3,8,10-11", id="negative"),
        pytest.param("1,,2", "such as 0-3,8,10-11", id="empty-entry"),
        pytest.param(" 1", "such as 0-3,8,10-11", id="leading-space"),
        pytest.param("1\n", "such as 0-3,8,10-11", id="trailing-newline"),
        pytest.param("0-4294967295", "such as 0-3,8,10-11", id="four-billion-cpus"),
        pytest.param("\u0661", "such as 0-3,8,10-11", id="non-ascii-digit"),
        pytest.param(",".join(["1"] * 65), "at most 64 entries", id="65-entries"),
        pytest.param("0-8192", "below 8192", id="cpu-8192"),
        pytest.param("9999", "below 8192", id="four-nines"),
        pytest.param("3-1", "runs backwards", id="backwards"),
        pytest.param("7-2", "runs backwards", id="backwards-as-in-the-review"),
    ],
)
def test_parse_refuses(text: str, says: str) -> None:
    with pytest.raises(cpuset.CpuSetError, match=says):
        cpuset.parse(text)


def test_refusals_are_value_errors() -> None:
    assert issubclass(cpuset.CpuSetError, ValueError)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=2000), st.text(alphabet="0123456789-,", max_size=2000)))
def test_parse_is_bounded_whatever_the_input(text: str) -> None:
    started = time.process_time()
    try:
        cpus = cpuset.parse(text)
    except cpuset.CpuSetError:
        return
    finally:
        assert time.process_time() - started < 0.05
    assert len(cpus) <= cpuset.MAX_CPUS
    assert re.fullmatch(cpuset.PATTERN, text) or text == ""


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
