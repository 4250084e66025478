"""The agent's console endpoint: `wss://AGENT/console/NAMESPACE/NAME` (the serial
console), `wss://AGENT/display/NAMESPACE/NAME` (the VNC display: RFB in binary messages),
`https://AGENT/screenshot/NAMESPACE/NAME` (a PNG), `https://AGENT/diagnose/NAMESPACE/NAME`
(the host's part of `kubevisor diagnose`, JSON; `agent.diagnostics`) and
`https://AGENT/consolelog/NAMESPACE/NAME` (the tail of the serial log, text), mTLS only.

Started by `kubevisor-agent` (agent/main.py) when it has a certificate to serve with.
The TLS handshake already demands a client certificate from `--console-client-ca`; the
handler then admits only the names in `allowed_clients` (kubevisor-api's certificate),
reads the VM and serves it only if its status.host is this agent's host, then opens the
domain's serial console or display through the agent's hypervisor driver
(`Hypervisor.open_console`, `open_display`, `screenshot`; the domain's UUID is the VM's
uid) and bridges it to the websocket. Users never reach
this port: authorization happened in the aggregated API.

Failures before the upgrade are HTTP statuses with a metav1.Status body, which the
aggregated API passes on to the user unchanged.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from aiohttp import web

from kubevisor.console import bridge, protocol, tls
from kubevisor.drivers import base

log = logging.getLogger(__name__)

Object = dict[str, Any]
T = TypeVar("T")
GetVm = Callable[[str, str], Awaitable[Object | None]]
OpenConsole = Callable[..., Awaitable[bridge.End]]
"""`open_console(uuid, force=bool)`: the domain's console (`Hypervisor.open_console`)."""
OpenDisplay = Callable[[str], Awaitable[bridge.End]]
"""`open_display(uuid)`: a connection to the domain's VNC server (`Hypervisor.open_display`)."""
Screenshot = Callable[[str], Awaitable[bytes]]
"""`screenshot(uuid)`: the domain's screen as PNG (`Hypervisor.screenshot`)."""
Diagnose = Callable[[Object, str | None], Awaitable[Object]]
"""`diagnose(vm, lines)`: the host's part of the VM's bundle (`agent.diagnostics.bundle`;
`lines` is the request's query parameter as given)."""
ConsoleLog = Callable[[Object, str | None], Awaitable[str]]
"""`console_log(vm, lines)`: the tail of the VM's serial log, redacted; FileNotFoundError
when there is none."""

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
    open_display: OpenDisplay,
    screenshot: Screenshot,
    allowed_clients: Collection[str],
    diagnose: Diagnose | None = None,
    console_log: ConsoleLog | None = None,
) -> web.Application:
    """The aiohttp application of one agent (host `host`)."""
    allowed = frozenset(allowed_clients)

    async def bound_vm(request: web.Request) -> tuple[str, str, Object] | web.Response:
        """(peer, "namespace/name", VM) of a request from an allowed client for a VM
        bound to this host, else the refusal to send."""
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
        return str(peer), f"{namespace}/{name}", vm

    async def driver(what: str, vm_name: str, call: Awaitable[T]) -> T | web.Response:
        """What the driver's `call` returns, or its refusal as the response to send."""
        try:
            return await call
        except base.HypervisorError as error:
            return protocol.refuse(*refusal(error), str(error))
        except Exception as error:
            log.exception("%s: cannot open %s", what, vm_name)
            return protocol.refuse(502, "BadGateway", f"cannot open the {what}: {error}")

    async def stream(
        request: web.Request, what: str, opener: Callable[[str], Awaitable[bridge.End]]
    ) -> web.StreamResponse:
        found = await bound_vm(request)
        if isinstance(found, web.Response):
            return found
        peer, vm_name, vm = found
        end = await driver(what, vm_name, opener(str(vm["metadata"]["uid"])))
        if isinstance(end, web.Response):
            return end
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        log.info("%s: %s attached to %s", what, peer, vm_name)
        await bridge.bridge(bridge.WebSocketEnd(ws), end)
        log.info("%s: %s detached from %s", what, peer, vm_name)
        return ws

    async def console(request: web.Request) -> web.StreamResponse:
        force = request.query.get("force") == "true"
        return await stream(request, "console", lambda uid: open_console(uid, force=force))

    async def display(request: web.Request) -> web.StreamResponse:
        return await stream(request, "display", open_display)

    async def screen(request: web.Request) -> web.StreamResponse:
        found = await bound_vm(request)
        if isinstance(found, web.Response):
            return found
        _, vm_name, vm = found
        image = await driver("screenshot", vm_name, screenshot(str(vm["metadata"]["uid"])))
        if isinstance(image, web.Response):
            return image
        return web.Response(body=image, content_type="image/png")

    async def answer(
        request: web.Request, what: str, reply: Callable[[Object, str | None], Awaitable[T]] | None
    ) -> T | web.Response:
        """`reply(vm, lines)` for a plain GET about a bound VM, or the refusal to send."""
        found = await bound_vm(request)
        if isinstance(found, web.Response):
            return found
        if reply is None:
            return protocol.refuse(501, "NotImplemented", f"this agent serves no {what}")
        _, vm_name, vm = found
        try:
            return await reply(vm, request.query.get("lines"))
        except FileNotFoundError:
            return protocol.refuse(404, "NotFound", f"no {what} of {vm_name} on this host")
        except Exception as error:
            log.exception("%s: cannot read it for %s", what, vm_name)
            return protocol.refuse(500, "InternalError", f"cannot read the {what}: {error}")

    async def diagnose_vm(request: web.Request) -> web.StreamResponse:
        body = await answer(request, "diagnostics", diagnose)
        return body if isinstance(body, web.Response) else web.json_response(body)

    async def serial_log(request: web.Request) -> web.StreamResponse:
        text = await answer(request, "serial log", console_log)
        return text if isinstance(text, web.Response) else web.Response(text=text)

    path = "/{namespace}/{name}"
    app = web.Application()
    app.router.add_get(protocol.AGENT_PREFIX + path, console)
    app.router.add_get(protocol.AGENT_DISPLAY_PREFIX + path, display)
    app.router.add_get(protocol.AGENT_SCREENSHOT_PREFIX + path, screen)
    app.router.add_get(protocol.AGENT_DIAGNOSE_PREFIX + path, diagnose_vm)
    app.router.add_get(protocol.AGENT_CONSOLE_LOG_PREFIX + path, serial_log)
    return app


async def serve(
    app: web.Application, *, address: str, port: int, context: ssl.SSLContext
) -> web.AppRunner:
    """Listen on `address:port` with TLS; the caller cleans up the runner on exit."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port, ssl_context=context).start()
    return runner
