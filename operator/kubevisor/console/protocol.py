"""The names and paths both console servers and the CLI agree on."""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from kubevisor.api import wire

GROUP: Final = f"subresources.{wire.GROUP}"
VERSION: Final = wire.VERSION
RESOURCE: Final = wire.VIRTUAL_MACHINES.plural
SUBRESOURCE: Final = "console"
VNC_SUBRESOURCE: Final = "vnc"
SCREENSHOT: Final = "screenshot"
"""Under vnc: `.../virtualmachines/VM/vnc/screenshot`, which RBAC checks as
virtualmachines/vnc (kube-apiserver's subresource is the first segment after the name)."""
DIAGNOSE_SUBRESOURCE: Final = "diagnose"
"""`.../virtualmachines/VM/diagnose`: the host's part of `kubevisor diagnose` (JSON)."""
LOG: Final = "log"
"""Under console: `.../virtualmachines/VM/console/log`, the serial log's tail, which RBAC
checks as virtualmachines/console (what the console shows, kept)."""

API_PREFIX: Final = f"/apis/{GROUP}/{VERSION}"
AGENT_PREFIX: Final = "/console"
AGENT_DISPLAY_PREFIX: Final = "/display"
AGENT_SCREENSHOT_PREFIX: Final = "/screenshot"
AGENT_DIAGNOSE_PREFIX: Final = "/diagnose"
AGENT_CONSOLE_LOG_PREFIX: Final = "/consolelog"

# Client certificate names each server accepts by default.
FRONT_PROXY_CLIENT: Final = "front-proxy-client"
API_CLIENT: Final = "kubevisor-api"

# A console server repeats a refusal's message here (see refuse).
ERROR_HEADER: Final = "X-Kubevisor-Console-Error"

# Websocket close code and reason when the guest's console stream ends.
STREAM_ENDED: Final = 1000


def api_path(namespace: str, name: str, subresource: str = SUBRESOURCE) -> str:
    """The aggregated API path the CLI opens: like `kubectl exec`, a subresource
    (`SUBRESOURCE`, `VNC_SUBRESOURCE`, or `VNC_SUBRESOURCE/SCREENSHOT`)."""
    return f"{API_PREFIX}/namespaces/{namespace}/{RESOURCE}/{name}/{subresource}"


def agent_path(namespace: str, name: str, prefix: str = AGENT_PREFIX) -> str:
    """The agent's path for one VM's console (or, by `prefix`, display or screenshot)."""
    return f"{prefix}/{namespace}/{name}"


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status body: what kubectl and our CLI print for a failed request."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def refuse(code: int, reason: str, message: str) -> web.Response:
    """A console server's failed request (both servers'): a Status body, and the message
    in a header too, because a websocket client (the aggregated API's aiohttp, the CLI)
    sees a refused handshake's headers but not its body."""
    return web.json_response(
        status(code, reason, message),
        status=code,
        headers={ERROR_HEADER: message.encode("ascii", "replace").decode()},
    )


def status_message(body: bytes | str, fallback: str) -> str:
    """The message of a Status body, else `fallback`."""
    try:
        parsed = json.loads(body)
    except (TypeError, ValueError):
        return fallback
    if isinstance(parsed, dict) and parsed.get("message"):
        return str(parsed["message"])
    return fallback
