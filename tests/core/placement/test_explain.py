"""Explanations (placement.explain): the one-line summary a human can act on."""

from __future__ import annotations

import pytest

from kubevisor.core.placement import explain
from kubevisor.core.placement.model import Rejection

from .builders import GIB


def mem(free: int) -> Rejection:
    return Rejection("memory", "insufficient memory", "", need=8 * GIB, free=free, unit="MiB")


def test_message_in_the_issue_style() -> None:
    rejections = (
        [mem(f * GIB) for f in (1, 2, 6, 3, 0, 5, 4)]
        + [Rejection("anti_affinity", 'anti-affinity group "db"', "")] * 4
        + [Rejection("schedulable", "unschedulable", "")]
    )
    assert explain.summarize(12, rejections).message == (
        "0/12 hosts fit: 7 insufficient memory (need 8Gi, best has 6Gi free), "
        '4 anti-affinity group "db", 1 unschedulable'
    )


@pytest.mark.parametrize(
    ("mib", "text"),
    [
        pytest.param(8 * GIB, "8Gi", id="gibibytes"),
        pytest.param(512, "512Mi", id="mebibytes"),
        pytest.param(1536, "1.5Gi", id="fractional"),
        pytest.param(0, "0Mi", id="zero"),
        pytest.param(2 * 1024 * GIB, "2Ti", id="tebibytes"),
    ],
)
def test_format_mib(mib: int, text: str) -> None:
    assert explain.format_mib(mib) == text


def test_no_hosts() -> None:
    assert explain.summarize(0, []).message == "0/0 hosts fit: no hypervisor hosts"


def test_single_host_and_ties_sorted_by_name() -> None:
    rejections = [
        Rejection("ready", "not ready", ""),
        Rejection("schedulable", "in maintenance", ""),
    ]
    assert (
        explain.summarize(3, rejections).message == "1/3 hosts fit: 1 in maintenance, 1 not ready"
    )
    assert explain.summarize(1, [rejections[0]]).message == "0/1 host fit: 1 not ready"
