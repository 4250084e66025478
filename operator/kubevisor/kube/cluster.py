"""The CLI's Kubernetes calls, on the synchronous flavour of the official client.

A command-line tool makes a handful of requests and exits, so it needs no event loop:
`Cluster` is bound to one API client and one default namespace, and addresses any
kubevisor resource (`kubevisor.api.wire.Resource`) by name. Waiting is `observe()`: a
list followed by a watch from its resourceVersion, yielding each version of one object
until a deadline. `failure()` turns the client's API, kubeconfig and connection errors
into one line, so the CLI (`kubevisor.cli.kubeapi.run`) never shows a traceback for an
ordinary failure.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, cast

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from kubevisor.api import wire
from kubevisor.api.wire import GROUP, VERSION, Resource

Object = dict[str, Any]

# The client's config and watch helpers carry no annotations; reach them through Any.
kube_config: Any = config
kube_watch: Any = watch

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MERGE_PATCH: Final = "application/merge-patch+json"


class KubeconfigError(Exception):
    """The kubeconfig is missing or does not name what was asked for (a context)."""


def kubeconfig_path(flag: str | None) -> str:
    """`--kubeconfig`, else $KUBECONFIG (read now, not at import), else ~/.kube/config."""
    return flag or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def _exists(paths: str) -> bool:
    return any(Path(p).expanduser().exists() for p in paths.split(os.pathsep) if p)


def context_namespace(paths: str, context: str | None) -> str | None:
    """The namespace the kubeconfig's (current or named) context sets, if any."""
    contexts, current = kube_config.list_kube_config_contexts(config_file=paths)
    chosen = current
    if context is not None:
        chosen = next((c for c in contexts if c.get("name") == context), None)
        if chosen is None:
            raise KubeconfigError(f"context {context!r} is not in the kubeconfig {paths}")
    namespace = (chosen or {}).get("context", {}).get("namespace")
    return str(namespace) if namespace else None


def is_conflict(error: BaseException) -> bool:
    """A conditional write lost a race (HTTP 409): read again and decide again."""
    return isinstance(error, ApiException) and error.status == 409


