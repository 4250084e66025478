"""Commands in a running tiny guest (`testbed.guest`) through its serial console: no login,
no network path from the test to the guest needed.

`GuestShell(uri, uuid).run("ip -4 addr")` attaches to the domain's console as the agent does
(the libvirt driver's `open_console`, libvirt's virDomainOpenConsole), sends one
`kubevisor-run` line and reads the console until the guest prints the command's exit line.
The line is sent again while the guest has not echoed it (input that arrives before the
guest reads its console is not lost, but input during early boot can be); the guest runs an
ID once however often it arrives. The domain must have a pty console (`Guest.domain_xml(...,
console=True)`, or the agent's rendering) and run on `uri`; after a live migration, make a
GuestShell on the new host.

Used by the networking tests: `fetch` and `ping` make one guest talk to another and report
what happened, `set_address` makes a guest send from an address that is not its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
import time
import uuid as uuidlib

from kubevisor.drivers.base import Console
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.testbed import guest

RESEND_SECONDS = 3.0
"""How long to wait for the guest's echo of a command line before sending it again."""
POLL_SECONDS = 0.2


class GuestCommandError(RuntimeError):
    """A command did not finish in time, or the console went away; says what was seen."""


@dataclasses.dataclass(frozen=True)
class GuestShell:
    """Runs shell commands (busybox sh) in the guest `uuid` on the libvirt at `uri`."""

    uri: str
    uuid: str

    def run(self, command: str, *, timeout: float = 60.0) -> guest.CommandResult:
        """Run `command` in the guest and return its exit code and output (stdout and
        stderr, interleaved). Raises GuestCommandError after `timeout` seconds."""
        command_id = uuidlib.uuid4().hex[:12]
        line = guest.command_line(command_id, command)
        return asyncio.run(self._exchange(command_id, line, timeout=timeout, wait=True))

    def start(self, command: str, *, timeout: float = 60.0) -> str:
        """Start `command` in the guest and return once the guest has read it; its ID is for
        `result`. For what must run while the test does something else (a ping across a
        live migration)."""
        command_id = uuidlib.uuid4().hex[:12]
        line = guest.command_line(command_id, command)
        asyncio.run(self._exchange(command_id, line, timeout=timeout, wait=False))
        return command_id

    def result(self, command_id: str, *, timeout: float = 60.0) -> guest.CommandResult:
        """The result of a command `start`ed earlier, once it has ended (polled from the
        files the guest keeps per command)."""
        deadline = time.monotonic() + timeout
        kept = f"{guest.COMMAND_DIR}/{command_id}"
        while True:
            code = self.run(f"cat {kept}.rc", timeout=30.0)
            if code.ok and code.output.strip().isdigit():
                output = self.run(f"cat {kept}.out", timeout=30.0).output
                return guest.CommandResult(int(code.output.strip()), output)
            if time.monotonic() >= deadline:
                raise GuestCommandError(f"command {command_id} still running after {timeout}s")
            time.sleep(POLL_SECONDS)

    def fetch(self, url: str, *, seconds: int = 5) -> guest.CommandResult:
        """GET `url` from inside the guest (busybox wget); the output is the body. Exit code
        143 means no answer within `seconds`."""
        # `timeout`, not wget's -T: Debian's busybox 1.35 wget crashes with -T (SIGSEGV).
        return self.run(f"timeout {seconds} wget -q -O - {shlex.quote(url)}", timeout=seconds + 30)

    def ping(
        self, address: str, *, count: int = 1, seconds: int = 2, source: str | None = None
    ) -> guest.CommandResult:
        """Ping `address` from the guest `count` times, waiting up to `seconds` in all;
        `source` sets the source address (one the guest has). Exit code 143: no end within
        `seconds`."""
        where = f" -I {shlex.quote(source)}" if source else ""
        # `timeout` too: busybox ping overruns -w while ARP finds no one (12 s for -w 3).
        return self.run(
            f"timeout {seconds} ping -c {count} -w {seconds}{where} {shlex.quote(address)}",
            timeout=seconds + 30,
        )

    def set_address(self, address: str, *, interface: str = "eth0") -> guest.CommandResult:
        """Make `address` (a.b.c.d/prefix) the only IPv4 address of `interface`, as a guest
        that changes its own address would: udhcpc is stopped first so it cannot restore
        the leased one. What port security must stop."""
        nic, cidr = shlex.quote(interface), shlex.quote(address)
        return self.run(
            f"killall udhcpc; ip -4 addr flush dev {nic} && ip addr add {cidr} dev {nic}"
        )

    async def _exchange(
        self, command_id: str, line: bytes, *, timeout: float, wait: bool
    ) -> guest.CommandResult:
        async with LibvirtHypervisor(self.uri) as hypervisor:
            console = await hypervisor.open_console(self.uuid)
            try:
                return await self._converse(console, command_id, line, timeout, wait=wait)
            finally:
                await console.close()

    async def _converse(
        self, console: Console, command_id: str, line: bytes, timeout: float, *, wait: bool
    ) -> guest.CommandResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = ""
        resend_at = loop.time()
        while True:
            result = guest.command_result(seen, command_id)
            if result is not None:
                return result
            acknowledged = guest.command_acknowledged(seen, command_id)
            if acknowledged and not wait:
                return guest.CommandResult(0, "")
            now = loop.time()
            if now >= deadline:
                state = "still running" if acknowledged else "never read by the guest"
                raise GuestCommandError(
                    f"command {command_id} on {self.uuid} {state} after {timeout}s; "
                    f"console: {seen[-2000:]!r}"
                )
            if not acknowledged and now >= resend_at:
                await console.write(line)
                resend_at = now + RESEND_SECONDS
            wake = deadline if acknowledged else min(deadline, resend_at)
            try:
                chunk = await asyncio.wait_for(console.read(), timeout=max(wake - now, 0.05))
            except TimeoutError:
                continue
            if not chunk:
                raise GuestCommandError(
                    f"the console of {self.uuid} closed (stopped or migrated away); "
                    f"console: {seen[-2000:]!r}"
                )
            seen += chunk.decode(errors="replace")
