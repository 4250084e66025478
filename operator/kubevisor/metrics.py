"""Every Prometheus metric kubevisor exports, defined in one place.

Names follow Prometheus conventions: a `kubevisor_` prefix, base units, `_total` on
counters only. Processes expose them with `prometheus_client.start_http_server`.
"""

from __future__ import annotations

import platform

from prometheus_client import Info

import kubevisor

BUILD_INFO = Info("kubevisor_build", "Version of kubevisor and of the Python that runs it.")
BUILD_INFO.info({"version": kubevisor.__version__, "python_version": platform.python_version()})
