"""One watch of a list call, as (type, object) pairs: the loop under every watcher.

`Kube.watch_vms`, `watch_jobs` and `watch_leases` are this stream over their list calls;
the callers list first and watch from the listing's resourceVersion, and list again when
it raises `Gone`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from kubernetes.aio import watch
from kubernetes.aio.client.exceptions import ApiException

from kubevisor.kube.errors import Gone


async def stream(
    list_call: Callable[..., Awaitable[Any]],
    *args: str,
    resource_version: str,
    timeout: int,
    label_selector: str | None = None,
) -> AsyncIterator[tuple[str, Any]]:
    """(type, object) pairs of one watch until the server ends it; raises Gone on HTTP 410."""
    extra = {"label_selector": label_selector} if label_selector is not None else {}
    watcher = watch.Watch()
    try:
        async for event in watcher.stream(
            list_call,
            *args,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            **extra,
        ):
            kind = event["type"]
            obj = event["object"]
            if kind == "ERROR":
                if isinstance(obj, dict) and obj.get("code") == 410:
                    raise Gone(str(obj.get("message", "")))
                code = obj.get("code", 500) if isinstance(obj, dict) else 500
                raise ApiException(status=code, reason=str(obj))
            yield kind, obj
    except ApiException as error:
        if error.status == 410:
            raise Gone(str(error)) from error
        raise
    finally:
        await watcher.close()
