"""The CLI's Kubernetes calls, on the synchronous official client.

Every subcommand that talks to a cluster takes the connection flags of `options()`
(`--kubeconfig`, `--context`, `-n/--namespace`), builds a `Cluster` with `connect()`
and calls the typed wrappers below. `run()` is the one place API and configuration
errors become a one-line message on stderr and exit code 1, so no subcommand prints a
traceback for an ordinary failure. Waiting is `observe()`: a list followed by a watch
from its resourceVersion, yielding each version of one object until a deadline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
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

# Exit codes every subcommand shares (docs/cli.md lists them).
OK: Final = 0
FAILED: Final = 1
USAGE: Final = 2
STALLED: Final = 2  # the object reports Stalled=True: waiting longer will not help
UNAVAILABLE: Final = 3

# The client's config and watch helpers carry no annotations; reach them through Any.
kube_config: Any = config
kube_watch: Any = watch

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


VMS: Final = wire.VIRTUAL_MACHINES
HOSTS: Final = wire.HYPERVISOR_HOSTS
MIGRATIONS: Final = wire.MIGRATION_JOBS

MERGE_PATCH: Final = "application/merge-patch+json"


class CliError(Exception):
    """A failure to report in one line on stderr with an exit code (1 unless told)."""

    def __init__(self, message: str, *, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def options() -> argparse.ArgumentParser:
    """The connection flags, as a parent parser for every subcommand that uses a cluster."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--kubeconfig",
        help="kubeconfig file(s), ':'-separated (default: $KUBECONFIG, else ~/.kube/config)",
    )
    group.add_argument("--context", help="kubeconfig context (default: its current context)")
    group.add_argument(
        "-n",
        "--namespace",
        help="namespace (default: the context's namespace, else 'default')",
    )
    return parser


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
            raise CliError(f"context {context!r} is not in the kubeconfig {paths}")
    namespace = (chosen or {}).get("context", {}).get("namespace")
    return str(namespace) if namespace else None


class Cluster:
    """The calls the CLI makes, bound to one API client and one default namespace."""

    def __init__(self, api: Any, *, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self._custom = client.CustomObjectsApi(api)

    @classmethod
    def connect(cls, args: argparse.Namespace) -> Cluster:
        """From the connection flags of `options()`."""
        paths = kubeconfig_path(getattr(args, "kubeconfig", None))
        context = getattr(args, "context", None)
        if not _exists(paths) and "KUBERNETES_SERVICE_HOST" in os.environ:
            kube_config.load_incluster_config()
            found = (
                IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else None
            )
            api: Any = client.ApiClient()
        else:
            if not _exists(paths):
                raise CliError(f"no kubeconfig at {paths} (use --kubeconfig or $KUBECONFIG)")
            found = context_namespace(paths, context)
            api = kube_config.new_client_from_config(config_file=paths, context=context)
        # One attempt per request: a CLI should fail fast and say why, not hang retrying.
        api.configuration.retries = 0
        namespace = getattr(args, "namespace", None) or found or "default"
        return cls(api, namespace=namespace)

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
        """JSON merge patch of a namespaced object; a resourceVersion in it makes it conditional."""
        reply = self._custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            resource.plural,
            name,
            patch,
            dry_run="All" if dry_run else None,
            field_manager=wire.CLI,
            _content_type=MERGE_PATCH,
        )
        return cast(Object, reply)

    def create(self, resource: Resource, body: Object) -> Object:
        reply = self._custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, resource.plural, body
        )
        return cast(Object, reply)

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


def api_message(error: ApiException) -> str:
    """The API server's own one-line message out of an ApiException."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{error.status} {error.reason}".strip()


def run(action: Callable[[], int]) -> int:
    """Call `action`, turning ordinary failures into one line on stderr and an exit code."""
    try:
        return action()
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except ApiException as error:
        print(f"error: {api_message(error)}", file=sys.stderr)
        return FAILED
    except ConfigException as error:
        print(f"error: kubeconfig: {error}", file=sys.stderr)
        return FAILED
    except urllib3.exceptions.HTTPError as error:
        print(f"error: cannot reach the API server: {error}", file=sys.stderr)
        return FAILED


def with_cluster(args: argparse.Namespace, action: Callable[[Cluster], int]) -> int:
    """`run(action(cluster))` with a cluster from the connection flags, closed afterwards."""

    def connected() -> int:
        cluster = Cluster.connect(args)
        try:
            return action(cluster)
        finally:
            cluster.close()

    return run(connected)


def parse_duration(text: str) -> float:
    """`60s`, `5m`, `1h`, `1m30s` or plain seconds, as kubectl's --timeout (argparse type)."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    stripped = text.strip()
    try:
        return _non_negative(float(stripped))
    except ValueError:
        pass
    total, number = 0.0, ""
    for char in stripped:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total += float(number) * units[char]
            number = ""
        else:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 90s, 5m, 1h)")
    if number or not stripped:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 90s, 5m, 1h)")
    return _non_negative(total)


def _non_negative(seconds: float) -> float:
    if seconds < 0 or math.isnan(seconds):
        raise argparse.ArgumentTypeError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    return f"{seconds:g}s"
