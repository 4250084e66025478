"""Live migration with libvirt: flags, typed parameters, job statistics, job control.

`LibvirtHypervisor.migrate` calls `migrate_on_own_connection` on one of its threads: the
transfer (virDomainMigrateToURI3) blocks until the guest runs on the destination, and it
runs on a connection of its own, because on the shared connection, which has the
lifecycle callback registered, every other call (job statistics, even a domain's state)
stalled behind the migration's reply until the transfer ended (libvirt 9.0; seen on the
local test hosts). Job statistics, abort, post-copy and tuning calls use the shared
connection meanwhile; libvirt allows them during the migration's async job.

With TLS (`VIR_MIGRATE_TLS`), both QEMUs speak TLS for the memory stream and the copied
disks' NBD stream, with the certificates in the directory qemu.conf names as
`migrate_tls_x509_cert_dir` (libvirt's default /etc/pki/qemu): `TLS_FILES`, the server
pair for incoming migrations and the client pair for outgoing ones, all signed by the CA
(the destination verifies the source's client certificate, and the source checks the
destination's server certificate against the migration address's host name). The driver
checks them (`tls_problem`) before each migration and refuses, saying what is wrong, rather
than let QEMU fail half-way.
"""

from __future__ import annotations

import contextlib
import datetime
from pathlib import Path
from typing import Any

import libvirt
from cryptography import x509

from kubevisor.core.migration import JobStats
from kubevisor.drivers import base

# Always: live, source libvirtd talks to the destination's (the agent holds no connection to
# the target), the destination keeps the domain defined and the source forgets it, so the
# domain exists persistently in exactly one place once the call returns.
MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)
# libvirt's own "unlimited" (QEMU_DOMAIN_MIG_BANDWIDTH_MAX, INT64_MAX bytes/s in MiB/s);
# 0 is not unlimited to QEMU.
UNLIMITED_MIBPS = (2**63 - 1) // (1024 * 1024)
DOWNTIME_POLL = 0.05  # s between checks for the migration job to exist (it takes ~50 ms)


# The files QEMU loads from migrate_tls_x509_cert_dir; every host both sends and receives.
TLS_FILES = (
    "ca-cert.pem",
    "server-cert.pem",
    "server-key.pem",
    "client-cert.pem",
    "client-key.pem",
)
_TLS_CERTIFICATES = ("ca-cert.pem", "server-cert.pem", "client-cert.pem")


def tls_problem(directory: Path, *, now: datetime.datetime | None = None) -> str | None:
    """What keeps `directory` from encrypting migrations: missing or unreadable files,
    certificates that do not parse or are not valid `now`; None when it has all it needs."""
    missing = [name for name in TLS_FILES if not (directory / name).is_file()]
    if missing:
        return f"{directory} lacks {', '.join(missing)} (needs {', '.join(TLS_FILES)})"
    moment = now or datetime.datetime.now(datetime.UTC)
    for name in _TLS_CERTIFICATES:
        path = directory / name
        try:
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as error:
            return f"{path} is not a readable PEM certificate ({error})"
        if moment > certificate.not_valid_after_utc:
            return f"{path} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        if moment < certificate.not_valid_before_utc:
            return (
                f"{path} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
            )
    for name in ("server-key.pem", "client-key.pem"):
        try:
            (directory / name).read_bytes()
        except OSError as error:
            return f"{directory / name} cannot be read ({error.strerror})"
    return None


def migrate_flags(request: base.MigrationRequest, *, tls: bool = False) -> int:
    """The virDomainMigrateToURI3 flags for a kubevisor live migration; `tls` encrypts its
    streams (memory and disks)."""
    flags: int = MIGRATE_FLAGS
    if tls:
        flags |= libvirt.VIR_MIGRATE_TLS
    if request.shared_disks:
        # libvirt calls a disk it does not copy safe only on a filesystem it knows to be
        # shared (NFS, CephFS, GFS2, ... by statfs); the admin's declaration is what counts.
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if request.copy_disks:
        # Only the overlay's own data: the destination has the same base images.
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    if request.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if request.post_copy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    return flags


