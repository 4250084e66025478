"""Serial consoles end to end on a private stack (conftest.py): the agent's mTLS endpoint,
the aggregated console API behind a real kube-apiserver, and `kubevisor console`."""

from __future__ import annotations

import asyncio
import os
import pty
import queue
import select
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from harness import eventually
from kubevisor.console.protocol import ERROR_HEADER
from kubevisor.testbed.guest import COUNTER_PREFIX

from .pki import Pki
from .stack import AGENT_NAME, NAMESPACE, ConsoleStack, qemu_pid, vm

pytestmark = [pytest.mark.apiserver, pytest.mark.libvirtd, pytest.mark.e2e]

ECHO = "kubevisor-typed-4711"


def client_context(stack: ConsoleStack, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(stack.pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def attach_agent(
    url: str, context: ssl.SSLContext, *, send: bytes = b"", until: bytes, timeout: float = 30
) -> bytes:
    """Read the agent's console websocket until `until` appears; send `send` first."""
    seen = b""
    async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=context) as ws:
        if send:
            await ws.send_bytes(send)
        async with asyncio.timeout(timeout):
            while until not in seen:
                message = await ws.receive()
                assert message.type == aiohttp.WSMsgType.BINARY, message
                seen += message.data
    return seen


def agent_status(
    url: str, context: ssl.SSLContext, server_hostname: str | None = AGENT_NAME
) -> tuple[int, str]:
    async def go() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url, ssl=context, server_hostname=server_hostname):
                    return 101, ""
            except aiohttp.WSServerHandshakeError as error:
                return error.status, (error.headers or {}).get("X-Kubevisor-Console-Error", "")

    return asyncio.run(go())


def test_agent_bridges_the_guest_console_both_ways(console_stack: ConsoleStack) -> None:
    cert, key = console_stack.pki.issue("kubevisor-api", server=False)
    url = f"{console_stack.agent_url}/console/{NAMESPACE}/guest"
    seen = asyncio.run(
        attach_agent(url, client_context(console_stack, cert, key), until=COUNTER_PREFIX.encode())
    )
    assert COUNTER_PREFIX.encode() in seen
    # Nothing in the guest reads ttyS0, but its line discipline echoes what arrives: the
    # echo proves the input direction reached the guest's serial port.
    seen = asyncio.run(
        attach_agent(
            url,
            client_context(console_stack, cert, key),
            send=f"{ECHO}\r".encode(),
            until=ECHO.encode(),
        )
    )
    assert ECHO.encode() in seen


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param("user-name", 403, id="same-ca-other-name-is-forbidden"),
        pytest.param("unknown-vm", 404, id="vm-that-does-not-exist"),
    ],
)
def test_agent_refuses(console_stack: ConsoleStack, who: str, expected: int) -> None:
    if who == "unknown-vm":
        cert, key = console_stack.pki.issue("kubevisor-api", server=False)
        url = f"{console_stack.agent_url}/console/{NAMESPACE}/nothing-here"
    else:
        cert, key = console_stack.pki.issue("alice", server=False)
        url = f"{console_stack.agent_url}/console/{NAMESPACE}/guest"
    status, message = agent_status(url, client_context(console_stack, cert, key))
    assert status == expected, message
    assert message


@pytest.mark.parametrize(
    "certificate",
    [pytest.param("other-ca", id="client-of-another-ca"), pytest.param(None, id="no-client-cert")],
)
def test_agent_refuses_the_handshake(
    console_stack: ConsoleStack, tmp_path: Path, certificate: str | None
) -> None:
    cert = key = None
    if certificate == "other-ca":
        cert, key = Pki(tmp_path / "other").issue("kubevisor-api", server=False)
    url = f"{console_stack.agent_url}/console/{NAMESPACE}/guest"
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        agent_status(url, client_context(console_stack, cert, key))


def test_api_refuses_callers_other_than_the_front_proxy(console_stack: ConsoleStack) -> None:
    """Straight to the console API with a certificate the front-proxy CA did not sign."""
    cert, key = console_stack.pki.issue("front-proxy-client", server=False)
    url = (
        f"https://{console_stack.api_address}:{console_stack.api_port}/apis/subresources.kubevisor.io/v1alpha1/"
        f"namespaces/{NAMESPACE}/virtualmachines/guest/console"
    )
    context = client_context(console_stack, cert, key)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)) as refused:
        agent_status(url, context, server_hostname=None)
    # The server verified the certificate and refused it (not our client refusing theirs).
    assert not isinstance(refused.value, aiohttp.ClientConnectorCertificateError)
    context = client_context(console_stack, None, None)
    assert agent_status(url, context, server_hostname=None)[0] == 401


