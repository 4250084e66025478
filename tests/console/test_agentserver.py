"""The agent's console endpoint over real mTLS, opening consoles through a Hypervisor
driver (the fake): bytes both ways, and each refusal as the HTTP status the user sees."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness import until
from kubevisor.console import agentserver, protocol, tls
from kubevisor.drivers import base, fake

from .pki import Pki

HOST = "host-a"
NAMESPACE, NAME = "default", "web"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        pytest.param(base.DomainNotFound("gone"), 404, id="no-domain-not-found"),
        pytest.param(base.ConsoleBusy("in use"), 409, id="busy-conflict"),
        pytest.param(base.ConsoleUnsupported("none"), 501, id="unsupported-not-implemented"),
        pytest.param(base.PermanentError("bad"), 502, id="other-permanent-bad-gateway"),
        pytest.param(base.RetryableError("later"), 502, id="retryable-bad-gateway"),
    ],
)
def test_refusal_statuses(error: base.HypervisorError, code: int) -> None:
    assert agentserver.refusal(error)[0] == code


Scenario = Callable[[fake.FakeHypervisor, str, Callable[..., Any]], Awaitable[None]]


def serve(tmp_path: Path, scenario: Scenario, **options: Any) -> None:
    """Run the endpoint for one VM `NAMESPACE/NAME` bound to HOST, whose domain runs on a
    FakeHypervisor; `scenario(hypervisor, uid, connect)` where `connect(force=False)`
    opens a websocket as kubevisor-api (and `connect.get(prefix, name)` a plain GET);
    `options` go to the application (diagnose, console_log)."""
    pki = Pki(tmp_path / "pki")
    server_cert, server_key = pki.issue("agent", server=True)
    client_cert, client_key = pki.issue(protocol.API_CLIENT, server=False)
    uid = str(uuidlib.uuid4())
    vm = {"metadata": {"namespace": NAMESPACE, "name": NAME, "uid": uid}, "status": {"host": HOST}}

    async def get_vm(namespace: str, name: str) -> dict[str, Any] | None:
        return vm if (namespace, name) == (NAMESPACE, NAME) else None

    async def main() -> None:
        hypervisor = fake.FakeHypervisor()
        await hypervisor.connect()
        await hypervisor.define(
            f"<domain type='test'><name>{NAME}</name><uuid>{uid}</uuid></domain>"
        )
        await hypervisor.start(uid)
        app = agentserver.application(
            host=HOST,
            get_vm=get_vm,
            open_console=hypervisor.open_console,
            open_display=hypervisor.open_display,
            screenshot=hypervisor.screenshot,
            allowed_clients=[protocol.API_CLIENT],
            **options,
        )
        context = tls.server_context(
            cert=server_cert, key=server_key, client_ca=pki.ca, required=True
        )
        runner = await agentserver.serve(app, address="127.0.0.1", port=0, context=context)
        port = runner.addresses[0][1]
        client = tls.client_context(ca=pki.ca, cert=client_cert, key=client_key)
        async with aiohttp.ClientSession() as session:

            def connect(
                name: str = NAME, force: bool = False, prefix: str = protocol.AGENT_PREFIX
            ) -> Any:  # the ws_connect context manager
                query = "?force=true" if force else ""
                path = protocol.agent_path(NAMESPACE, name, prefix)
                url = f"wss://127.0.0.1:{port}{path}{query}"
                return session.ws_connect(url, ssl=client)

            def get(prefix: str, name: str = NAME) -> Any:  # the request context manager
                path = protocol.agent_path(NAMESPACE, name, prefix)
                return session.get(f"https://127.0.0.1:{port}{path}?lines=7", ssl=client)

            connect.get = get  # type: ignore[attr-defined]
            try:
                await asyncio.wait_for(scenario(hypervisor, uid, connect), timeout=20)
            finally:
                await runner.cleanup()

    asyncio.run(main())


async def refused(connect: Callable[..., Any], **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refusal:
        async with connect(**kwargs):
            pass
    headers: Any = refusal.value.headers or {}
    return refusal.value.status, str(headers.get(protocol.ERROR_HEADER, ""))


async def messages(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[bytes]:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY:
            yield bytes(message.data)


def test_bytes_flow_both_ways(tmp_path: Path) -> None:
    async def scenario(hv: fake.FakeHypervisor, uid: str, connect: Callable[..., Any]) -> None:
        async with connect() as ws:
            await ws.send_bytes(b"ls\n")
            await until(
                lambda: uid in hv.consoles and bytes(hv.consoles[uid].typed) == b"ls\n",
                timeout=10,
                what="the guest to receive what the client typed",
            )
            hv.consoles[uid].guest_writes(b"bin etc\n")
            assert await anext(messages(ws)) == b"bin etc\n"

    serve(tmp_path, scenario)


def test_the_console_ends_when_the_domain_stops(tmp_path: Path) -> None:
    async def scenario(hv: fake.FakeHypervisor, uid: str, connect: Callable[..., Any]) -> None:
        async with connect() as ws:
            await until(lambda: uid in hv.consoles, timeout=10, what="the session")
            await hv.destroy(uid)
            assert [chunk async for chunk in messages(ws)] == []
            assert ws.close_code == protocol.STREAM_ENDED

    serve(tmp_path, scenario)


def test_a_second_session_is_refused_unless_forced(tmp_path: Path) -> None:
    async def scenario(hv: fake.FakeHypervisor, uid: str, connect: Callable[..., Any]) -> None:
        async with connect() as first:
            await until(lambda: uid in hv.consoles, timeout=10, what="the first session")
            status, message = await refused(connect)
            assert status == 409
            assert "in use by another session" in message
            async with connect(force=True):
                assert [chunk async for chunk in messages(first)] == [], "taken over"

    serve(tmp_path, scenario)


@pytest.mark.parametrize(
    ("prepare", "name", "status", "words"),
    [
        pytest.param("destroy", NAME, 409, "not running", id="stopped-vm-conflict"),
        pytest.param("undefine", NAME, 404, "no domain", id="no-domain-not-found"),
        pytest.param("", "other", 404, "not found", id="unknown-vm-not-found"),
        pytest.param("unsupported", NAME, 501, "no serial consoles", id="driver-without-consoles"),
    ],
)
def test_refusals(tmp_path: Path, prepare: str, name: str, status: int, words: str) -> None:
    async def scenario(hv: fake.FakeHypervisor, uid: str, connect: Callable[..., Any]) -> None:
        if prepare == "unsupported":
            hv.fail_next(
                "open_console", base.ConsoleUnsupported("the driver has no serial consoles")
            )
        elif prepare == "undefine":
            await hv.undefine(uid)
        elif prepare:
            await getattr(hv, prepare)(uid)
        got, message = await refused(connect, name=name)
        assert got == status
        assert words in message

    serve(tmp_path, scenario)


def test_a_client_certificate_of_another_name_is_refused(tmp_path: Path) -> None:
    """The handshake passes (same CA), the name does not."""
    pki = Pki(tmp_path / "pki")
    cert, key = pki.issue("agent", server=True)
    other_cert, other_key = pki.issue("someone-else", server=False)
    app = agentserver.application(
        host=HOST,
        get_vm=lambda namespace, name: asyncio.sleep(0, None),
        open_console=fake.FakeHypervisor().open_console,
        open_display=fake.FakeHypervisor().open_display,
        screenshot=fake.FakeHypervisor().screenshot,
        allowed_clients=[protocol.API_CLIENT],
    )

    async def main() -> int:
        context = tls.server_context(cert=cert, key=key, client_ca=pki.ca, required=True)
        runner = await agentserver.serve(app, address="127.0.0.1", port=0, context=context)
        client = tls.client_context(ca=pki.ca, cert=other_cert, key=other_key)
        url = f"wss://127.0.0.1:{runner.addresses[0][1]}{protocol.agent_path(NAMESPACE, NAME)}"
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refusal:
                    async with session.ws_connect(url, ssl=client):
                        pass
                return refusal.value.status
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == 403


@pytest.mark.parametrize(
    ("prefix", "name", "status", "words"),
    [
        pytest.param(protocol.AGENT_DISPLAY_PREFIX, NAME, 501, "no displays", id="display"),
        pytest.param(protocol.AGENT_SCREENSHOT_PREFIX, NAME, 501, "no displays", id="screenshot"),
        pytest.param(protocol.AGENT_DISPLAY_PREFIX, "other", 404, "not found", id="unknown-vm"),
    ],
)
def test_display_refusals_of_a_driver_without_displays(
    tmp_path: Path, prefix: str, name: str, status: int, words: str
) -> None:
    """The display and screenshot paths check the VM like the console's, then pass on
    the driver's refusal (the fake, like vSphere, has no displays)."""

    async def scenario(hv: fake.FakeHypervisor, uid: str, connect: Callable[..., Any]) -> None:
        got, message = await refused(connect, name=name, prefix=prefix)
        assert (got, words in message) == (status, True), message

    serve(tmp_path, scenario)