def migrate_params(request: base.MigrationRequest) -> dict[str, Any]:
    """The virDomainMigrateToURI3 typed parameters; the XML is both the live and the
    persistent definition on the destination (it differs only in host-specific parts)."""
    params: dict[str, Any] = {}
    if request.xml is not None:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = request.xml
        params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = request.xml
    if request.bandwidth_mibps:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = request.bandwidth_mibps
    if request.migrate_uri is not None:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = request.migrate_uri
        # The disks' NBD stream goes to the same address as the memory stream.
        if request.copy_disks:
            host = request.migrate_uri.split("://", 1)[-1].split(":", 1)[0]
            params[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] = f"tcp://{host}"
    if request.copy_disks:
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(request.copy_disks)
    return params


def job_stats_from(stats: dict[str, Any], *, post_copy: bool) -> JobStats | None:
    """virDomainGetJobStats's dictionary as JobStats; None unless a migration job runs."""
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    operation = stats.get(libvirt.VIR_DOMAIN_JOB_OPERATION)
    if operation not in (
        None,
        libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT,
        libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN,
    ):
        return None  # a save, dump or snapshot: not ours to judge

    def field(name: str) -> int:
        return int(stats.get(name, 0))

    return JobStats(
        data_total=field(libvirt.VIR_DOMAIN_JOB_DATA_TOTAL),
        data_processed=field(libvirt.VIR_DOMAIN_JOB_DATA_PROCESSED),
        data_remaining=field(libvirt.VIR_DOMAIN_JOB_DATA_REMAINING),
        memory_iteration=field(libvirt.VIR_DOMAIN_JOB_MEMORY_ITERATION),
        bandwidth_bps=field(libvirt.VIR_DOMAIN_JOB_MEMORY_BPS),
        time_elapsed_ms=field(libvirt.VIR_DOMAIN_JOB_TIME_ELAPSED),
        dirty_rate_pps=field(libvirt.VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE),
        post_copy=post_copy,
    )


def job_stats(domain: libvirt.virDomain) -> JobStats | None:
    try:
        stats = domain.jobStats(0)
    except libvirt.libvirtError as error:
        # The source stops at the end of a migration, a moment before it is undefined: a
        # domain that does not run has no job.
        if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and not domain.isActive():
            return None
        raise
    state, reason = domain.state()
    # The source pauses in post-copy: the guest runs on the destination from then on.
    post_copy = state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_POSTCOPY
    return job_stats_from(stats, post_copy=post_copy)


def migrate_on_own_connection(
    uri: str,
    uuid: str,
    dest_uri: str,
    params: dict[str, Any],
    flags: int,
    *,
    keepalive: tuple[int, int],
) -> None:
    """Migrate on a connection of its own (see the module docstring for why)."""
    conn = libvirt.open(uri)
    try:
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(*keepalive)  # a dead source daemon fails the call, not hangs it
        conn.lookupByUUIDString(uuid).migrateToURI3(dest_uri, params, flags)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def has_job(domain: libvirt.virDomain) -> bool:
    return bool(domain.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE)


def abort_job(domain: libvirt.virDomain) -> None:
    try:
        domain.abortJob()
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise
        if not has_job(domain):
            return  # nothing runs (any more): what an abort wants
        # libvirt refuses to abort a migration in post-copy: the guest runs on the target.
        raise base.PermanentError(
            f"aborting the job of {domain.UUIDString()}: {error.get_error_message()}",
            code=error.get_error_code(),
        ) from error


def start_post_copy(domain: libvirt.virDomain) -> None:
    try:
        domain.migrateStartPostCopy(0)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise
        # No outgoing migration, or one started without VIR_MIGRATE_POSTCOPY: asking again
        # cannot help this job.
        raise base.PermanentError(
            f"switching {domain.UUIDString()} to post-copy: {error.get_error_message()}",
            code=error.get_error_code(),
        ) from error
