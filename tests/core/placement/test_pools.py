"""Host pools per namespace (`placement.pools`): the annotation read, the two filters, the
explanation counting the hosts they exclude, and the scheduler's label index."""

from __future__ import annotations

import dataclasses

import pytest

from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.wire import HOST_SELECTOR_ANNOTATION
from kubevisor.core.placement import filters, inputs, pools, scheduler
from kubevisor.core.placement.model import HostSnapshot, NamespacePool, Request
from kubevisor.core.placement.scheduler import Decision, NoFit
from kubevisor.core.placement.state import PlacementState

from .builders import make_host, make_request


def pool(selector: str, namespace: str = "team-a") -> NamespacePool | None:
    return pools.pool_of(namespace, {HOST_SELECTOR_ANNOTATION: selector})


def host(name: str, *, labels: dict[str, str] | None = None, reserved: str = "") -> HostSnapshot:
    """A host labelled `labels`, reserved for the comma-separated namespaces `reserved`."""
    return dataclasses.replace(
        make_host(name, labels=labels),
        reserved_for=frozenset(n for n in reserved.split(",") if n),
    )


def request(
    namespace: str = "team-a",
    *,
    pool_selector: str = "",
    own: dict[str, str] | None = None,
    name: str = "vm",
) -> Request:
    """VM `name` of `namespace` (its own host selector `own`), the namespace's pool
    `pool_selector` as its annotation says it."""
    wanted = make_request(f"{namespace}/{name}", selector=own)
    return dataclasses.replace(wanted, namespace_pool=pool(pool_selector, namespace))


@pytest.mark.parametrize(
    ("text", "selector"),
    [
        pytest.param("pool=team-a", {"pool": "team-a"}, id="one-label"),
        pytest.param(" pool = a , zone=z1 ", {"pool": "a", "zone": "z1"}, id="two-labels-spaced"),
        pytest.param("pool=a,pool=a", {"pool": "a"}, id="same-label-twice"),
        pytest.param("gpu=", {"gpu": ""}, id="empty-value"),
    ],
)
def test_the_annotation_gives_a_selector(text: str, selector: dict[str, str]) -> None:
    read = pool(text)
    assert read is not None and read.invalid is None
    assert dict(read.selector) == selector


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("pool", "'pool' is not key=value", id="no-equals"),
        pytest.param("pool=a,", "'' is not key=value", id="trailing-comma"),
        pytest.param("=a", "'=a' is not key=value", id="no-key"),
        pytest.param("pool!=a", "'pool!=a' is not key=value", id="inequality"),
        pytest.param("pool==a", "'pool==a' is not key=value", id="double-equals"),
        pytest.param("pool=a,pool=b", "asks label pool to be both a and b", id="two-values"),
    ],
)
def test_an_unreadable_annotation_says_what_is_wrong(text: str, says: str) -> None:
    read = pool(text)
    assert read is not None and read.invalid is not None
    assert says in read.invalid and HOST_SELECTOR_ANNOTATION in read.invalid


@pytest.mark.parametrize("annotations", [None, {}, {HOST_SELECTOR_ANNOTATION: "  "}])
def test_no_annotation_is_no_pool(annotations: dict[str, str] | None) -> None:
    assert pools.pool_of("team-a", annotations) is None


