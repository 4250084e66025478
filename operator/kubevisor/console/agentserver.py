"""The agent's console endpoint: `wss://AGENT/console/NAMESPACE/NAME`, mTLS only.

Started by `kubevisor-agent` (agent/main.py) when it has a certificate to serve with.
The TLS handshake already demands a client certificate from `--console-client-ca`; the
handler then admits only the names in `allowed_clients` (kubevisor-api's certificate),
reads the VM and serves it only if its status.host is this agent's host, then opens the
domain's serial console through the agent's hypervisor driver (`Hypervisor.open_console`;
the domain's UUID is the VM's uid) and bridges it to the websocket. Users never reach
this port: authorization happened in the aggregated API.

Failures before the upgrade are HTTP statuses with a metav1.Status body, which the
aggregated API passes on to the user unchanged.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

from kubevisor.console import bridge, protocol, tls
from kubevisor.drivers import base

log = logging.getLogger(__name__)

Object = dict[str, Any]
GetVm = Callable[[str, str], Awaitable[Object | None]]
OpenConsole = Callable[..., Awaitable[bridge.End]]
"""`open_console(uuid, force=bool)`: the domain's console (`Hypervisor.open_console`)."""

# The driver's refusals as HTTP statuses, first match (DomainNotFound is a PermanentError
# and ConsoleUnsupported one too): what the user's `kubevisor console` prints.
REFUSALS: tuple[tuple[type[base.HypervisorError], int, str], ...] = (
    (base.DomainNotFound, 404, "NotFound"),
    (base.ConsoleBusy, 409, "Conflict"),
    (base.ConsoleUnsupported, 501, "NotImplemented"),
    (base.HypervisorError, 502, "BadGateway"),
)


def refusal(error: base.HypervisorError) -> tuple[int, str]:
    """The HTTP status and Status reason for a driver's refusal to open a console."""
    return next((code, reason) for kind, code, reason in REFUSALS if isinstance(error, kind))


def application(
    *,
    host: str,
    get_vm: GetVm,
    open_console: OpenConsole,
    allowed_clients: Collection[str],
) -> web.Application:
    """The aiohttp application of one agent (host `host`)."""
    allowed = frozenset(allowed_clients)

    async def console(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = tls.common_name(transport.get_extra_info("peercert") if transport else None)
        if not tls.allowed(peer, allowed):
            log.warning("console: refused client certificate %r", peer)
            return protocol.refuse(
                403, "Forbidden", f"client certificate {peer!r} may not open consoles"
            )
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        vm = await get_vm(namespace, name)
        if vm is None:
            return protocol.refuse(404, "NotFound", f'virtualmachines "{name}" not found')
        bound = (vm.get("status") or {}).get("host")
        if bound != host:
            return protocol.refuse(
                409,
                "Conflict",
                f"VM {namespace}/{name} is bound to {bound or 'no host'}, not to {host}",
            )
        try:
            serial = await open_console(
                str(vm["metadata"]["uid"]), force=request.query.get("force") == "true"
            )
        except base.HypervisorError as error:
            return protocol.refuse(*refusal(error), str(error))
        except Exception as error:
            log.exception("console: cannot open %s/%s", namespace, name)
            return protocol.refuse(502, "BadGateway", f"cannot open the console: {error}")
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        log.info("console: %s attached to %s/%s", peer, namespace, name)
        await bridge.bridge(bridge.WebSocketEnd(ws), serial)
        log.info("console: %s detached from %s/%s", peer, namespace, name)
        return ws

    app = web.Application()
    app.router.add_get(protocol.AGENT_PREFIX + "/{namespace}/{name}", console)
    return app


async def serve(
    app: web.Application, *, address: str, port: int, context: ssl.SSLContext
) -> web.AppRunner:
    """Listen on `address:port` with TLS; the caller cleans up the runner on exit."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port, ssl_context=context).start()
    return runner
