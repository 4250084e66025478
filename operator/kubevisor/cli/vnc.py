"""`kubevisor vnc VM` and `kubevisor screenshot VM -o FILE`: the VM's screen, through the
console API (docs/cli.md, "vnc").

`vnc` listens on 127.0.0.1 (a port of its own, or --port) and, for every VNC viewer that
connects there, opens a websocket to
/apis/subresources.kubevisor.io/v1alpha1/namespaces/NS/virtualmachines/VM/vnc with the
kubeconfig's credentials and copies RFB both ways. The path beyond kube-apiserver is the
serial console's (cli/console.py): the aggregated API authorizes `get` on
virtualmachines/vnc in group subresources.kubevisor.io with a SubjectAccessReview and
records a VNCConnected Event on the VM; the agent of the VM's host connects to the
domain's VNC server, which listens on a UNIX socket on the host and nowhere else.

`screenshot` GETs .../virtualmachines/VM/vnc/screenshot (the same permission) and writes
the PNG.

Exit codes: 0 the PNG was written / `vnc` was interrupted (Ctrl-C); 1 refused or failed
(forbidden, not found, not running, no display, agent unreachable: one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import aiohttp

from kubevisor.cli import console, kubeapi
from kubevisor.cli.subresources import Api
from kubevisor.console import bridge, protocol
from kubevisor.drivers.base import StreamConsole
from kubevisor.kube.cluster import Cluster

LOOPBACK = "127.0.0.1"


def register(subparsers: Any) -> None:
    parser = kubeapi.vm_command(
        subparsers, "vnc", __doc__, help="serve a VM's VNC display on a local port for a viewer"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="local port on 127.0.0.1 (default: a free one)"
    )
    parser.set_defaults(func=lambda args: kubeapi.with_cluster(args, lambda c: serve(c, args)))
    parser = kubeapi.vm_command(
        subparsers, "screenshot", __doc__, help="write a PNG of a VM's screen"
    )
    parser.add_argument("-o", "--output", required=True, type=Path, help="the PNG file to write")
    parser.set_defaults(func=lambda args: kubeapi.with_cluster(args, lambda c: shoot(c, args)))


def shoot(cluster: Cluster, args: argparse.Namespace) -> int:
    api = Api(cluster, args.vm)

    async def go() -> int:
        image, refused = await api.get(f"{protocol.VNC_SUBRESOURCE}/{protocol.SCREENSHOT}")
        if image is None:
            print(f"error: {refused}", file=sys.stderr)
            return kubeapi.FAILED
        args.output.write_bytes(image)
        print(f"wrote {args.output}", file=sys.stderr)
        return kubeapi.OK

    try:
        return asyncio.run(go())
    except (aiohttp.ClientError, OSError) as error:
        print(f"error: cannot reach the API server: {error}", file=sys.stderr)
        return kubeapi.FAILED


def viewers(port: int) -> list[str]:
    """Commands that open common VNC viewers on the local port."""
    return [
        f"vncviewer {LOOPBACK}::{port}",
        f"remote-viewer vnc://{LOOPBACK}:{port}",
        f"gvncviewer {LOOPBACK}::{port}",
    ]


def serve(cluster: Cluster, args: argparse.Namespace) -> int:
    api = Api(cluster, args.vm)
    try:
        return asyncio.run(listen(api, args.port))
    except KeyboardInterrupt:
        return kubeapi.OK


async def allowed(http: aiohttp.ClientSession, api: Api) -> bool:
    """Check access once before listening (a plain GET: the console API answers 400
    "upgrade" when the user may open the display and the VM has one to open); else say
    why on stderr."""
    try:
        async with http.get(
            api.url(protocol.VNC_SUBRESOURCE), ssl=api.context, headers=api.headers
        ) as reply:
            if reply.status == 400:
                return True
            print(f"error: {await api.refusal(reply)}", file=sys.stderr)
    except (aiohttp.ClientError, OSError) as error:
        print(f"error: cannot reach the API server: {error}", file=sys.stderr)
    return False


async def display(http: aiohttp.ClientSession, api: Api) -> bridge.WebSocketEnd | str:
    """A new websocket to the VM's display through the API server, or why there is none.
    Every viewer (`vnc`) and page (`console --web`) gets its own."""
    url = api.url(protocol.VNC_SUBRESOURCE)
    ws_url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    try:
        ws = await http.ws_connect(
            ws_url, ssl=api.context, headers=api.headers, protocols=("binary",)
        )
    except aiohttp.WSServerHandshakeError as error:
        return await console.refusal(http, url, error, ssl=api.context, headers=api.headers)
    except (aiohttp.ClientError, OSError) as error:
        return f"cannot reach the API server: {error}"
    return bridge.WebSocketEnd(ws)


async def listen(api: Api, port: int) -> int:
    """Check access once, then bridge every viewer that connects to its own websocket
    until interrupted."""
    async with aiohttp.ClientSession() as http:
        if not await allowed(http, api):
            return kubeapi.FAILED

        async def viewer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            local = StreamConsole(reader, writer)
            upstream = await display(http, api)
            if isinstance(upstream, str):
                print(f"error: {upstream}", file=sys.stderr, flush=True)
                await local.close()
                return
            print("viewer connected", file=sys.stderr, flush=True)
            await bridge.bridge(upstream, local)
            print("viewer disconnected", file=sys.stderr, flush=True)

        server = await asyncio.start_server(viewer, LOOPBACK, port)
        bound = int(server.sockets[0].getsockname()[1])
        what = f"{api.namespace}/{api.vm}"
        print(f"VNC display of {what} on {LOOPBACK}:{bound}; connect a viewer, e.g.:", flush=True)
        for command in viewers(bound):
            print(f"  {command}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            async with server:
                await server.serve_forever()
    return kubeapi.OK
