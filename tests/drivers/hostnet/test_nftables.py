"""The kubevisor nftables table, written and read back (drivers/hostnet/nftables.py)."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from kubevisor.core.network.hostplan import PortSecurity
from kubevisor.drivers.hostnet import nftables

A_PORT = PortSecurity("kvt-a", "02:00:00:00:00:05", IPv4Address("10.20.0.5"))
B_PORT = PortSecurity("kvt-b", "02:00:00:00:00:06", IPv4Address("10.20.0.6"))


def listing(*sets: tuple[str, list[Any]], comment: str | None = nftables.COMMENT) -> dict[str, Any]:
    table: dict[str, Any] = {"family": "bridge", "name": "kubevisor"}
    if comment is not None:
        table["comment"] = comment
    items: list[dict[str, Any]] = [{"metainfo": {}}, {"table": table}]
    items += [{"set": {"name": name, "elem": elem}} for name, elem in sets]
    return {"nftables": items}


def members(*ports: PortSecurity) -> tuple[tuple[str, list[Any]], ...]:
    return (
        ("ports", [p.tap for p in ports]),
        ("port_mac", [{"concat": [p.tap, p.mac]} for p in ports]),
        ("port_ip", [{"concat": [p.tap, str(p.ip)]} for p in ports]),
    )


@pytest.mark.parametrize(
    ("found", "comment", "ports"),
    [
        pytest.param(
            listing(*members(A_PORT, B_PORT)), nftables.COMMENT, {A_PORT, B_PORT}, id="ours"
        ),
        pytest.param(listing(*members()), nftables.COMMENT, set(), id="empty"),
        pytest.param(listing(*members(A_PORT), comment=None), "", {A_PORT}, id="no-comment"),
        pytest.param(
            listing(("ports", ["kvt-a", "kvt-b"]), *members(A_PORT)[1:]),
            nftables.INCONSISTENT,
            {A_PORT},
            id="a-tap-guarded-without-mac-or-ip",
        ),
    ],
)
def test_parse(found: dict[str, Any], comment: str, ports: set[PortSecurity]) -> None:
    assert nftables.parse(found) == (comment, ports)


def test_table_replaces_atomically_and_carries_its_digest() -> None:
    text = nftables.table([B_PORT, A_PORT])
    assert text.startswith("table bridge kubevisor\ndelete table bridge kubevisor\n")
    assert f'comment "{nftables.COMMENT}"' in text
    assert 'add element bridge kubevisor port_mac { "kvt-a" . 02:00:00:00:00:05 }' in text
    assert 'add element bridge kubevisor port_ip { "kvt-b" . 10.20.0.6 }' in text
    assert text.index('"kvt-a"') < text.index('"kvt-b"')


def test_delta_deletes_then_adds() -> None:
    text = nftables.delta([A_PORT], [B_PORT])
    lines = text.splitlines()
    assert lines[0] == 'delete element bridge kubevisor ports { "kvt-a" }'
    assert lines[-1] == 'add element bridge kubevisor port_ip { "kvt-b" . 10.20.0.6 }'
    assert len(lines) == 6
