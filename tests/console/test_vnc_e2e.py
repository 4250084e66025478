"""VNC displays end to end on the private console stack (conftest.py): the domain's VNC
server on a UNIX socket only, `kubevisor vnc` through kube-apiserver's aggregation to the
console API and the agent (read with a minimal RFB client of our own), `kubevisor
screenshot`, `kubevisor console --web` (noVNC in headless Chromium), and RBAC's
virtualmachines/vnc."""

from __future__ import annotations

import base64
import io
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from harness import REPO, eventually, require
from kubevisor.testbed.guest import SCREEN_COLOUR

from . import browser
from .stack import NAMESPACE, ConsoleStack, qemu_pid

pytestmark = [pytest.mark.apiserver, pytest.mark.libvirtd, pytest.mark.e2e]

RAW = 0
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def cli(kubeconfig: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kubevisor.cli.main",
        *args,
        "-n",
        NAMESPACE,
        "--kubeconfig",
        str(kubeconfig),
    ]


def granted(stack: ConsoleStack, user: str, clusterrole: str) -> Path:
    """A kubeconfig for `user` bound to `clusterrole` in the namespace, and nothing else."""
    kubeconfig = stack.plane.credentials(user)
    stack.plane.kubectl(
        "create",
        "rolebinding",
        f"{user}-{clusterrole}",
        "-n",
        NAMESPACE,
        f"--clusterrole={clusterrole}",
        f"--user={user}",
        check=False,
    )
    return kubeconfig


