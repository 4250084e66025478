"""Eviction from the image cache: unused images by age, then by size, never one in use."""

from __future__ import annotations

import pytest

from kubevisor.core import cacheeviction
from kubevisor.core.cacheeviction import CachedFile

NOW = 1_000_000.0
HOUR = 3600.0
GIB = 1 << 30


def image(name: str, *, size_gib: int = 1, hours_ago: float, in_use: bool = False) -> CachedFile:
    return CachedFile(
        sha256=name * 64, size=size_gib * GIB, last_used=NOW - hours_ago * HOUR, in_use=in_use
    )


@pytest.mark.parametrize(
    ("files", "evicted"),
    [
        pytest.param([image("a", hours_ago=1), image("b", hours_ago=2)], [], id="fresh-and-small"),
        pytest.param(
            [image("a", hours_ago=25), image("b", hours_ago=23)], ["a"], id="older-than-a-day"
        ),
        pytest.param([image("a", hours_ago=48, in_use=True)], [], id="in-use-however-old"),
        pytest.param(
            [
                image("a", size_gib=4, hours_ago=1),
                image("b", size_gib=4, hours_ago=3),
                image("c", size_gib=4, hours_ago=2),
            ],
            ["b"],
            id="too-large-oldest-first-until-it-fits",
        ),
        pytest.param(
            [
                image("a", size_gib=7, hours_ago=3, in_use=True),
                image("b", size_gib=4, hours_ago=1),
                image("c", size_gib=4, hours_ago=2),
            ],
            ["c", "b"],
            id="images-in-use-count-but-stay",
        ),
        pytest.param(
            [image("a", size_gib=12, hours_ago=1, in_use=True), image("b", hours_ago=0)],
            ["b"],
            id="over-the-limit-with-only-images-in-use-left",
        ),
        pytest.param(
            [image("a", size_gib=4, hours_ago=30), image("b", size_gib=7, hours_ago=2)],
            ["a"],
            id="age-first-then-it-fits",
        ),
    ],
)
def test_which_images_are_evicted(files: list[CachedFile], evicted: list[str]) -> None:
    chosen = cacheeviction.choose(files, now=NOW, max_bytes=10 * GIB, max_unused=24 * HOUR)
    assert [f.sha256[0] for f in chosen] == evicted