class Console:
    """`kubevisor console` as a child process, its stdout read on a thread."""

    def __init__(self, stack: ConsoleStack, kubeconfig: Path, vm_name: str = "guest") -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubevisor.cli.main",
                "console",
                vm_name,
                "-n",
                NAMESPACE,
                "--kubeconfig",
                str(kubeconfig),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.chunks: queue.Queue[bytes] = queue.Queue()
        self.seen = b""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        while data := self.process.stdout.read1(4096):
            self.chunks.put(data)
        self.chunks.put(b"")

    def read_until(self, marker: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                chunk = self.chunks.get(timeout=remaining)
            except queue.Empty:
                break
            if not chunk:
                break
            self.seen += chunk
        return self.seen

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Its exit code and stderr (stdout is the pump thread's)."""
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.process.kill()
        assert self.process.stderr is not None
        return code, self.process.stderr.read().decode()


def test_cli_with_the_permission_attaches(console_stack: ConsoleStack) -> None:
    plane = console_stack.plane
    kubeconfig = plane.credentials("console-alice", ["console-users"])
    plane.kubectl(
        "create",
        "rolebinding",
        "alice-console",
        "-n",
        NAMESPACE,
        "--clusterrole=kubevisor-console",
        "--user=console-alice",
    )
    # The permission is the subresource only: alice may not even read VMs.
    assert (
        plane.kubectl(
            "auth", "can-i", "get", "vm", "-n", NAMESPACE, kubeconfig=kubeconfig, check=False
        ).stdout.strip()
        == "no"
    )
    console = Console(console_stack, kubeconfig)
    try:
        seen = console.read_until(COUNTER_PREFIX.encode())
        assert COUNTER_PREFIX.encode() in seen, console.finish()
        assert console.process.stdin is not None
        console.process.stdin.write(f"{ECHO}\r".encode())
        console.process.stdin.flush()
        assert ECHO.encode() in console.read_until(ECHO.encode())
        console.process.stdin.close()  # the end of stdin detaches
        code, err = console.finish()
    finally:
        console.process.kill()
    assert code == 0, err
    assert f"Connected to {NAMESPACE}/guest" in err


def test_cli_without_the_permission_is_forbidden(console_stack: ConsoleStack) -> None:
    kubeconfig = console_stack.plane.credentials("console-bob")
    console = Console(console_stack, kubeconfig)
    code, err = console.finish()
    assert code == 1
    assert err == (
        'error: virtualmachines.subresources.kubevisor.io "guest" is forbidden: User '
        '"console-bob" cannot get resource "virtualmachines/console" in API group '
        f'"subresources.kubevisor.io" in the namespace "{NAMESPACE}"\n'
    )
    assert console.seen == b""


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        pytest.param("console-carol", 101, id="user-with-the-rolebinding"),
        pytest.param("console-dave", 403, id="user-without-it"),
    ],
)
def test_api_authorizes_the_proxied_user_itself(
    console_stack: ConsoleStack, user: str, expected: int
) -> None:
    """The console API does its own SubjectAccessReview for the user in X-Remote-User,
    not trusting that kube-apiserver checked (it does, so through it a user without the
    permission never gets this far): here as the front proxy, with its certificate."""
    plane = console_stack.plane
    plane.kubectl(
        "create",
        "rolebinding",
        "carol-console",
        "-n",
        NAMESPACE,
        "--clusterrole=kubevisor-console",
        "--user=console-carol",
        check=False,
    )
    pki_dir = plane.state_dir / "pki"
    context = client_context(
        console_stack, pki_dir / "front-proxy-client.crt", pki_dir / "front-proxy-client.key"
    )
    url = (
        f"https://{console_stack.api_address}:{console_stack.api_port}/apis/"
        f"subresources.kubevisor.io/v1alpha1/namespaces/{NAMESPACE}/virtualmachines/guest/console"
    )

    async def go() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(
                    url, ssl=context, headers={"X-Remote-User": user, "X-Remote-Group": "staff"}
                ) as ws:
                    message = await asyncio.wait_for(ws.receive(), timeout=30)
                    return 101, str(message.data)
            except aiohttp.WSServerHandshakeError as error:
                return error.status, (error.headers or {}).get("X-Kubevisor-Console-Error", "")

    status, said = asyncio.run(go())
    assert status == expected, said
    if expected == 403:
        assert f'User "{user}" cannot get resource "virtualmachines/console"' in said


