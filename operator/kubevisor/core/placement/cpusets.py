"""An admin's CPU sets (HypervisorHost spec.cpuDedicatedSet / cpuSharedSet) checked
against the CPUs the host really has, as its agent reports them in its NUMA cells.

The schema checks each set's syntax; only here are they held against the host: a set
naming CPUs the host lacks (`cpuSharedSet: 0-63` on an 8-CPU host offered 64 shared CPUs
at the ratio), or a CPU in both sets, makes the host take no VM
(`placement.filters.cpu_sets`) and sets its Schedulable condition false with these
sentences (`core.hosts.controller_host_status`). Called by `placement.inputs`.
"""

from __future__ import annotations

from kubevisor.api import cpuset


def errors(
    *, dedicated: frozenset[int], shared: frozenset[int], present: frozenset[int]
) -> tuple[str, ...]:
    """What is wrong with the two sets on a host with CPUs `present`, one sentence each
    naming the bad CPUs; () when they are usable or the host reported no CPUs (nothing
    to hold them against)."""
    if not present:
        return ()
    found = []
    for field, cpus in (("cpuDedicatedSet", dedicated), ("cpuSharedSet", shared)):
        missing = cpus - present
        if missing:
            found.append(
                f"spec.{field} names CPUs {cpuset.render(missing)} the host does not have "
                f"(it has {cpuset.render(present)})"
            )
    both = dedicated & shared
    if both:
        found.append(
            f"CPUs {cpuset.render(both)} are in both spec.cpuDedicatedSet and spec.cpuSharedSet"
        )
    return tuple(found)
