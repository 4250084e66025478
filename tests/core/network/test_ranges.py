"""The lowest-free allocator under ipam and vni (core.network.ranges)."""

from __future__ import annotations

import time

import pytest

from kubevisor.core.network.ranges import LowestFree, merged


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        pytest.param([(5, 9), (1, 3)], ((1, 3), (5, 9)), id="sorted"),
        pytest.param([(1, 5), (3, 9)], ((1, 9),), id="overlapping-joined"),
        pytest.param([(1, 4), (5, 9)], ((1, 9),), id="touching-joined"),
        pytest.param([(1, 9), (2, 3)], ((1, 9),), id="contained"),
        pytest.param([(5, 4)], (), id="empty-dropped"),
    ],
)
def test_merged(ranges: list[tuple[int, int]], expected: tuple[tuple[int, int], ...]) -> None:
    assert merged(ranges) == expected


def test_excluded_numbers_are_never_handed_out_nor_counted() -> None:
    free = LowestFree([(1, 5)], excluded=[2, 4, 99])
    assert free.capacity == 3 and free.excluded == {2, 4}
    assert [free.take_lowest() for _ in range(4)] == [1, 3, 5, None]
    with pytest.raises(ValueError, match="not offered"):
        free.take(4)


def test_given_back_below_the_cursor_comes_first() -> None:
    free = LowestFree([(10, 12), (20, 21)])
    assert [free.take_lowest() for _ in range(3)] == [10, 11, 12]
    assert free.take(21)
    free.give_back(11)
    assert [free.take_lowest(), free.take_lowest(), free.take_lowest()] == [11, 20, None]
    free.give_back(21)
    free.give_back(10)
    assert [free.take_lowest(), free.take_lowest()] == [10, 21]


def test_a_huge_range_is_never_enumerated() -> None:
    """A /8 subnet's 16 million addresses: the first and last cost nothing."""
    started = time.perf_counter()
    free = LowestFree([(1, 2**24 - 2)])
    assert free.take(2**24 - 2)
    assert free.take_lowest() == 1
    assert free.free == 2**24 - 4
    assert time.perf_counter() - started < 0.5