def test_cli_on_a_terminal_detaches_on_ctrl_close_bracket(console_stack: ConsoleStack) -> None:
    """On a pty: raw mode, the guest's output arrives, Ctrl-] detaches with exit 0."""
    kubeconfig = console_stack.plane.credentials("console-erin")
    console_stack.plane.kubectl(
        "create",
        "rolebinding",
        "erin-console",
        "-n",
        NAMESPACE,
        "--clusterrole=kubevisor-console",
        "--user=console-erin",
    )
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubevisor.cli.main",
            "console",
            "guest",
            "-n",
            NAMESPACE,
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while COUNTER_PREFIX.encode() not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], deadline - time.monotonic())
            if ready:
                seen += os.read(controller, 4096)
        assert COUNTER_PREFIX.encode() in seen
        os.write(controller, b"\x1d")
        code = process.wait(timeout=30)
    finally:
        process.kill()
        os.close(controller)
    assert process.stderr is not None
    err = process.stderr.read().decode()
    assert code == 0, err
    assert "escape character is ^]" in err


def test_a_second_session_is_refused_then_force_takes_over(console_stack: ConsoleStack) -> None:
    cert, key = console_stack.pki.issue("kubevisor-api", server=False)
    context = client_context(console_stack, cert, key)
    url = f"{console_stack.agent_url}/console/{NAMESPACE}/guest"

    async def go() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            first = await session.ws_connect(url, ssl=context, server_hostname=AGENT_NAME)
            try:
                try:
                    async with session.ws_connect(url, ssl=context, server_hostname=AGENT_NAME):
                        second = (101, "")
                except aiohttp.WSServerHandshakeError as error:
                    second = (error.status, (error.headers or {}).get(ERROR_HEADER, ""))
                async with session.ws_connect(
                    url + "?force=true", ssl=context, server_hostname=AGENT_NAME
                ):
                    # The first session loses the console: libvirt ends its stream.
                    async with asyncio.timeout(30):
                        while (await first.receive()).type == aiohttp.WSMsgType.BINARY:
                            pass
                return second
            finally:
                await first.close()

    status, message = asyncio.run(go())
    assert status == 409
    assert "in use by another session" in message


def test_the_session_ends_when_the_vm_stops(console_stack: ConsoleStack) -> None:
    plane = console_stack.plane
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(vm("short")))
    eventually(
        lambda: (
            ((console_stack.get("vm", "short", "-n", NAMESPACE) or {}).get("status") or {}).get(
                "phase"
            )
            == "Running"
        ),
        timeout=120,
        what="vm short Running",
    )
    console = Console(console_stack, plane.kubeconfig, vm_name="short")
    try:
        assert COUNTER_PREFIX.encode() in console.read_until(COUNTER_PREFIX.encode())
        plane.kubectl(
            "patch",
            "vm",
            "short",
            "-n",
            NAMESPACE,
            "--type=merge",
            "-p",
            '{"spec": {"runStrategy": "Halted"}}',
        )
        code, err = console.finish(timeout=60)
    finally:
        console.process.kill()
        plane.kubectl("delete", "vm", "short", "-n", NAMESPACE, "--wait=false", check=False)
    assert code == 0, err


# -- kubevisor diagnose: the host's part, through the same path --------------------------------

DIAGNOSE_SECRET = "s3cret-diagnose-4711"


def diagnose(stack: ConsoleStack, kubeconfig: Path, out: Path) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "kubevisor.cli.main", "diagnose", "crashy", "-n", NAMESPACE,
         "--kubeconfig", str(kubeconfig), "-o", str(out), "--lines", "50"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}


