"""sd_notify(3) for an agent run as a systemd service (`Type=notify`, `WatchdogSec`): READY=1
once it serves, WATCHDOG=1 from its self-fence guard every second, so that systemd
restarts an agent that hangs (deploy/systemd/kubevisor-agent.service)."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("kubevisor.agent")


def notify(message: str) -> None:
    """sd_notify(3): tell the systemd unit this runs under (Type=notify, WatchdogSec), if
    any, `message` such as READY=1 or WATCHDOG=1."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError as error:
            log.warning("could not notify systemd at %s: %s", address, error)
