"""Headless Chromium (Debian's `chromium`) driven over the Chrome DevTools Protocol, for
the web console's test: open a page, evaluate JavaScript in it, take a screenshot.

The protocol is JSON over a websocket (aiohttp's client, a dependency already): each
command carries an id and its reply the same id; events (no id) are skipped.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from harness import eventually

HOW_TO_INSTALL = "apt-get install chromium (hack/setup.sh does, as root)"

# Chromium reaches no address but the page's: no name resolves (the page is on
# 127.0.0.1), and the background services that would call home are off.
FLAGS = (
    "--headless",
    "--no-sandbox",  # as root, the sandbox refuses to start
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=1024,768",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def executable() -> str | None:
    return shutil.which("chromium")


class Page:
    """One page of a running Chromium, over its DevTools websocket."""

    def __init__(self, debugger: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.ids = itertools.count(1)
        self.http = self.loop.run_until_complete(self._session())
        self.ws = self.loop.run_until_complete(self.http.ws_connect(debugger, max_msg_size=0))

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        number = next(self.ids)
        await self.ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
        async with asyncio.timeout(60):
            async for message in self.ws:
                reply = json.loads(message.data)
                if reply.get("id") != number:
                    continue  # an event
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result
        raise AssertionError(f"{method}: Chromium closed its DevTools connection")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.loop.run_until_complete(self._call(method, params))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        """A PNG of the page as shown (of `clip`, in CSS pixels, if given)."""
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])

    def close(self) -> None:
        self.loop.run_until_complete(self.ws.close())
        self.loop.run_until_complete(self.http.close())
        self.loop.close()


def debugger_url(profile: Path) -> str | None:
    """The page's DevTools websocket, once Chromium listens (it writes its port to
    DevToolsActivePort in the profile) and has the page open."""
    try:
        port = int((profile / "DevToolsActivePort").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None

    async def pages() -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/json/list") as reply,
        ):
            found: list[dict[str, Any]] = await reply.json()
            return found

    try:
        targets = asyncio.run(pages())
    except (aiohttp.ClientError, OSError):
        return None
    return next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)


@contextmanager
def opened(url: str, profile: Path) -> Iterator[Page]:
    """Chromium showing `url`, headless, with a fresh profile; ended on exit."""
    binary = executable()
    assert binary is not None, HOW_TO_INSTALL
    profile.mkdir(parents=True, exist_ok=True)
    log = (profile.parent / f"{profile.name}.log").open("w")
    process = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    page: Page | None = None
    try:
        debugger = eventually(
            lambda: debugger_url(profile) if process.poll() is None else "exited",
            timeout=60,
            what="Chromium's DevTools",
        )
        assert debugger != "exited", f"Chromium exited: {log.name}"
        page = Page(debugger)
        navigated = page.call("Page.navigate", url=url)
        assert "errorText" not in navigated, f"{url}: {navigated['errorText']}"
        eventually(
            lambda: (
                page.evaluate(f"location.href === {json.dumps(url)} && document.readyState")
                == "complete"
            ),
            timeout=60,
            what=f"Chromium to load {url}",
        )
        yield page
    finally:
        if page is not None:
            page.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