def test_diagnose_of_a_crashed_vm_has_the_host_part_and_no_secret(
    console_stack: ConsoleStack, tmp_path: Path
) -> None:
    """A guest whose QEMU dies (runStrategy Once: Failed, Crashed): the bundle holds the
    reason, the live domain XML, domstats, the QEMU, serial and agent log tails, and not
    the cloud-init secret; a reader without virtualmachines/diagnose gets the rest and the
    403 in summary.txt."""
    plane = console_stack.plane
    crashy = vm("crashy")
    crashy["spec"] |= {
        "runStrategy": "Once",
        "cloudInit": {"userData": f"#cloud-config\npassword: {DIAGNOSE_SECRET}\n"},
    }
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(crashy))
    running = eventually(
        lambda: (
            obj
            if ((obj := console_stack.get("vm", "crashy", "-n", NAMESPACE)) or {})
            .get("status", {})
            .get("phase")
            == "Running"
            else None
        ),
        timeout=120,
        what="vm crashy Running",
    )
    uid = running["metadata"]["uid"]
    serial = console_stack.agent.log.parent / "agent" / "vms" / uid / "serial.log"
    eventually(
        lambda: serial.exists() and COUNTER_PREFIX in serial.read_text(errors="replace"),
        timeout=90,
        what="the guest writing to its serial log",
    )
    # This test's own guest: its QEMU dies, libvirt sees a crash.
    os.kill(qemu_pid(uid), signal.SIGKILL)
    eventually(
        lambda: (
            ((console_stack.get("vm", "crashy", "-n", NAMESPACE) or {}).get("status") or {}).get(
                "phase"
            )
            == "Failed"
        ),
        timeout=60,
        what="vm crashy Failed",
    )
    plane.kubectl(
        "create", "clusterrole", "diagnose-reader", "--verb=get,list",
        "--resource=virtualmachines.kubevisor.io,hypervisorhosts.kubevisor.io,"
        "migrationjobs.kubevisor.io,events",
    )  # fmt: skip
    readers = {}
    for user in ("diag-alice", "diag-bob"):
        readers[user] = plane.credentials(user)
        plane.kubectl(
            "create", "clusterrolebinding", f"{user}-reader", "--clusterrole=diagnose-reader",
            f"--user={user}",
        )  # fmt: skip
    plane.kubectl(
        "create", "rolebinding", "alice-diagnose", "-n", NAMESPACE,
        "--clusterrole=kubevisor-diagnose", "--user=diag-alice",
    )  # fmt: skip

    files = diagnose(console_stack, readers["diag-alice"], tmp_path / "alice")
    assert all(DIAGNOSE_SECRET not in text for text in files.values()), [
        name for name, text in files.items() if DIAGNOSE_SECRET in text
    ]
    assert "Ready=False Crashed: the guest crashed" in files["summary.txt"]
    assert "From host" in files["summary.txt"] and "not gathered" not in files["summary.txt"]
    assert f"<uuid>{uid}</uuid>" in files["host/domain.xml"]
    assert "<serial" in files["host/domain.xml"]
    assert "state.state=5" in files["host/domstats.txt"]  # VIR_DOMAIN_SHUTOFF
    assert "reason=crashed" in files["host/qemu.log"]
    assert COUNTER_PREFIX in files["host/serial.log"]
    assert f"{NAMESPACE}/crashy" in files["host/agent.log"]
    assert f"{NAMESPACE}/guest" not in files["host/agent.log"]

    log = subprocess.run(
        [sys.executable, "-m", "kubevisor.cli.main", "console", "crashy", "--log", "--lines",
         "1", "-n", NAMESPACE, "--kubeconfig", str(plane.kubeconfig)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert log.returncode == 0, log.stderr
    assert log.stdout == serial.read_text(errors="replace").splitlines(keepends=True)[-1]

    forbidden = diagnose(console_stack, readers["diag-bob"], tmp_path / "bob")
    assert not any(name.startswith("host/") for name in forbidden)
    assert "vm.yaml" in forbidden and "Ready=False Crashed" in forbidden["summary.txt"]
    assert (
        "The host's part was not gathered: virtualmachines.subresources.kubevisor.io "
        '"crashy" is forbidden: User "diag-bob" cannot get resource '
        '"virtualmachines/diagnose"' in forbidden["summary.txt"]
    )
    raw = plane.kubectl(
        "get", "--raw",
        f"/apis/subresources.kubevisor.io/v1alpha1/namespaces/{NAMESPACE}/virtualmachines/"
        "crashy/diagnose",
        kubeconfig=readers["diag-bob"], check=False,
    )  # fmt: skip
    assert raw.returncode != 0 and "Forbidden" in raw.stderr + raw.stdout
