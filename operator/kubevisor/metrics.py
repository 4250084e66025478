"""Every Prometheus metric kubevisor exports, defined in one place.

Names follow Prometheus conventions: a `kubevisor_` prefix, base units (seconds, bytes),
`_total` on counters only; labels are bounded (phases, hosts, resources, operations,
handlers), never VM names. The controller serves them on --metrics-port (9090), the agent
on its own (9091); deploy/grafana/ has a dashboard for them. The agent also serves each
of its VMs' usage (`kubevisor_vm_*`, labelled by VM: bounded by the VMs a host runs),
computed at scrape time by its collector in `agent.vmmetrics`.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

import kubevisor

BUILD_INFO = Info("kubevisor_build", "Version of kubevisor and of the Python that runs it.")
BUILD_INFO.info({"version": kubevisor.__version__, "python_version": platform.python_version()})

# -- controller -------------------------------------------------------------------------

VMS = Gauge(
    "kubevisor_vms", "VirtualMachines by status phase, as the controller sees them.", ["phase"]
)
PLACEMENT_DECISIONS = Counter(
    "kubevisor_placement_decisions_total",
    "Placement decisions: result placed or unschedulable; reason is the filter that turned "
    "down most hosts (none when placed).",
    ["result", "reason"],
)
PLACEMENT_DURATION = Histogram(
    "kubevisor_placement_duration_seconds",
    "Time to choose a host for one VM (filters, NUMA fit, weighers, claim).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
HOST_CAPACITY = Gauge(
    "kubevisor_host_capacity",
    "Host capacity before reservation and ratios (cpu in CPUs, memory and disk in bytes).",
    ["host", "resource"],
)
HOST_ALLOCATABLE = Gauge(
    "kubevisor_host_allocatable", "(capacity - reserved) x allocation ratio.", ["host", "resource"]
)
HOST_ALLOCATED = Gauge(
    "kubevisor_host_allocated", "What placement claims hold on the host.", ["host", "resource"]
)
HOSTS_READY = Gauge("kubevisor_hosts", "HypervisorHosts by readiness.", ["ready"])
HOST_CONDITION = Gauge(
    "kubevisor_host_condition",
    "HypervisorHost conditions as the controller last read them, whoever wrote them: 1 for "
    "the status the condition has, 0 for the other two (kube-state-metrics' shape).",
    ["host", "condition", "status"],
)
MIGRATIONS = Counter("kubevisor_migrations_total", "Finished MigrationJobs by result.", ["result"])
MIGRATION_DURATION = Histogram(
    "kubevisor_migration_duration_seconds",
    "Wall time of finished live migrations.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
MIGRATION_BYTES = Counter(
    "kubevisor_migration_bytes_total", "Memory bytes transferred by live migrations."
)

# -- both processes -----------------------------------------------------------------------

RECONCILE_DURATION = Histogram(
    "kubevisor_reconcile_duration_seconds",
    "Time spent in one reconcile, by handler.",
    ["handler"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECONCILE_ERRORS = Counter(
    "kubevisor_reconcile_errors_total", "Reconciles that raised, by handler.", ["handler"]
)
API_REQUESTS = Counter(
    "kubevisor_api_requests_total",
    "Kubernetes API requests made by kubevisor's own client, by verb and HTTP code.",
    ["verb", "code"],
)

# -- agent ---------------------------------------------------------------------------------

LIBVIRT_CALL_DURATION = Histogram(
    "kubevisor_libvirt_call_duration_seconds",
    "Latency of the agent's hypervisor calls.",
    ["operation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
KSM_RUNNING = Gauge("kubevisor_ksm_running", "1 when Kernel Samepage Merging runs on the host.")
KSM_PAGES_SHARED = Gauge("kubevisor_ksm_pages_shared", "KSM shared pages in use.")
KSM_PAGES_SHARING = Gauge(
    "kubevisor_ksm_pages_sharing", "Guest pages deduplicated into KSM's shared pages."
)
DOMAINS = Gauge("kubevisor_domains", "Domains on this agent's host by libvirt state.", ["state"])


@contextmanager
def timed(histogram: Histogram, *labels: str) -> Iterator[None]:
    """Observe the duration of the `with` body in `histogram` (with `labels`)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        metric = histogram.labels(*labels) if labels else histogram
        metric.observe(time.perf_counter() - start)


def serve(port: int) -> None:
    """Serve /metrics on `port` (0: do not serve)."""
    if port:
        start_http_server(port)