def api_message(error: ApiException) -> str:
    """The API server's own one-line message out of an ApiException."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{error.status} {error.reason}".strip()


def failure(error: BaseException) -> str | None:
    """One line for an API, kubeconfig or connection failure; None for any other error."""
    if isinstance(error, ApiException):
        return api_message(error)
    if isinstance(error, ConfigException):
        return f"kubeconfig: {error}"
    if isinstance(error, urllib3.exceptions.HTTPError):
        return f"cannot reach the API server: {error}"
    return None


class Cluster:
    """The calls the CLI makes, bound to one API client and one default namespace."""

    def __init__(self, api: Any, *, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self._custom = client.CustomObjectsApi(api)

    @classmethod
    def connect(
        cls, *, kubeconfig: str | None, context: str | None, namespace: str | None
    ) -> Cluster:
        """From a kubeconfig (`kubeconfig_path`), else the in-cluster service account.
        `namespace` wins over the context's, which wins over "default"."""
        paths = kubeconfig_path(kubeconfig)
        if not _exists(paths) and "KUBERNETES_SERVICE_HOST" in os.environ:
            kube_config.load_incluster_config()
            found = (
                IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else None
            )
            api: Any = client.ApiClient()
        else:
            if not _exists(paths):
                raise KubeconfigError(f"no kubeconfig at {paths} (use --kubeconfig or $KUBECONFIG)")
            found = context_namespace(paths, context)
            api = kube_config.new_client_from_config(config_file=paths, context=context)
        # One attempt per request: a CLI should fail fast and say why, not hang retrying.
        api.configuration.retries = 0
        return cls(api, namespace=namespace or found or "default")

    def close(self) -> None:
        self.api.close()

    # -- reads and writes ----------------------------------------------------------------

    def get(self, resource: Resource, name: str) -> Object:
        if resource.namespaced:
            reply = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, resource.plural, name
            )
        else:
            reply = self._custom.get_cluster_custom_object(GROUP, VERSION, resource.plural, name)
        return cast(Object, reply)

    def namespace_annotations(self, name: str) -> dict[str, str]:
        """The annotations of Namespace `name` (its host pool, `core.placement.pools`)."""
        meta = client.CoreV1Api(self.api).read_namespace(name).metadata
        return dict((meta.annotations if meta is not None else None) or {})

    def listing(
        self,
        resource: Resource,
        *,
        all_namespaces: bool = False,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Object:
        """The whole list reply (items and metadata.resourceVersion)."""
        if resource.namespaced and not all_namespaces:
            reply = self._custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                resource.plural,
                label_selector=label_selector,
                field_selector=field_selector,
            )
        else:
            reply = self._custom.list_cluster_custom_object(
                GROUP,
                VERSION,
                resource.plural,
                label_selector=label_selector,
                field_selector=field_selector,
            )
        return cast(Object, reply)

    def items(
        self, resource: Resource, *, all_namespaces: bool = False, label_selector: str = ""
    ) -> list[Object]:
        reply = self.listing(resource, all_namespaces=all_namespaces, label_selector=label_selector)
        return list(reply.get("items") or [])

    def merge_patch(
        self, resource: Resource, name: str, patch: Object, *, dry_run: bool = False
    ) -> Object:
        """JSON merge patch of an object; a resourceVersion in it makes it conditional."""
        options: dict[str, Any] = {
            "dry_run": "All" if dry_run else None,
            "field_manager": wire.CLI,
            "_content_type": MERGE_PATCH,
        }
        if resource.namespaced:
            reply = self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, resource.plural, name, patch, **options
            )
        else:
            reply = self._custom.patch_cluster_custom_object(
                GROUP, VERSION, resource.plural, name, patch, **options
            )
        return cast(Object, reply)

    def create(self, resource: Resource, body: Object) -> Object:
        reply = self._custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, resource.plural, body
        )
        return cast(Object, reply)

    def events(self, kind: str, name: str) -> list[Object]:
        """The Events about the object `kind`/`name` in the namespace, as the API returns them."""
        # Raw JSON (not preloaded): the same dict shape as the custom objects.
        reply: Any = client.CoreV1Api(self.api).list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
            _preload_content=False,
        )
        return list(json.loads(reply.data).get("items") or [])

    # -- waiting ---------------------------------------------------------------------------

    def observe(
        self,
        resource: Resource,
        name: str,
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> Iterator[Object | None]:
        """Each version of one object (None while it does not exist) until `timeout` s.

        Lists it by name, then watches from the list's resourceVersion; when the server
        ends the watch or the version is too old (410), lists again. The caller stops
        early by leaving its loop.
        """
        deadline = clock() + timeout
        selector = f"metadata.name={name}"
        while True:
            listing = self.listing(resource, field_selector=selector)
            found = listing.get("items") or []
            yield found[0] if found else None
            version = str(listing["metadata"]["resourceVersion"])
            while (remaining := deadline - clock()) > 0:
                stream = kube_watch.Watch()
                if resource.namespaced:
                    call: Callable[..., Any] = self._custom.list_namespaced_custom_object
                    where: tuple[str, ...] = (GROUP, VERSION, self.namespace, resource.plural)
                else:
                    call = self._custom.list_cluster_custom_object
                    where = (GROUP, VERSION, resource.plural)
                try:
                    for event in stream.stream(
                        call,
                        *where,
                        field_selector=selector,
                        resource_version=version,
                        allow_watch_bookmarks=True,
                        timeout_seconds=max(1, math.ceil(remaining)),
                        _request_timeout=remaining + 10,
                    ):
                        obj = cast(Object, event["raw_object"])
                        version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                        if event["type"] == "BOOKMARK":
                            continue
                        yield None if event["type"] == "DELETED" else obj
                        if clock() >= deadline:
                            return
                except ApiException as error:
                    if error.status != 410:
                        raise
                    break  # too old: list again
                except urllib3.exceptions.ReadTimeoutError:
                    pass
                finally:
                    stream.stop()
            else:
                return
