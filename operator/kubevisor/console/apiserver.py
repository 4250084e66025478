"""The aggregated console API (`v1alpha1.subresources.kubevisor.io`), in the controller.

kube-apiserver authenticates the user and proxies
`/apis/subresources.kubevisor.io/v1alpha1/namespaces/NS/virtualmachines/VM/console`
(the serial console), `.../VM/console/log` (the serial log's tail), `.../VM/vnc` (the
VNC display: RFB in binary websocket messages, as websockify and noVNC speak it),
`.../VM/vnc/screenshot` (a PNG) and `.../VM/diagnose` (the host's part of `kubevisor
diagnose`, JSON) here with its front-proxy client certificate and the user in
X-Remote-User, X-Remote-Group and X-Remote-Extra-* headers. This server:

1. believes those headers only from a client certificate that chains to the
   requestheader CA and names one of `requestheader_allowed_names` (else 401),
2. asks a SubjectAccessReview whether that user may `get` `virtualmachines/console`
   (`virtualmachines/vnc` for the display and its screenshots, `virtualmachines/diagnose`
   for the diagnostics) in group subresources.kubevisor.io in the VM's namespace (else
   403),
3. reads the VM's status.host and that HypervisorHost's status.consoleEndpoint, dials the
   agent there with its own client certificate, and only once the agent accepted
   upgrades the user's connection, records an Event on the VM naming the user
   (ConsoleConnected, VNCConnected), and bridges the two websockets; a plain GET
   (screenshot, diagnose, console/log) is passed on and its answer returned.

Refusals are metav1.Status bodies, which the apiserver passes on to the user. Discovery
(the APIResourceList the aggregator reads) and health need no client certificate.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from kubevisor.console import bridge, protocol, tls
from kubevisor.kube.access import Attributes, User
from kubevisor.kube.client import Kube

log = logging.getLogger(__name__)

Object = dict[str, Any]


class Cluster(Protocol):
    """The reads and the review the console API needs (`kube.client.Kube`)."""

    def get_vm(self, namespace: str, name: str) -> Awaitable[Object | None]: ...

    def get_host(self, name: str) -> Awaitable[Object | None]: ...

    async def review(self, user: User, attributes: Attributes) -> tuple[bool, str]: ...

    def event(
        self, *, involved: Object, type_: str, reason: str, message: str, component: str
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class RequestHeader:
    """The front proxy's header names and the certificate names it may use."""

    allowed_names: frozenset[str] = frozenset({protocol.FRONT_PROXY_CLIENT})
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)


def requestheader_from(data: dict[str, str]) -> tuple[str, RequestHeader]:
    """The requestheader CA (PEM) and settings out of the data of kube-apiserver's
    extension-apiserver-authentication ConfigMap (values are JSON lists)."""
    ca = data.get("requestheader-client-ca-file", "")
    if not ca:
        raise ValueError(
            "kube-apiserver publishes no requestheader-client-ca-file: "
            "is it started with --requestheader-client-ca-file?"
        )

    def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = data.get(key)
        return tuple(str(v) for v in json.loads(raw)) if raw else default

    defaults = RequestHeader()
    return ca, RequestHeader(
        allowed_names=frozenset(names("requestheader-allowed-names", ())),
        username_headers=names("requestheader-username-headers", defaults.username_headers),
        group_headers=names("requestheader-group-headers", defaults.group_headers),
        extra_prefixes=names("requestheader-extra-headers-prefix", defaults.extra_prefixes),
    )


DialAgent = Callable[[str, str], Awaitable[aiohttp.ClientWebSocketResponse]]
"""`dial(url, force_query)`: a websocket to the agent, or aiohttp.WSServerHandshakeError."""
FetchAgent = Callable[[str], Awaitable[tuple[int, str, bytes]]]
"""`fetch(url)`: GET from the agent: (status, its refusal's message, body)."""


def authenticate(request: web.Request, settings: RequestHeader, peer: str | None) -> User | None:
    """The user the front proxy vouches for, or None if it is not the front proxy."""
    if not tls.allowed(peer, settings.allowed_names):
        return None
    name = next((request.headers[h] for h in settings.username_headers if h in request.headers), "")
    if not name:
        return None
    groups = tuple(g for h in settings.group_headers for g in request.headers.getall(h, []))
    extra: dict[str, list[str]] = {}
    for header, value in request.headers.items():
        for prefix in settings.extra_prefixes:
            if header.lower().startswith(prefix.lower()):
                key = urllib.parse.unquote(header[len(prefix) :]).lower()
                extra.setdefault(key, []).append(value)
    return User(name=name, groups=groups, extra=extra)


