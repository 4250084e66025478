"""Host pools per namespace: which hosts a namespace's VMs may use, and which hosts take
only named namespaces' VMs (Nova's aggregate multi-tenancy isolation).

Two rules, both set by cluster admins, never by a VM's owner:

- a namespace's host pool: the annotation `kubevisor.io/host-selector` on the Namespace
  ("pool=team-a" or "pool=team-a,zone=z1"), a host selector ANDed with every VM's own
  (`spec.placement.hostSelector`): the namespace's VMs land only on hosts carrying every
  label of both;
- a host reserved for namespaces: `spec.reservedFor` on the HypervisorHost names the only
  namespaces whose VMs it takes (empty: any namespace's).

`pool_of` reads the annotation; `namespace_pool` and `reserved` are placement filters
(`placement.filters.FILTERS` runs them), so an Unschedulable message counts the hosts
each excludes ("0/5 hosts fit: 3 outside namespace team-a's host pool pool=team-a, ...").
An annotation that cannot be read excludes every host (the safe side: ignoring it would
let the namespace's VMs out of their pool), and the message says what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from kubevisor.api.wire import HOST_SELECTOR_ANNOTATION
from kubevisor.core.placement.model import HostSnapshot, NamespacePool, Rejection, Request
from kubevisor.core.placement.state import PlacementState


def pool_of(namespace: str, annotations: Mapping[str, str] | None) -> NamespacePool | None:
    """The host pool a Namespace's annotations give it (None: no pool, any host).

    The annotation is a comma-separated list of `key=value` (equality only, as a Service's
    selector); spaces around the parts are ignored, an empty annotation is no pool."""
    text = (annotations or {}).get(HOST_SELECTOR_ANNOTATION)
    if text is None or not text.strip():
        return None
    selector: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = (piece.strip() for piece in part.partition("="))
        if not sep or not key or "=" in value or "!" in key:
            return NamespacePool(
                namespace,
                invalid=f"annotation {HOST_SELECTOR_ANNOTATION}={text!r}: {part.strip()!r} "
                "is not key=value (a comma-separated list of key=value is expected)",
            )
        if selector.get(key, value) != value:
            return NamespacePool(
                namespace,
                invalid=f"annotation {HOST_SELECTOR_ANNOTATION}={text!r} asks label {key} "
                f"to be both {selector[key]} and {value}",
            )
        selector[key] = value
    return NamespacePool(namespace, selector=MappingProxyType(selector))


def required_labels(request: Request) -> frozenset[tuple[str, str]]:
    """Every (key, value) label a host must carry to take the request: its own host
    selector's and its namespace pool's (the scheduler looks them up in its label index)."""
    pool = request.namespace_pool
    labels = set(request.host_selector.items())
    if pool is not None:
        labels.update(pool.selector.items())
    return frozenset(labels)


def namespace_of(request: Request) -> str:
    """The namespace of the VM a request is for (its name is "namespace/name")."""
    namespace, _, _ = request.name.rpartition("/")
    return namespace


def namespace_pool(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Is the host in the host pool of the VM's namespace? (Hosts count under the pool,
    whichever of its labels they lack.)"""
    pool = request.namespace_pool
    if pool is None:
        return None
    if pool.invalid is not None:
        summary = f"namespace {pool.namespace}'s host pool cannot be read ({pool.invalid})"
        return Rejection("namespace_pool", summary, f"host {host.name}: {summary}")
    lacking = first_lacking(host, pool.selector)
    if lacking is None:
        return None
    label, instead = lacking
    return Rejection(
        "namespace_pool",
        f"outside namespace {pool.namespace}'s host pool {pool.text}",
        f"host {host.name} lacks label {label}{instead} of namespace {pool.namespace}'s "
        f"host pool (annotation {HOST_SELECTOR_ANNOTATION})",
    )


def first_lacking(host: HostSnapshot, selector: Mapping[str, str]) -> tuple[str, str] | None:
    """The first label of `selector` the host lacks ("key=value") and what it has instead
    (" (it has key=other)", or ""); None when it carries them all. Both selector filters
    (`filters.host_selector`, `namespace_pool`) name it."""
    for key, value in selector.items():
        found = host.labels.get(key)
        if found != value:
            return f"{key}={value}", f" (it has {key}={found})" if found is not None else ""
    return None


def reserved(host: HostSnapshot, request: Request, state: PlacementState) -> Rejection | None:
    """Does the host take VMs of the request's namespace (spec.reservedFor)?"""
    if not host.reserved_for:
        return None
    namespace = namespace_of(request)
    if namespace in host.reserved_for:
        return None
    names = ", ".join(sorted(host.reserved_for))
    return Rejection(
        "reserved",
        f"reserved for namespace{'s' if len(host.reserved_for) > 1 else ''} {names}",
        f"host {host.name} takes VMs of namespaces {names} only (spec.reservedFor), "
        f"not of {namespace or 'no namespace'}",
    )