@dataclass
class Tunnel:
    """`kubevisor vnc guest` running: its local port and its stderr."""

    port: int
    log: Path

    def said(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def tunnel(
    console_stack: ConsoleStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tunnel]:
    """`kubevisor vnc guest` running as a user who may only open displays."""
    kubeconfig = granted(console_stack, "vnc-alice", "kubevisor-vnc")
    log = tmp_path_factory.mktemp("vnc") / "stderr"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            cli(kubeconfig, "vnc", "guest"), stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith(f"VNC display of {NAMESPACE}/guest on 127.0.0.1:"), (
            first,
            log.read_text(),
        )
        port = int(first.split("127.0.0.1:")[1].split(";")[0])
        assert f"vncviewer 127.0.0.1::{port}" in process.stdout.readline()
        yield Tunnel(port, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, f"the server closed after {len(data)} of {count} bytes"
        data += chunk
    return data


def first_frame(port: int) -> tuple[int, int, int, bytes]:
    """A minimal RFB 3.8 client: handshake with security None, ClientInit, one full
    FramebufferUpdateRequest; (width, height, bytes per pixel, the first rectangle's
    raw pixels)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        version = exactly(sock, 12)
        assert version.startswith(b"RFB 003."), version
        sock.sendall(b"RFB 003.008\n")
        (count,) = struct.unpack("!B", exactly(sock, 1))
        types = exactly(sock, count)
        assert 1 in types, f"security types {list(types)}: the agent skipped VNC auth for us"
        sock.sendall(struct.pack("!B", 1))
        assert struct.unpack("!I", exactly(sock, 4)) == (0,)  # SecurityResult OK
        sock.sendall(struct.pack("!B", 1))  # ClientInit: shared
        width, height = struct.unpack("!HH", exactly(sock, 4))
        pixel_format = exactly(sock, 16)
        bytes_per_pixel = pixel_format[0] // 8
        (name_length,) = struct.unpack("!I", exactly(sock, 4))
        exactly(sock, name_length)
        # Raw encoding only (the default without SetEncodings): the pixels come as they are.
        sock.sendall(struct.pack("!BBHHHH", 3, 0, 0, 0, width, height))
        while True:
            kind = exactly(sock, 1)[0]
            if kind == 0:  # FramebufferUpdate
                break
            assert kind in (2, 3), f"unexpected server message {kind}"  # Bell, ServerCutText
            if kind == 3:
                exactly(sock, 3)
                exactly(sock, struct.unpack("!I", exactly(sock, 4))[0])
        _pad, rectangles = struct.unpack("!BH", exactly(sock, 3))
        assert rectangles >= 1
        _x, _y, w, h, encoding = struct.unpack("!HHHHi", exactly(sock, 12))
        assert encoding == RAW, encoding
        return width, height, bytes_per_pixel, exactly(sock, w * h * bytes_per_pixel)


def test_a_viewer_reads_the_guest_screen_through_the_api(
    console_stack: ConsoleStack, tunnel: Tunnel
) -> None:
    try:
        width, height, bpp, pixels = first_frame(tunnel.port)
    except AssertionError as error:
        raise AssertionError(f"{error}; kubevisor vnc said: {tunnel.said()}") from error
    assert width > 0 and height > 0
    colours = {pixels[i : i + bpp] for i in range(0, len(pixels), bpp)}
    assert len(colours) > 1, f"the guest's {width}x{height} screen is one colour"
    events = console_stack.get("events", "-n", NAMESPACE)
    said = [
        e["message"] for e in (events or {}).get("items", []) if e.get("reason") == "VNCConnected"
    ]
    assert any("vnc-alice" in message for message in said), said


def red_rows(png: Path) -> set[int]:
    """The rows of the image holding the guest's red (`SCREEN_COLOUR`, give or take)."""
    with Image.open(png) as image:
        assert image.format == "PNG"
        rgb = image.convert("RGB")
        width, height = rgb.size
        data = rgb.tobytes()
    return {
        y
        for y in range(height)
        for x in range(0, width, 4)
        if all(
            abs(a - b) < 48
            for a, b in zip(
                data[3 * (y * width + x) : 3 * (y * width + x) + 3], SCREEN_COLOUR, strict=True
            )
        )
    }


def test_screenshot_shows_what_the_guest_drew(console_stack: ConsoleStack, tmp_path: Path) -> None:
    """The guest clears its VGA screen and paints its ready line white on red at the top
    (testbed/guest.py): screenshots until that shows, then that one is checked."""
    kubeconfig = granted(console_stack, "vnc-shooter", "kubevisor-vnc")
    out = tmp_path / "guest.png"

    def shot() -> set[int] | None:
        done = subprocess.run(
            cli(kubeconfig, "screenshot", "guest", "-o", str(out)), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return red_rows(out) or None

    rows = eventually(shot, timeout=90, what="the guest's red line on its screen")
    # One text line (16 pixels high in VGA text mode), at the top of the cleared screen.
    assert min(rows) < 16 and max(rows) < 32, sorted(rows)
    with Image.open(out) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 2


@pytest.fixture(scope="module")
def novnc() -> Path:
    """The @novnc/novnc package hack/novnc/build.sh installed."""
    done = subprocess.run(
        [str(REPO / "hack" / "novnc" / "build.sh"), "--check"], capture_output=True, text=True
    )
    require(
        done.returncode == 0,
        what="noVNC (the npm package @novnc/novnc)",
        how="run hack/novnc/build.sh (hack/setup.sh does)",
    )
    return Path(done.stdout.strip())


@pytest.mark.parametrize("command", ["vnc", "screenshot", "console --web"])
def test_without_the_vnc_permission_is_forbidden(
    console_stack: ConsoleStack, tmp_path: Path, request: pytest.FixtureRequest, command: str
) -> None:
    """The serial console's permission is not the display's, nor the web console's."""
    kubeconfig = granted(console_stack, "vnc-bob", "kubevisor-console")
    extra: list[str] = []
    if command == "screenshot":
        extra = ["-o", str(tmp_path / "no.png")]
    elif command == "console --web":
        extra = ["--web", "--novnc", str(request.getfixturevalue("novnc"))]
    done = subprocess.run(
        cli(kubeconfig, command.split()[0], "guest", *extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (
        'error: virtualmachines.subresources.kubevisor.io "guest" is forbidden: User '
        '"vnc-bob" cannot get resource "virtualmachines/vnc" in API group '
        f'"subresources.kubevisor.io" in the namespace "{NAMESPACE}"\n'
    )
    assert done.stdout == ""
    assert not (tmp_path / "no.png").exists()


@pytest.fixture(scope="module")
def web_console(
    console_stack: ConsoleStack, novnc: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`kubevisor console guest --web` running as a user who may only open displays: the
    URL it prints."""
    kubeconfig = granted(console_stack, "vnc-carol", "kubevisor-vnc")
    log = tmp_path_factory.mktemp("web") / "stderr"
    argv = cli(kubeconfig, "console", "guest", "--web", "--novnc", str(novnc))
    with log.open("w") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        prefix = f"Web console of {NAMESPACE}/guest on http://127.0.0.1:"
        assert first.startswith(prefix), (first, log.read_text())
        yield first.split(" on ", 1)[1].split(" ", 1)[0]
    finally:
        process.terminate()
        process.wait(timeout=30)


def png(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.convert("RGB")


def alike(seen: Image.Image, guest: Image.Image) -> float:
    """The share of pixels that are the same colour (give or take 16 per channel) in two
    pictures of the same size."""
    assert seen.size == guest.size, (seen.size, guest.size)
    red, green, blue = ImageChops.difference(seen, guest).split()
    largest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    same = sum(largest.histogram()[:17])
    return same / (guest.size[0] * guest.size[1])


CANVAS = "document.querySelector('#screen canvas')"


def test_the_web_console_shows_the_guest_screen(
    console_stack: ConsoleStack, web_console: str, tmp_path: Path
) -> None:
    """noVNC in headless Chromium, on the page `console --web` serves, connects through the
    API and shows what the guest's own screenshot shows: its canvas and a screenshot of the
    page where the canvas is, each pixel for pixel (the text cursor may blink)."""
    require(browser.executable() is not None, what="headless Chromium", how=browser.HOW_TO_INSTALL)
    with browser.opened(web_console, tmp_path / "chromium") as page:

        def connected() -> bool:
            status = page.evaluate("document.getElementById('status').textContent")
            assert status == "connected", f"the page says {status!r}"
            return True

        eventually(connected, timeout=60, what="noVNC connected")

        def canvas() -> Image.Image | None:
            url = page.evaluate(f"{CANVAS}.toDataURL('image/png')")
            image = png(base64.b64decode(url.split(",", 1)[1]))
            image.save(tmp_path / "canvas.png")
            return image if red_rows(tmp_path / "canvas.png") else None

        shown = eventually(canvas, timeout=60, what="the guest's red line in noVNC's canvas")
        box = page.evaluate(
            f"(() => {{ const r = {CANVAS}.getBoundingClientRect(); "
            "return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
        )
        seen = png(page.screenshot(box))
        seen.save(tmp_path / "page.png")
        (tmp_path / "whole-page.png").write_bytes(page.screenshot())
    kubeconfig = granted(console_stack, "vnc-shooter", "kubevisor-vnc")
    out = tmp_path / "guest.png"
    done = subprocess.run(
        cli(kubeconfig, "screenshot", "guest", "-o", str(out)), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    with Image.open(out) as image:
        guest = image.convert("RGB")
    # The red line is about 2% of the screen; the text cursor, 0.01%.
    assert alike(shown, guest) > 0.999
    assert alike(seen, guest) > 0.999


def test_the_web_console_serves_only_its_own_page(web_console: str) -> None:
    """Without the printed token nothing is served, and the websocket refuses another
    site's page."""
    root = web_console.rsplit("/", 2)[0] + "/"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(root + "websockify", timeout=10)
    assert refused.value.code == 404
    with urllib.request.urlopen(web_console, timeout=10) as reply:
        assert b"kubevisor console" in reply.read()
    request = urllib.request.Request(
        web_console + "websockify",
        headers={
            "Origin": "http://evil.example",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
        },
    )
    with pytest.raises(urllib.error.HTTPError) as foreign:
        urllib.request.urlopen(request, timeout=10)
    assert foreign.value.code == 403


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = str(fd.readlink()) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_the_display_listens_on_a_unix_socket_and_no_address(console_stack: ConsoleStack) -> None:
    done = subprocess.run(
        ["virsh", "-c", console_stack.host.uri, "dumpxml", console_stack.vm_uid],
        capture_output=True,
        text=True,
        check=True,
    )
    graphics = ET.fromstring(done.stdout).findall("devices/graphics")
    assert [g.get("type") for g in graphics] == ["vnc"]
    assert graphics[0].get("listen") is None and graphics[0].get("port") is None
    listens = graphics[0].findall("listen")
    assert [listen.get("type") for listen in listens] == ["socket"], done.stdout
    path = listens[0].get("socket")
    assert path
    # QEMU's own sockets, in its network namespace: the VNC socket is a listening UNIX
    # socket of QEMU's, and QEMU listens on no TCP port at all.
    pid = qemu_pid(console_stack.vm_uid)
    mine = socket_inodes(pid)
    unix = [line.split() for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]]
    assert any(f[-1] == path and f[-2] in mine for f in unix if len(f) == 8), path
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            assert not (fields[3] == LISTEN and fields[9] in mine), (
                f"QEMU listens on {table} {fields[1]}"
            )
