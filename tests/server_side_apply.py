"""Server-side apply of a status, as the in-memory API servers of the unit tests model it
(`handlers/fake_cluster.FakeKube` for the controller, `agent/fakeapi.FakeApiServer` for
the agent), so both fakes hand off status fields between writers the way kube-apiserver
does.

Each field manager owns the top-level status fields (and conditions, by type, the list map
key) it last applied; a field its owner stops applying disappears unless another manager
also holds it; a forced apply of a different value takes the field over. Fields nobody owns
(set directly by a test) stay until someone applies them.
"""

from __future__ import annotations

import copy
from typing import Any

Object = dict[str, Any]
Owners = dict[str, set[str]]
"""Status field ("phase", "conditions/Ready", ...) -> the field managers holding it."""


def fields(status: Object) -> dict[str, Any]:
    """A status as SSA sees it: top-level fields, and one entry per condition type."""
    out = {name: value for name, value in status.items() if name != "conditions"}
    for condition in status.get("conditions") or []:
        out[f"conditions/{condition['type']}"] = condition
    return out


def status_of(flat: dict[str, Any]) -> Object:
    """The inverse of `fields`."""
    out = {name: value for name, value in flat.items() if not name.startswith("conditions/")}
    conditions = [value for name, value in flat.items() if name.startswith("conditions/")]
    if conditions:
        out["conditions"] = conditions
    return out


def apply_status(obj: Object, owners: Owners, manager: str, status: Object) -> None:
    """Apply `status` to `obj` as `manager` (forced), updating `owners` in place."""
    have = fields(obj.get("status") or {})
    wanted = fields(copy.deepcopy(status))
    for name, holders in list(owners.items()):
        if manager in holders and name not in wanted:
            holders.discard(manager)
            if not holders:
                del owners[name]
                have.pop(name, None)
    for name, value in wanted.items():
        holders = owners.setdefault(name, set())
        if have.get(name) != value:
            holders.clear()  # a forced apply of a new value takes the field over
        holders.add(manager)
        have[name] = value
    obj["status"] = status_of(have)


def held_by(obj: Object, owners: Owners, manager: str) -> Object:
    """The status fields `manager` holds now, so a partial write can keep the rest."""
    have = fields(obj.get("status") or {})
    return status_of({n: have[n] for n, who in owners.items() if manager in who})


def merge(target: Object, patch: Object) -> None:
    """RFC 7386 JSON merge patch: None deletes, dicts merge, everything else replaces."""
    for name, value in patch.items():
        if value is None:
            target.pop(name, None)
        elif isinstance(value, dict) and isinstance(target.get(name), dict):
            merge(target[name], value)
        else:
            target[name] = copy.deepcopy(value)