def test_diagnose_and_console_log_answer_for_a_bound_vm(tmp_path: Path) -> None:
    asked: list[tuple[str, str | None]] = []

    async def diagnose(vm: dict[str, Any], lines: str | None) -> dict[str, Any]:
        asked.append((vm["metadata"]["name"], lines))
        return {"host": HOST, "files": {"agent.log": "x\n"}, "missing": {}}

    async def console_log(vm: dict[str, Any], lines: str | None) -> str:
        raise FileNotFoundError(lines)

    async def scenario(hv: fake.FakeHypervisor, uid: str, connect: Callable[..., Any]) -> None:
        async with connect.get(protocol.AGENT_DIAGNOSE_PREFIX) as reply:
            assert reply.status == 200
            assert (await reply.json())["files"] == {"agent.log": "x\n"}
        assert asked == [(NAME, "7")]
        async with connect.get(protocol.AGENT_DIAGNOSE_PREFIX, "other") as reply:
            assert reply.status == 404
        async with connect.get(protocol.AGENT_CONSOLE_LOG_PREFIX) as reply:
            assert reply.status == 404
            assert "no serial log" in reply.headers[protocol.ERROR_HEADER]

    serve(tmp_path, scenario, diagnose=diagnose, console_log=console_log)


def test_an_agent_without_diagnostics_says_so(tmp_path: Path) -> None:
    async def scenario(hv: fake.FakeHypervisor, uid: str, connect: Callable[..., Any]) -> None:
        for prefix in (protocol.AGENT_DIAGNOSE_PREFIX, protocol.AGENT_CONSOLE_LOG_PREFIX):
            async with connect.get(prefix) as reply:
                assert reply.status == 501

    serve(tmp_path, scenario)
