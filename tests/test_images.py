"""The test images and their HTTP server (tests/images.py), which the e2e tests rely on."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import lzma
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import eventually, require
from images import ImageServer, MiB, SourceImage, build_image


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> SourceImage:
    require(bool(shutil.which("qemu-img")), what="qemu-img", how="apt-get install qemu-utils")
    return build_image(tmp_path_factory.mktemp("image"))


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as running:
        yield running


def test_image_is_a_qcow2_with_data_and_same_content_compressed(image: SourceImage) -> None:
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(image.qcow2.path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert (info["format"], info["virtual-size"]) == ("qcow2", 16 * MiB)
    assert image.qcow2.size > 4 * MiB  # the random data is stored, not a sparse hole
    data = image.qcow2.path.read_bytes()
    assert gzip.decompress(image.files["gzip"].path.read_bytes()) == data
    assert lzma.decompress(image.files["xz"].path.read_bytes()) == data
    for file in image.files.values():
        assert file.sha256 == hashlib.sha256(file.path.read_bytes()).hexdigest()


def test_every_image_has_a_digest_of_its_own(image: SourceImage, tmp_path: Path) -> None:
    other = build_image(tmp_path, data_size=MiB)
    assert other.qcow2.sha256 != image.qcow2.sha256


def test_server_logs_every_request_and_serves_files(
    image: SourceImage, server: ImageServer
) -> None:
    url = server.serve("/root.qcow2", image.qcow2.path)
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.read() == image.qcow2.path.read_bytes()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server.url("/nothing"), timeout=10)
    assert missing.value.code == 404
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/root.qcow2"),
        ("GET", "/nothing"),
    ]
    [get] = server.gets("/root.qcow2")
    assert get.sent == image.qcow2.size
    eventually(lambda: get.finished, timeout=10, what="the server to log the end")


def download_in_background(url: str) -> tuple[threading.Thread, dict[str, object]]:
    """Reads `url` whole in a thread; the result holds `body` or `error`."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            with urllib.request.urlopen(url, timeout=30) as reply:
                result["length"] = int(reply.headers["Content-Length"])
                result["body"] = reply.read()
        except (OSError, http.client.HTTPException) as error:
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_throttle_slows_a_download_until_lifted(image: SourceImage, server: ImageServer) -> None:
    url = server.serve("/slow", image.qcow2.path)
    server.throttle("/slow", 256 * 1024)
    began = time.monotonic()
    thread, result = download_in_background(url)
    get = eventually(
        lambda: g[0] if (g := server.gets("/slow")) and g[0].sent > 0 else None,
        timeout=10,
        what="the download under way",
    )
    # At 256 KiB/s the first second brings about a quarter MiB: far from done.
    eventually(lambda: get.sent >= 256 * 1024, timeout=10, what="a second's worth sent")
    assert get.finished is None and get.sent < image.qcow2.size / 2
    server.throttle("/slow", None)
    thread.join(timeout=30)
    assert result.get("body") == image.qcow2.path.read_bytes()
    # The client can have the last byte before the server's thread records the end.
    finished = eventually(lambda: get.finished, timeout=10, what="the server to log the end")
    assert finished - get.started >= 0.5
    assert time.monotonic() - began < image.qcow2.size / (256 * 1024)


def test_stop_cuts_a_download_off_and_start_reopens_the_same_port(
    image: SourceImage, server: ImageServer
) -> None:
    url = server.serve("/cut", image.qcow2.path)
    port = server.port
    server.throttle("/cut", 256 * 1024)
    thread, result = download_in_background(url)
    eventually(
        lambda: any(g.sent > 0 for g in server.gets("/cut")),
        timeout=10,
        what="the download under way",
    )
    server.stop()
    thread.join(timeout=30)
    [cut] = server.gets("/cut")
    assert cut.finished is None and 0 < cut.sent < image.qcow2.size
    # The client sees an error or a body shorter than its Content-Length.
    assert "error" in result or len(result["body"]) < result["length"], result.keys()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)

    server.throttle("/cut", None)
    server.start()
    assert server.port == port
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.read() == image.qcow2.path.read_bytes()
    assert len(server.gets("/cut")) == 2
