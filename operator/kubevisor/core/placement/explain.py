"""Explanations: why no host fits, in one line a human can act on.

`0/12 hosts fit: 7 insufficient memory (need 8Gi, best has 6Gi free), 4 already run 1 of
anti-affinity group "db" (maxPerHost 1), 1 unschedulable` -- each host counted once, under
the first filter that turned it down, largest groups first; each line with the figures
of the best host it counts, in the units the VM's spec is written in. Ready for a VM
condition message and an event.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kubevisor.core.placement import filters, units
from kubevisor.core.placement.model import Rejection, Request
from kubevisor.core.placement.state import PlacementState


@dataclass(frozen=True, slots=True)
class ReasonCount:
    """Hosts turned down for one reason, with the best free amount among them (`has` as
    `Rejection.has`: "free", "in all", "free on one cell")."""

    summary: str
    filter: str
    hosts: int
    need: int | None = None
    best_free: int | None = None
    unit: str = ""
    has: str = "free"

    def text(self) -> str:
        line = f"{self.hosts} {self.summary}"
        if self.need is not None and self.best_free is not None:
            need = units.amount(self.need, self.unit)
            free = units.amount(self.best_free, self.unit)
            line += f" (need {need}, best has {free} {self.has})"
        return line


@dataclass(frozen=True, slots=True)
class Explanation:
    total: int
    fit: int
    reasons: tuple[ReasonCount, ...]

    @property
    def message(self) -> str:
        noun = "host" if self.total == 1 else "hosts"
        head = f"{self.fit}/{self.total} {noun} fit"
        if not self.reasons:
            return head if self.total else "0/0 hosts fit: no hypervisor hosts"
        return f"{head}: " + ", ".join(r.text() for r in self.reasons)


def summarize(total: int, rejections: Iterable[Rejection]) -> Explanation:
    """Count first rejections per summary; `total` includes hosts that fit."""
    counts: dict[str, list[Rejection]] = {}
    for rejection in rejections:
        counts.setdefault(rejection.summary, []).append(rejection)
    reasons = []
    for summary, group in counts.items():
        frees = [r.free for r in group if r.free is not None]
        needs = [r.need for r in group if r.need is not None]
        reasons.append(
            ReasonCount(
                summary=summary,
                filter=group[0].filter,
                hosts=len(group),
                need=max(needs) if needs else None,
                best_free=max(frees) if frees else None,
                unit=group[0].unit,
                has=group[0].has,
            )
        )
    reasons.sort(key=lambda r: (-r.hosts, r.summary))
    fit = total - sum(r.hosts for r in reasons)
    return Explanation(total=total, fit=fit, reasons=tuple(reasons))


def explain(state: PlacementState, request: Request) -> Explanation:
    """Run every filter over every host (a full scan: only when nothing fits)."""
    rejections = []
    total = 0
    for host in state.hosts():
        total += 1
        rejection = filters.first_rejection(host, request, state)
        if rejection is not None:
            rejections.append(rejection)
    return summarize(total, rejections)
