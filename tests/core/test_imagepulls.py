"""The summary of a VM's image downloads: reason, message per disk, and the list kept."""

from __future__ import annotations

import pytest

from kubevisor.core import imagepulls
from kubevisor.core.conditions import Row
from kubevisor.core.imagepulls import ImagePullState, PullFailure

URL = "http://images.example/root.qcow2"
MIB = 1 << 20
RETRIED = PullFailure(permanent=False, reason="DiskFull", message="no space", retry_in=9.6)
FOR_GOOD = PullFailure(permanent=True, reason="ImageNotFound", message="HTTP 404")


def pull(disk: str, failure: PullFailure | None = None, **more: int) -> ImagePullState:
    return ImagePullState(disk=disk, url=URL, failure=failure, **more)


@pytest.mark.parametrize(
    ("pulls", "summary"),
    [
        pytest.param(
            [pull("root", received_bytes=MIB)],
            (True, "Pulling", f"disk root: 1.0 MiB from {URL}"),
            id="one-download-running",
        ),
        pytest.param(
            [pull("root", received_bytes=MIB, total_bytes=3 * MIB, attempts=3)],
            (True, "Pulling", f"disk root: 1.0 MiB of 3.0 MiB (33%) from {URL}, attempt 3"),
            id="share-and-attempt",
        ),
        pytest.param(
            [pull("root"), pull("data", RETRIED)],
            (
                True,
                "DiskFull",
                f"disk root: 0.0 MiB from {URL}; disk data: no space; retrying in 10s",
            ),
            id="a-retried-failure-names-the-reason",
        ),
        pytest.param(
            [pull("root", RETRIED), pull("data", FOR_GOOD)],
            (False, "ImageNotFound", "disk root: no space; retrying in 10s; disk data: HTTP 404"),
            id="a-permanent-failure-decides",
        ),
    ],
)
def test_pull_summary(pulls: list[ImagePullState], summary: tuple[bool, str, str]) -> None:
    assert imagepulls.pull_summary(pulls) == summary


def test_the_condition_says_cached_when_nothing_is_left_to_pull() -> None:
    assert imagepulls.image_pulling([], ["root", "data"]) == Row(
        "ImagePulling", "False", "Pulled", "disk root: image cached; disk data: image cached"
    )
    assert imagepulls.image_pulling([pull("root", FOR_GOOD)], ["root"]) == Row(
        "ImagePulling", "False", "ImageNotFound", "disk root: HTTP 404"
    )


def test_status_lists_the_downloads_in_flight_not_those_failed_for_good() -> None:
    listed = imagepulls.image_pulls([pull("root", RETRIED), pull("data", FOR_GOOD)])
    assert listed == [{"disk": "root", "url": URL, "receivedBytes": 0, "attempts": 1}]
