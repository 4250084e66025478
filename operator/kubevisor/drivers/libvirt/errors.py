"""libvirt's errors as the driver's: `RetryableError`, `PermanentError`, `DomainNotFound`.

Every libvirt call of the driver goes through `translate_error`, by the `ERROR_KINDS`
table; `CONNECTION_ERRORS` are the codes after which the connection may be dead (the
driver then asks it whether it still lives).
"""

from __future__ import annotations

import libvirt

from kubevisor.drivers import base

# libvirt error code name -> (kind, retry delay in seconds). Codes not listed are retryable
# after DEFAULT_RETRY_DELAY: most unlisted failures (QEMU failing to start, internal errors)
# are worth another try, and the error's message still reaches the VM's conditions.
ERROR_KINDS: dict[str, tuple[type[base.HypervisorError], float]] = {
    "VIR_ERR_NO_DOMAIN": (base.DomainNotFound, 0.0),
    # The connection or the daemon is gone or busy: reconnecting fixes it.
    "VIR_ERR_SYSTEM_ERROR": (base.RetryableError, 2.0),
    "VIR_ERR_RPC": (base.RetryableError, 2.0),
    "VIR_ERR_NO_CONNECT": (base.RetryableError, 2.0),
    "VIR_ERR_INVALID_CONN": (base.RetryableError, 2.0),
    "VIR_ERR_AUTH_UNAVAILABLE": (base.RetryableError, 5.0),
    "VIR_ERR_OPERATION_TIMEOUT": (base.RetryableError, 5.0),
    "VIR_ERR_AGENT_UNRESPONSIVE": (base.RetryableError, 5.0),
    "VIR_ERR_OPERATION_ABORTED": (base.RetryableError, 2.0),
    # The domain changed state under us (e.g. it stopped while we paused it): the
    # level-triggered caller re-reads the state and decides again.
    "VIR_ERR_OPERATION_INVALID": (base.RetryableError, 1.0),
    # The request itself is wrong for this host; only a new spec can fix it.
    "VIR_ERR_XML_ERROR": (base.PermanentError, 0.0),
    "VIR_ERR_XML_DETAIL": (base.PermanentError, 0.0),
    "VIR_ERR_XML_INVALID_SCHEMA": (base.PermanentError, 0.0),
    "VIR_ERR_CONFIG_UNSUPPORTED": (base.PermanentError, 0.0),
    "VIR_ERR_INVALID_ARG": (base.PermanentError, 0.0),
    "VIR_ERR_ARGUMENT_UNSUPPORTED": (base.PermanentError, 0.0),
    "VIR_ERR_NO_SUPPORT": (base.PermanentError, 0.0),
    "VIR_ERR_OPERATION_UNSUPPORTED": (base.PermanentError, 0.0),
    "VIR_ERR_OPERATION_DENIED": (base.PermanentError, 0.0),
    "VIR_ERR_AUTH_FAILED": (base.PermanentError, 0.0),
    "VIR_ERR_NO_OS": (base.PermanentError, 0.0),
    "VIR_ERR_NO_KERNEL": (base.PermanentError, 0.0),
    "VIR_ERR_CPU_INCOMPATIBLE": (base.PermanentError, 0.0),
    "VIR_ERR_MIGRATE_UNSAFE": (base.PermanentError, 0.0),
}
DEFAULT_RETRY_DELAY = 5.0
CONNECTION_ERRORS = frozenset(
    getattr(libvirt, name)
    for name in (
        "VIR_ERR_SYSTEM_ERROR",
        "VIR_ERR_RPC",
        "VIR_ERR_NO_CONNECT",
        "VIR_ERR_INVALID_CONN",
    )
)
_CODE_KINDS = {getattr(libvirt, n): kind for n, kind in ERROR_KINDS.items() if hasattr(libvirt, n)}


def translate_error(error: libvirt.libvirtError, *, doing: str) -> base.HypervisorError:
    """The driver error for a libvirt error raised while `doing` something."""
    code = error.get_error_code()
    kind, delay = _CODE_KINDS.get(code, (base.RetryableError, DEFAULT_RETRY_DELAY))
    message = f"{doing}: {error.get_error_message() or error}"
    if issubclass(kind, base.RetryableError):
        return kind(message, code=code, delay=delay)
    return kind(message, code=code)
