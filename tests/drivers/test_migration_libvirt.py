"""The libvirt driver's migration arguments and job statistics, without a daemon.

The calls themselves run against two real hosts in test_migration_qemu.py; libvirt's
test:///default driver supports none of them ("p2p migration is not supported").
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest

from drivers.migration_tls import write_tls_dir
from kubevisor.core.migration import JobStats
from kubevisor.drivers import base
from kubevisor.drivers.libvirt import LibvirtHypervisor
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


def test_tls_adds_libvirts_tls_flag() -> None:
    request = base.MigrationRequest(dest_uri=TARGET, post_copy=True)
    assert driver.migrate_flags(request, tls=True) == (
        ALWAYS | libvirt.VIR_MIGRATE_POSTCOPY | libvirt.VIR_MIGRATE_TLS
    )
    assert not driver.migrate_flags(request) & libvirt.VIR_MIGRATE_TLS, "off by default"


def test_a_complete_certificate_directory_has_no_problem(tmp_path: Path) -> None:
    assert driver.tls_problem(write_tls_dir(tmp_path)) is None


@pytest.mark.parametrize(
    ("spoil", "now", "problem"),
    [
        pytest.param(
            lambda d: (d / "client-key.pem").unlink(),
            None,
            "lacks client-key.pem (needs ca-cert.pem, server-cert.pem",
            id="missing-key",
        ),
        pytest.param(
            lambda d: [f.unlink() for f in d.iterdir()],
            None,
            "lacks ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, client-key.pem",
            id="empty-directory",
        ),
        pytest.param(
            lambda d: (d / "server-cert.pem").write_text("not a certificate"),
            None,
            "server-cert.pem is not a readable PEM certificate",
            id="garbage-certificate",
        ),
        pytest.param(
            lambda d: None,
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30),
            "ca-cert.pem expired on",
            id="expired",
        ),
        pytest.param(
            lambda d: None,
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1),
            "ca-cert.pem is not valid before",
            id="not-yet-valid",
        ),
    ],
)
def test_tls_problem_names_what_is_wrong(
    tmp_path: Path,
    spoil: Callable[[Path], object],
    now: datetime.datetime | None,
    problem: str,
) -> None:
    directory = write_tls_dir(tmp_path)
    spoil(directory)
    assert problem in (driver.tls_problem(directory, now=now) or "")


def test_a_migration_over_tls_without_certificates_is_refused_before_libvirt_is_asked(
    tmp_path: Path,
) -> None:
    """test:///default would refuse the migration itself ("p2p migration is not
    supported"): the driver's own refusal comes first, with what is missing."""

    async def main() -> None:
        tls = tmp_path / "pki-qemu"
        tls.mkdir()
        async with LibvirtHypervisor("test:///default", migration_tls=tls) as hypervisor:
            uuid = (await hypervisor.list_domains())[0].uuid
            with pytest.raises(base.PermanentError) as refused:
                await hypervisor.migrate(uuid, base.MigrationRequest(dest_uri=TARGET))
            assert "over TLS" in str(refused.value)
            assert f"{tls} lacks ca-cert.pem" in str(refused.value)
            assert "not started" in str(refused.value)
            assert (await hypervisor.state(uuid)).state is base.DomainState.RUNNING

    asyncio.run(main())


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