@pytest.mark.parametrize(
    ("check", "on", "wanted", "summary"),
    [
        pytest.param(
            pools.namespace_pool,
            host("h1", labels={"pool": "team-a", "zone": "z1"}),
            request(pool_selector="pool=team-a"),
            None,
            id="host-in-the-pool",
        ),
        pytest.param(
            pools.namespace_pool,
            host("h1", labels={"pool": "team-b"}),
            request(pool_selector="pool=team-a"),
            "outside namespace team-a's host pool pool=team-a",
            id="host-in-another-pool",
        ),
        pytest.param(
            pools.namespace_pool,
            host("h1", labels={"pool": "team-a"}),
            request(pool_selector="pool=team-a,zone=z1"),
            "outside namespace team-a's host pool pool=team-a,zone=z1",
            id="host-lacks-one-label-of-two",
        ),
        pytest.param(
            pools.namespace_pool,
            host("h1"),
            request(),
            None,
            id="namespace-without-pool",
        ),
        pytest.param(
            pools.namespace_pool,
            host("h1", labels={"pool": "a"}),
            request(pool_selector="pool"),
            "namespace team-a's host pool cannot be read",
            id="unreadable-pool-excludes-every-host",
        ),
        pytest.param(
            pools.reserved,
            host("h1", reserved="team-b"),
            request(),
            "reserved for namespace team-b",
            id="reserved-for-another-namespace",
        ),
        pytest.param(
            pools.reserved,
            host("h1", reserved="team-b,team-a"),
            request(),
            None,
            id="reserved-for-this-namespace-among-others",
        ),
        pytest.param(
            pools.reserved,
            host("h1", reserved="team-b,team-c"),
            request(),
            "reserved for namespaces team-b, team-c",
            id="reserved-for-two-others",
        ),
        pytest.param(pools.reserved, host("h1"), request(), None, id="host-open-to-all"),
    ],
)
def test_filters(
    check: filters.Filter, on: HostSnapshot, wanted: Request, summary: str | None
) -> None:
    state = PlacementState.rebuild([on], [])
    rejection = check(on, wanted, state)
    if summary is None:
        assert rejection is None
    else:
        assert rejection is not None and rejection.summary.startswith(summary)


def test_the_pool_is_anded_with_the_vms_own_selector() -> None:
    hosts = [
        host("a-z1", labels={"pool": "team-a", "zone": "z1"}),
        host("a-z2", labels={"pool": "team-a", "zone": "z2"}),
        host("b-z1", labels={"pool": "team-b", "zone": "z1"}),
    ]
    state = PlacementState.rebuild(hosts, [])
    placed = scheduler.place(state, request(pool_selector="pool=team-a", own={"zone": "z1"}))
    assert isinstance(placed, Decision) and placed.host == "a-z1"


def test_the_explanation_counts_hosts_the_pool_and_reservations_exclude() -> None:
    hosts = [
        host("b1", labels={"pool": "team-b"}),
        host("b2", labels={"pool": "team-b"}),
        host("a-reserved", labels={"pool": "team-a"}, reserved="team-c"),
        dataclasses.replace(host("a-down", labels={"pool": "team-a"}), ready=False),
    ]
    state = PlacementState.rebuild(hosts, [])
    refused = scheduler.place(state, request(pool_selector="pool=team-a"))
    assert isinstance(refused, NoFit)
    assert refused.message == (
        "0/4 hosts fit: 2 outside namespace team-a's host pool pool=team-a, "
        "1 not ready, 1 reserved for namespace team-c"
    )


def test_a_reserved_host_takes_only_its_namespaces() -> None:
    hosts = [host("open"), host("reserved", reserved="team-a")]
    state = PlacementState.rebuild(hosts, [])
    landed = []
    for i in range(3):
        placed = scheduler.place(state, request("team-b", name=f"vm-{i}"))
        assert isinstance(placed, Decision)
        landed.append(placed.host)
    assert landed == ["open"] * 3  # spreading would have put the second on the empty host
    mine = scheduler.place(state, request("team-a"))
    assert isinstance(mine, Decision) and mine.host == "reserved"
    crowded = PlacementState.rebuild([host("reserved", reserved="team-a")], [])
    refused = scheduler.place(crowded, request("team-b"))
    assert isinstance(refused, NoFit)
    assert refused.message == "0/1 host fit: 1 reserved for namespace team-a"


def test_the_pool_uses_the_label_index() -> None:
    hosts = [host(f"h{i}", labels={"pool": "team-a"} if i == 7 else {}) for i in range(40)]
    state = PlacementState.rebuild(hosts, [])
    placed = scheduler.select_host(state, request(pool_selector="pool=team-a"))
    assert isinstance(placed, Decision) and placed.host == "h7" and placed.considered == 1


def test_a_hypervisor_host_reserved_for_namespaces() -> None:
    obj = HypervisorHost.model_validate(
        {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "HypervisorHost",
            "metadata": {"name": "h1"},
            "spec": {"reservedFor": ["team-a", "team-b"]},
        }
    )
    assert inputs.host_snapshot(obj).reserved_for == {"team-a", "team-b"}
