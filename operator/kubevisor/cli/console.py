"""`kubevisor console VM`: attach to the guest's serial console, like `kubectl exec -it`.

The path, each hop authenticated by the one before it (docs/cli.md, "console"):

  kubevisor console VM
    -> kube-apiserver            authenticates the user (any method: certs, OIDC, tokens)
    -> aggregated API            APIService v1alpha1.subresources.kubevisor.io, served by
       (kubevisor-api)           the controller process; it authorizes with a
                                 SubjectAccessReview: verb get on virtualmachines/console
                                 in group subresources.kubevisor.io, in the VM's namespace
    -> agent of status.host      over mTLS: the agent accepts only kubevisor-api's client
                                 certificate, and only for VMs bound to its own host
    -> libvirt virDomainOpenConsole on the serial device (a bidirectional stream)

The CLI opens a websocket to
/apis/subresources.kubevisor.io/v1alpha1/namespaces/NS/virtualmachines/VM/console with its
own kubeconfig credentials (client certificate or bearer token). Console access is its own
RBAC permission (get on virtualmachines/console in subresources.kubevisor.io, e.g. the
kubevisor-console ClusterRole bound in one namespace), grantable without edit of VMs.

On a terminal, stdin is put in raw mode and Ctrl-] detaches. Otherwise stdin and stdout
are copied as they are, and the end of stdin detaches, so scripts can drive a console.

Exit codes: 0 detached (Ctrl-], end of stdin) or the console closed (`--web`:
interrupted); 1 refused or failed (not found, forbidden, not running, console in use,
agent unreachable, no serial log, noVNC not installed: one line on stderr); 2 `--port` or
`--novnc` without `--web`.

`--log` prints the end of the serial log the agent keeps on the VM's host (what the
guest wrote to its console, also while nobody was attached) instead of attaching: GET
.../virtualmachines/VM/console/log, which RBAC checks as virtualmachines/console.

`--web` serves the VM's screen instead, as a page with noVNC on 127.0.0.1, through the
display's path and permission (virtualmachines/vnc): cli/webconsole.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

import aiohttp

from kubevisor.cli import kubeapi
from kubevisor.cli.subresources import Api, tls_context
from kubevisor.console import protocol
from kubevisor.kube.cluster import Cluster

ESCAPE = b"\x1d"  # Ctrl-]


def register(subparsers: Any) -> None:
    parser = kubeapi.vm_command(
        subparsers, "console", __doc__, help="attach to a VM's serial console (Ctrl-] detaches)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="take the console over from another session attached to it",
    )
    parser.add_argument(
        "--log",
        action="store_true",
        help="print the end of the serial console's log (kept by the agent on the VM's "
        "host, redacted) instead of attaching",
    )
    parser.add_argument(
        "--lines",
        type=int,
        default=200,
        help="with --log: how many lines (default: %(default)s; the agent serves at most 5000)",
    )
    web = parser.add_argument_group("the graphical console in a browser (--web)")
    web.add_argument(
        "--web",
        action="store_true",
        help="serve the VM's screen (VNC) as a web page with noVNC on 127.0.0.1 and print "
        "its URL, instead of attaching to the serial console (needs virtualmachines/vnc)",
    )
    web.add_argument(
        "--port", type=int, default=0, help="with --web: the local port (default: a free one)"
    )
    web.add_argument(
        "--novnc",
        metavar="DIR",
        help="with --web: the directory of the @novnc/novnc npm package (default: the cache "
        "hack/novnc/build.sh installs it into)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.log:
        return kubeapi.with_cluster(args, lambda cluster: print_log(cluster, args))
    if args.web:
        # Imported here: webconsole builds on vnc, which builds on this module.
        from kubevisor.cli import webconsole

        return webconsole.run(args)
    if args.port or args.novnc:
        print("error: --port and --novnc go with --web", file=sys.stderr)
        return kubeapi.USAGE
    return kubeapi.with_cluster(args, lambda cluster: attach(cluster, args))


def print_log(cluster: Cluster, args: argparse.Namespace) -> int:
    """GET .../VM/console/log (the console's permission) and print it."""
    api = Api(cluster, args.vm)
    try:
        text, refused = asyncio.run(
            api.get(f"{protocol.SUBRESOURCE}/{protocol.LOG}", {"lines": str(args.lines)})
        )
    except (aiohttp.ClientError, OSError) as error:
        print(f"error: cannot reach the API server: {error}", file=sys.stderr)
        return kubeapi.FAILED
    if text is None:
        print(f"error: {refused}", file=sys.stderr)
        return kubeapi.FAILED
    sys.stdout.write(text.decode("utf-8", errors="replace"))
    return kubeapi.OK


def attach(cluster: Cluster, args: argparse.Namespace) -> int:
    settings = cluster.api.configuration
    url = str(settings.host).rstrip("/") + protocol.api_path(cluster.namespace, args.vm)
    if args.force:
        url += "?force=true"
    headers = {}
    token = settings.get_api_key_with_prefix("authorization")
    if token:
        headers["Authorization"] = str(token)
    try:
        terminal = os.isatty(sys.stdin.fileno())
    except (OSError, ValueError):  # no real stdin (e.g. replaced in-process): not a terminal
        terminal = False
    return asyncio.run(
        session(
            url.replace("https://", "wss://", 1).replace("http://", "ws://", 1),
            context=tls_context(settings),
            headers=headers,
            terminal=terminal,
            what=f"{cluster.namespace}/{args.vm}",
        )
    )


async def refusal(
    http: aiohttp.ClientSession,
    url: str,
    error: aiohttp.WSServerHandshakeError,
    **request: Any,
) -> str:
    """What the server said when it refused the upgrade.

    The console API repeats its message in a header. A refusal by kube-apiserver itself
    (authentication, or RBAC, which it checks before proxying) is only in the body, which
    a refused websocket handshake does not expose: ask again without upgrading; the
    same checks refuse it the same way, and the console API serves no plain request.
    """
    headers: Any = error.headers or {}
    message = headers.get(protocol.ERROR_HEADER)
    if message:
        return str(message)
    if error.status == 404:
        return (
            "the console API is not served here (404): is the APIService "
            "v1alpha1.subresources.kubevisor.io installed and Available?"
        )
    try:
        async with http.get(url, **request) as reply:
            if reply.status == error.status:
                body = await reply.read()
                if found := protocol.status_message(body, ""):
                    return found
    except (aiohttp.ClientError, OSError):
        pass
    if error.status == 401:
        return "the API server did not accept the kubeconfig's credentials (401 Unauthorized)"
    return f"the API server refused the console ({error.status} {error.message})"


async def session(
    url: str, *, context: ssl.SSLContext, headers: dict[str, str], terminal: bool, what: str
) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, ssl=context, headers=headers, heartbeat=30)
        except aiohttp.WSServerHandshakeError as error:
            plain = url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
            why = await refusal(http, plain, error, ssl=context, headers=headers)
            print(f"error: {why}", file=sys.stderr)
            return kubeapi.FAILED
        except (aiohttp.ClientError, OSError) as error:
            print(f"error: cannot reach the API server: {error}", file=sys.stderr)
            return kubeapi.FAILED
        hint = " (escape character is ^])" if terminal else ""
        print(f"Connected to {what}{hint}", file=sys.stderr, flush=True)
        with raw_terminal(terminal):
            await copy(ws, terminal=terminal)
        if terminal:
            print("", file=sys.stderr)
        return kubeapi.OK


@contextlib.contextmanager
def raw_terminal(terminal: bool) -> Iterator[None]:
    if not terminal:
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def copy(ws: aiohttp.ClientWebSocketResponse, *, terminal: bool) -> None:
    """Guest output to stdout, stdin to the guest, until detach or either side ends."""
    loop = asyncio.get_running_loop()
    typed: asyncio.Queue[bytes] = asyncio.Queue()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        typed.put_nowait(data)

    async def inward() -> None:
        while data := await typed.get():
            if terminal and ESCAPE in data:
                data = data.split(ESCAPE, 1)[0]
                if data:
                    await ws.send_bytes(data)
                return
            await ws.send_bytes(data)

    async def outward() -> None:
        out = sys.stdout.buffer
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                out.write(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                out.write(str(message.data).encode())
            else:
                break
            out.flush()

    try:
        loop.add_reader(fd, readable)
        watched = True
    except PermissionError:  # a regular file cannot be polled, and never blocks
        watched = False
        while data := os.read(fd, 4096):
            typed.put_nowait(data)
        typed.put_nowait(b"")
    tasks = [asyncio.create_task(inward()), asyncio.create_task(outward())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if watched:
            loop.remove_reader(fd)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ws.close()
