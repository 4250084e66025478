"""The libvirt driver's migration arguments and job statistics, without a daemon.

The calls themselves run against two real hosts in test_migration_qemu.py; libvirt's
test:///default driver supports none of them ("p2p migration is not supported").
"""

from __future__ import annotations

from typing import Any

import libvirt
import pytest

from kubevisor.core.migration import JobStats
from kubevisor.drivers import base
from kubevisor.drivers.libvirt import migration as driver

TARGET = "qemu+tcp://127.0.0.1:16510/system"

ALWAYS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


@pytest.mark.parametrize(
    ("auto_converge", "post_copy", "flags"),
    [
        pytest.param(False, False, ALWAYS, id="plain-live-p2p-persistent-move"),
        pytest.param(True, False, ALWAYS | libvirt.VIR_MIGRATE_AUTO_CONVERGE, id="auto-converge"),
        pytest.param(False, True, ALWAYS | libvirt.VIR_MIGRATE_POSTCOPY, id="post-copy"),
        pytest.param(
            True,
            True,
            ALWAYS | libvirt.VIR_MIGRATE_AUTO_CONVERGE | libvirt.VIR_MIGRATE_POSTCOPY,
            id="both",
        ),
    ],
)
def test_migrate_flags(auto_converge: bool, post_copy: bool, flags: int) -> None:
    request = base.MigrationRequest(
        dest_uri=TARGET, auto_converge=auto_converge, post_copy=post_copy
    )
    assert driver.migrate_flags(request) == flags


def test_declared_shared_disks_skip_libvirts_shared_filesystem_check() -> None:
    request = base.MigrationRequest(dest_uri=TARGET, copy_disks=["vda"], shared_disks=True)
    flags = driver.migrate_flags(request)
    assert flags == ALWAYS | libvirt.VIR_MIGRATE_NON_SHARED_INC | libvirt.VIR_MIGRATE_UNSAFE


@pytest.mark.parametrize(
    ("xml", "bandwidth", "uri", "params"),
    [
        pytest.param(None, None, None, {}, id="nothing-asked"),
        pytest.param(
            "<domain/>",
            None,
            None,
            {
                libvirt.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>",
                libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: "<domain/>",
            },
            id="target-xml-is-live-and-persistent",
        ),
        pytest.param(None, 0, None, {}, id="zero-bandwidth-is-unlimited"),
        pytest.param(None, 64, None, {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 64}, id="bandwidth"),
        pytest.param(
            None,
            None,
            "tcp://127.0.0.1",
            {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"},
            id="migration-address",
        ),
    ],
)
def test_migrate_params(
    xml: str | None, bandwidth: int | None, uri: str | None, params: dict[str, Any]
) -> None:
    request = base.MigrationRequest(
        dest_uri=TARGET, xml=xml, bandwidth_mibps=bandwidth, migrate_uri=uri
    )
    assert driver.migrate_params(request) == params


# Shapes of virDomainGetJobStats answers seen on the local hosts (libvirt 9.0, QEMU 7.2).
RUNNING = {
    "type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
    "operation": libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT,
    "time_elapsed": 1005,
    "data_total": 101195776,
    "data_processed": 35550356,
    "data_remaining": 63172608,
    "memory_iteration": 1,
    "memory_bps": 1088110,
    "memory_dirty_rate": 12,
}


@pytest.mark.parametrize(
    ("stats", "post_copy", "expected"),
    [
        pytest.param({"type": libvirt.VIR_DOMAIN_JOB_NONE}, False, None, id="no-job"),
        pytest.param(
            RUNNING,
            False,
            JobStats(
                data_total=101195776,
                data_processed=35550356,
                data_remaining=63172608,
                memory_iteration=1,
                bandwidth_bps=1088110,
                time_elapsed_ms=1005,
                dirty_rate_pps=12,
            ),
            id="migration-running",
        ),
        pytest.param(
            {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "operation": 5, "time_elapsed": 51},
            True,
            JobStats(0, 0, 0, 0, 0, 51, 0, post_copy=True),
            id="just-started-without-figures",
        ),
        pytest.param(
            RUNNING | {"operation": libvirt.VIR_DOMAIN_JOB_OPERATION_DUMP},
            False,
            None,
            id="a-dump-is-not-a-migration",
        ),
    ],
)
def test_job_stats_from(stats: dict[str, Any], post_copy: bool, expected: JobStats | None) -> None:
    assert driver.job_stats_from(stats, post_copy=post_copy) == expected
