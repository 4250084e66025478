"""What a VM's status says about the downloads of its disks' source images.

The agent's image cache reports each download as an `ImagePullState`; `core.status`
reads them for the phase (a VM waits in Starting while its images download, and fails
once one cannot be downloaded at all), the ImagePulling condition and
`status.imagePulls`, through the functions here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubevisor.api import conditions as cond
from kubevisor.api import quantity
from kubevisor.api.virtualmachine import ImagePull
from kubevisor.core.conditions import Row, truth


@dataclass(frozen=True, slots=True, kw_only=True)
class PullFailure:
    """Why the last download of a disk's image failed (the agent's image cache says)."""

    permanent: bool
    reason: str
    """DownloadFailed or DiskFull (retried); ChecksumMismatch, ImageNotFound,
    DownloadRefused, DestinationRefused, ImageTooLarge or CorruptImage (permanent: the
    spec, the server or the host's rules must change)."""
    message: str
    retry_in: float | None = None
    """Seconds until the agent downloads it again, for a retried failure."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePullState:
    """A disk whose source image is not in the host's cache yet, and its download so far."""

    disk: str
    url: str
    received_bytes: int = 0
    total_bytes: int | None = None
    """As the server announced it (Content-Length); None when it did not."""
    attempts: int = 1
    failure: PullFailure | None = None
    """Set when the last attempt failed; None while it runs."""


def pull_summary(pulls: Sequence[ImagePullState]) -> tuple[bool, str, str]:
    """(still pulling, reason, message) of the disks waiting for their images.

    Not pulling once one download failed for good: its reason (ChecksumMismatch, ...)
    decides. Otherwise the first retried failure's reason (DownloadFailed, DiskFull), or
    Pulling; the message has one part per disk, as `disk NAME: ...`.
    """
    message = "; ".join(f"disk {p.disk}: {_pull_part(p)}" for p in pulls)
    failures = [p.failure for p in pulls if p.failure is not None]
    permanent = [f for f in failures if f.permanent]
    if permanent:
        return False, permanent[0].reason, message
    return True, failures[0].reason if failures else "Pulling", message


def _pull_part(pull: ImagePullState) -> str:
    attempt = f", attempt {pull.attempts}" if pull.attempts > 1 else ""
    failure = pull.failure
    if failure is None:
        received = quantity.in_mib(pull.received_bytes)
        if pull.total_bytes:
            share = min(100, round(100 * pull.received_bytes / pull.total_bytes))
            received += f" of {quantity.in_mib(pull.total_bytes)} ({share}%)"
        return f"{received} from {pull.url}{attempt}"
    if failure.permanent or failure.retry_in is None:
        return f"{failure.message}{attempt}"
    return f"{failure.message}{attempt}; retrying in {failure.retry_in:.0f}s"


def image_pulling(pulls: Sequence[ImagePullState], sourced: Sequence[str]) -> Row:
    """The ImagePulling condition of a VM whose disks `sourced` have source images."""
    if not pulls:
        message = "; ".join(f"disk {name}: image cached" for name in sourced)
        return Row(cond.IMAGE_PULLING, "False", "Pulled", message)
    pulling, reason, message = pull_summary(pulls)
    return Row(cond.IMAGE_PULLING, truth(pulling), reason, message)


def image_pulls(pulls: Sequence[ImagePullState]) -> list[dict[str, Any]]:
    """status.imagePulls: the downloads running or to be retried (not those failed for
    good: nothing is in flight for them)."""
    return [
        # The wire model's fields are the state's, failure aside.
        ImagePull.model_validate(p, from_attributes=True).to_wire()
        for p in pulls
        if p.failure is None or not p.failure.permanent
    ]
