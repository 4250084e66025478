"""`kubevisor console VM --web`: the VM's screen in a browser, with noVNC.

The CLI serves, on 127.0.0.1 only (a free port unless --port), under a path holding a
random token it prints:

  /TOKEN/             the page (cli/web/console.html and console.js, this package's)
  /TOKEN/novnc/...    noVNC's RFB client: the npm package @novnc/novnc (NOVNC_VERSION),
                      read from the directory `--novnc` names (by default the cache
                      hack/novnc/build.sh fills); never bundled with kubevisor
  /TOKEN/websockify   the websocket the page opens; the CLI opens its own to the VM's
                      display through the API server with the kubeconfig's credentials
                      (as `kubevisor vnc` does, cli/vnc.py) and copies RFB both ways

so the browser never holds the user's credentials, and the permission is `kubevisor vnc`'s:
get on virtualmachines/vnc in subresources.kubevisor.io. The token keeps other local users
and other sites' pages in the same browser out (a page elsewhere can open a websocket to
127.0.0.1, but cannot read the token); the websocket also refuses an Origin other than the
page's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp import web

from kubevisor.cli import kubeapi, vnc
from kubevisor.cli.subresources import Api
from kubevisor.console import bridge
from kubevisor.kube.cluster import Cluster

NOVNC_VERSION: Final = "1.7.0"
"""The @novnc/novnc release the page is written for; hack/novnc/package.json pins the same."""

NOVNC_ENTRY: Final = Path("core") / "rfb.js"
PAGE: Final = Path(__file__).parent / "web"
WEBSOCKET: Final = "websockify"
CANNOT_CONNECT: Final = 1011  # websocket close code: the display could not be opened


def default_novnc() -> Path:
    """Where hack/novnc/build.sh installs NOVNC_VERSION (the same cache rule as the
    other builds: $KUBEVISOR_CACHE, else $XDG_CACHE_HOME/kubevisor, else ~/.cache/kubevisor)."""
    cache = os.environ.get("KUBEVISOR_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubevisor"
    )
    return Path(cache) / "novnc" / f"novnc-{NOVNC_VERSION}" / "node_modules" / "@novnc" / "novnc"


def missing_novnc(directory: Path) -> str | None:
    """Why `directory` cannot serve noVNC, with how to install it; None when it can."""
    if (directory / NOVNC_ENTRY).is_file():
        return None
    prefix = default_novnc().parents[2]  # npm puts the package in PREFIX/node_modules/...
    return (
        f"noVNC is not installed: no {NOVNC_ENTRY} in {directory}; install it with "
        f"`npm install --prefix {prefix} @novnc/novnc@{NOVNC_VERSION}` (in a kubevisor "
        "checkout: hack/novnc/build.sh), or pass --novnc with the directory of an "
        "installed @novnc/novnc package"
    )


def origins(port: int) -> frozenset[str]:
    """The origins of the page itself, the only ones that may open its websocket."""
    return frozenset(f"http://{host}:{port}" for host in (vnc.LOOPBACK, "localhost"))


def app(
    api: Api, http: aiohttp.ClientSession, *, token: str, port: int, novnc: Path
) -> web.Application:
    """The local web server's routes, all under /TOKEN/."""
    base = f"/{token}"
    allowed = origins(port)

    async def page(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE / "console.html")

    async def script(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE / "console.js", headers={"Content-Type": "text/javascript"})

    async def slash(_request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{base}/")

    async def websocket(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin not in allowed:
            return web.Response(status=403, text=f"origin {origin} may not open this display\n")
        browser = web.WebSocketResponse(protocols=("binary",))
        await browser.prepare(request)
        upstream = await vnc.display(http, api)
        if isinstance(upstream, str):
            print(f"error: {upstream}", file=sys.stderr, flush=True)
            await browser.close(code=CANNOT_CONNECT, message=upstream.encode()[:120])
            return browser
        print("page connected", file=sys.stderr, flush=True)
        await bridge.bridge(upstream, bridge.WebSocketEnd(browser))
        print("page disconnected", file=sys.stderr, flush=True)
        return browser

    routes = web.Application()
    routes.add_routes(
        [
            web.get(base, slash),
            web.get(f"{base}/", page),
            web.get(f"{base}/console.js", script),
            web.get(f"{base}/{WEBSOCKET}", websocket),
            web.static(f"{base}/novnc", novnc, follow_symlinks=False),
        ]
    )
    return routes


def run(args: argparse.Namespace) -> int:
    """`console VM --web`: noVNC first (no cluster needed to say it is missing)."""
    novnc = Path(args.novnc) if args.novnc else default_novnc()
    if why := missing_novnc(novnc):
        print(f"error: {why}", file=sys.stderr)
        return kubeapi.FAILED
    return kubeapi.with_cluster(args, lambda cluster: serve(cluster, args, novnc))


def serve(cluster: Cluster, args: argparse.Namespace, novnc: Path) -> int:
    api = Api(cluster, args.vm)
    try:
        return asyncio.run(listen(api, port=args.port, novnc=novnc))
    except KeyboardInterrupt:
        return kubeapi.OK


async def listen(api: Api, *, port: int, novnc: Path) -> int:
    """Check access once, then serve the page until interrupted."""
    async with aiohttp.ClientSession() as http:
        if not await vnc.allowed(http, api):
            return kubeapi.FAILED
        try:
            listener = socket.create_server((vnc.LOOPBACK, port))
        except OSError as error:
            print(f"error: cannot listen on {vnc.LOOPBACK}:{port}: {error}", file=sys.stderr)
            return kubeapi.FAILED
        bound = int(listener.getsockname()[1])
        token = secrets.token_urlsafe(18)
        runner = web.AppRunner(
            app(api, http, token=token, port=bound, novnc=novnc), access_log=None
        )
        await runner.setup()
        try:
            await web.SockSite(runner, listener).start()
            print(
                f"Web console of {api.namespace}/{api.vm} on "
                f"http://{vnc.LOOPBACK}:{bound}/{token}/ (open it in a browser; Ctrl-C stops)",
                flush=True,
            )
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        finally:
            await runner.cleanup()
    return kubeapi.OK