def discovery() -> Object:
    """The APIResourceList of our group version: the console, vnc and diagnose
    subresources."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{protocol.GROUP}/{protocol.VERSION}",
        "resources": [
            {
                "name": f"{protocol.RESOURCE}/{subresource}",
                "singularName": "",
                "namespaced": True,
                "kind": "VirtualMachine",
                "verbs": ["get"],
            }
            for subresource in (
                protocol.SUBRESOURCE,
                protocol.VNC_SUBRESOURCE,
                protocol.DIAGNOSE_SUBRESOURCE,
            )
        ],
    }


def attach(*, namespace: str, name: str, subresource: str = protocol.SUBRESOURCE) -> Attributes:
    """The request attaching to a VM's console is: get virtualmachines/console (its
    display, or a screenshot of it: get virtualmachines/vnc)."""
    return Attributes(
        verb="get",
        group=protocol.GROUP,
        resource=protocol.RESOURCE,
        subresource=subresource,
        namespace=namespace,
        name=name,
    )


@dataclass(frozen=True)
class Admitted:
    """A request the console API lets through: who, to which VM, at which agent."""

    user: User
    vm: Object
    host: str
    agent: str
    """The agent's console endpoint, as a websocket base URL (wss://...)."""


def application(
    *, cluster: Cluster, dial: DialAgent, fetch: FetchAgent, requestheader: RequestHeader
) -> web.Application:
    async def admit(request: web.Request, subresource: str) -> Admitted | web.Response:
        """Authenticate the front proxy's user, authorize `subresource` with a
        SubjectAccessReview, and find the agent of the VM's host; else the refusal."""
        transport = request.transport
        peer = tls.common_name(transport.get_extra_info("peercert") if transport else None)
        user = authenticate(request, requestheader, peer)
        if user is None:
            return protocol.refuse(
                401,
                "Unauthorized",
                "the console API accepts requests only through the Kubernetes API server",
            )
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        allowed, why = await cluster.review(
            user, attach(namespace=namespace, name=name, subresource=subresource)
        )
        if not allowed:
            log.info("%s: %s may not open %s/%s (%s)", subresource, user.name, namespace, name, why)
            return protocol.refuse(
                403,
                "Forbidden",
                f'{protocol.RESOURCE}.{protocol.GROUP} "{name}" is forbidden: User '
                f'"{user.name}" cannot get resource "{protocol.RESOURCE}/{subresource}"'
                f' in API group "{protocol.GROUP}" in the namespace "{namespace}"'
                + (f": {why}" if why else ""),
            )
        vm = await cluster.get_vm(namespace, name)
        if vm is None:
            return protocol.refuse(
                404, "NotFound", f'virtualmachines.kubevisor.io "{name}" not found'
            )
        host = (vm.get("status") or {}).get("host")
        if not host:
            return protocol.refuse(409, "Conflict", f"VM {namespace}/{name} is not bound to a host")
        host_obj = await cluster.get_host(str(host))
        endpoint = ((host_obj or {}).get("status") or {}).get("consoleEndpoint")
        if not endpoint:
            return protocol.refuse(
                503,
                "ServiceUnavailable",
                f"the agent of host {host} serves no console (no status.consoleEndpoint)",
            )
        agent = str(endpoint).rstrip("/").replace("https://", "wss://", 1)
        return Admitted(user=user, vm=vm, host=str(host), agent=agent)

    async def connected(admitted: Admitted, what: str) -> None:
        """An Event on the VM saying who attached: the audit trail of console sessions."""
        try:
            await cluster.event(
                involved=admitted.vm,
                type_="Normal",
                reason=f"{what}Connected",
                message=f"{admitted.user.name} connected to the {what.lower()} through the "
                "console API",
                component="kubevisor-api",
            )
        except Exception as error:  # the session goes on without its Event
            log.warning("cannot record the %s connection: %s", what, error)

    async def websocket(
        request: web.Request, subresource: str, agent_prefix: str, what: str
    ) -> web.StreamResponse:
        admitted = await admit(request, subresource)
        if isinstance(admitted, web.Response):
            return admitted
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return protocol.refuse(
                400, "BadRequest", f"the {what.lower()} is a websocket: upgrade the connection"
            )
        url = admitted.agent + protocol.agent_path(namespace, name, agent_prefix)
        force = "?force=true" if request.query.get("force") == "true" else ""
        try:
            upstream = await dial(url, force)
        except aiohttp.WSServerHandshakeError as error:
            headers: Any = error.headers or {}
            message = headers.get(protocol.ERROR_HEADER) or (
                f"the agent of host {admitted.host} refused the {what.lower()} ({error.status})"
            )
            return protocol.refuse(error.status, "Conflict" if error.status == 409 else "", message)
        except (aiohttp.ClientError, OSError) as error:
            return protocol.refuse(
                503,
                "ServiceUnavailable",
                f"cannot reach the agent of host {admitted.host}: {error}",
            )
        ws = web.WebSocketResponse(heartbeat=30, protocols=("binary",))
        try:
            await ws.prepare(request)
        except BaseException:
            await upstream.close()
            raise
        user, host = admitted.user.name, admitted.host
        log.info("%s: %s attached to %s/%s on %s", subresource, user, namespace, name, host)
        await connected(admitted, what)
        await bridge.bridge(bridge.WebSocketEnd(ws), bridge.WebSocketEnd(upstream))
        log.info("%s: %s detached from %s/%s", subresource, user, namespace, name)
        return ws

    async def console(request: web.Request) -> web.StreamResponse:
        return await websocket(request, protocol.SUBRESOURCE, protocol.AGENT_PREFIX, "Console")

    async def vnc(request: web.Request) -> web.StreamResponse:
        return await websocket(
            request, protocol.VNC_SUBRESOURCE, protocol.AGENT_DISPLAY_PREFIX, "VNC"
        )

    async def relay(
        request: web.Request, subresource: str, agent_prefix: str, content_type: str
    ) -> web.StreamResponse:
        """A plain GET passed on to the agent of the VM's host, with its query."""
        admitted = await admit(request, subresource)
        if isinstance(admitted, web.Response):
            return admitted
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        url = admitted.agent.replace("wss://", "https://", 1) + protocol.agent_path(
            namespace, name, agent_prefix
        )
        if request.query_string:
            url += "?" + request.query_string
        try:
            status, message, body = await fetch(url)
        except (aiohttp.ClientError, OSError) as error:
            return protocol.refuse(
                503,
                "ServiceUnavailable",
                f"cannot reach the agent of host {admitted.host}: {error}",
            )
        if status != 200:
            return protocol.refuse(status, "", message or f"the agent refused ({status})")
        return web.Response(body=body, content_type=content_type)

    async def screenshot(request: web.Request) -> web.StreamResponse:
        return await relay(
            request, protocol.VNC_SUBRESOURCE, protocol.AGENT_SCREENSHOT_PREFIX, "image/png"
        )

    async def diagnose(request: web.Request) -> web.StreamResponse:
        return await relay(
            request,
            protocol.DIAGNOSE_SUBRESOURCE,
            protocol.AGENT_DIAGNOSE_PREFIX,
            "application/json",
        )

    async def console_log(request: web.Request) -> web.StreamResponse:
        return await relay(
            request, protocol.SUBRESOURCE, protocol.AGENT_CONSOLE_LOG_PREFIX, "text/plain"
        )

    async def resources(_request: web.Request) -> web.Response:
        return web.json_response(discovery())

    async def group(_request: web.Request) -> web.Response:
        version = {"groupVersion": f"{protocol.GROUP}/{protocol.VERSION}", "version": "v1alpha1"}
        return web.json_response(
            {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": protocol.GROUP,
                "versions": [version],
                "preferredVersion": version,
            }
        )

    async def healthy(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    prefix = protocol.API_PREFIX
    vm_path = prefix + "/namespaces/{namespace}/" + protocol.RESOURCE + "/{name}/"
    app.router.add_get(vm_path + protocol.SUBRESOURCE, console)
    app.router.add_get(vm_path + protocol.VNC_SUBRESOURCE, vnc)
    app.router.add_get(vm_path + protocol.VNC_SUBRESOURCE + "/" + protocol.SCREENSHOT, screenshot)
    app.router.add_get(vm_path + protocol.DIAGNOSE_SUBRESOURCE, diagnose)
    app.router.add_get(vm_path + protocol.SUBRESOURCE + "/" + protocol.LOG, console_log)
    app.router.add_get(prefix, resources)
    app.router.add_get(f"/apis/{protocol.GROUP}", group)
    for path in ("/healthz", "/readyz", "/livez"):
        app.router.add_get(path, healthy)
    return app


class Server:
    """The running console API: its listener, its client session to the agents, its kube."""

    def __init__(
        self, runner: web.AppRunner, session: aiohttp.ClientSession, cluster: Kube
    ) -> None:
        self._runner = runner
        self._session = session
        self._cluster = cluster

    @classmethod
    async def start(
        cls,
        *,
        cluster: Kube,
        address: str,
        port: int,
        serving: ssl.SSLContext,
        to_agents: ssl.SSLContext,
        agent_server_name: str | None = None,
        requestheader: RequestHeader,
    ) -> Server:
        """Listen; dial agents with `to_agents`, checking their certificates for
        `agent_server_name` (one certificate for every agent) instead of their address."""
        session = aiohttp.ClientSession()

        async def dial(url: str, query: str) -> aiohttp.ClientWebSocketResponse:
            return await session.ws_connect(
                url + query, ssl=to_agents, server_hostname=agent_server_name, heartbeat=30
            )

        async def fetch(url: str) -> tuple[int, str, bytes]:
            async with session.get(url, ssl=to_agents, server_hostname=agent_server_name) as reply:
                body = await reply.read()
                return reply.status, reply.headers.get(protocol.ERROR_HEADER, ""), body

        app = application(cluster=cluster, dial=dial, fetch=fetch, requestheader=requestheader)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, address, port, ssl_context=serving).start()
        log.info("console API listening on %s:%d", address, port)
        return cls(runner, session, cluster)

    async def stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()
        await self._cluster.close()


def allowed_names(text: str) -> frozenset[str]:
    """`--requestheader-allowed-names`: comma-separated; empty means any name."""
    return frozenset(n.strip() for n in text.split(",") if n.strip())
