"""What the fake offers agent tests beyond the shared contract (test_contract.py)."""

from __future__ import annotations

import asyncio
import uuid as uuidlib

import pytest

from kubevisor.drivers import base, fake

XML = "<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid></domain>"


def test_fail_next_raises_once_then_works() -> None:
    async def main() -> None:
        driver = fake.FakeHypervisor()
        await driver.connect()
        uuid = str(uuidlib.uuid4())
        await driver.define(XML.format(name="a", uuid=uuid))
        driver.fail_next("start", base.RetryableError("libvirtd busy", delay=3))
        with pytest.raises(base.RetryableError, match="libvirtd busy"):
            await driver.start(uuid)
        await driver.start(uuid)
        assert (await driver.state(uuid)).state is base.DomainState.RUNNING
        assert driver.calls.count(("start", uuid)) == 2

    asyncio.run(main())


def test_guest_ignoring_acpi_is_destroyed_on_shutdown() -> None:
    async def main() -> None:
        driver = fake.FakeHypervisor()
        await driver.connect()
        uuid = str(uuidlib.uuid4())
        await driver.define(XML.format(name="a", uuid=uuid))
        await driver.start(uuid)
        driver.domains[uuid].ignore_acpi = True
        assert await driver.shutdown(uuid, timeout=30) is base.ShutdownOutcome.FORCED
        assert (await driver.state(uuid)).reason == "destroyed"

    asyncio.run(main())


def test_disconnect_makes_calls_retryable_and_emits_connection_events() -> None:
    async def main() -> None:
        driver = fake.FakeHypervisor()
        await driver.connect()
        events = driver.events()
        driver.disconnect()
        with pytest.raises(base.RetryableError):
            await driver.list_domains()
        driver.reconnect()
        assert await driver.list_domains() == []
        seen = [await anext(events), await anext(events)]
        assert [e.connected for e in seen if isinstance(e, base.ConnectionEvent)] == [False, True]

    asyncio.run(main())


def test_same_name_other_uuid_is_refused() -> None:
    async def main() -> None:
        driver = fake.FakeHypervisor()
        await driver.connect()
        await driver.define(XML.format(name="a", uuid=uuidlib.uuid4()))
        with pytest.raises(base.RetryableError, match="already exists"):
            await driver.define(XML.format(name="a", uuid=uuidlib.uuid4()))

    asyncio.run(main())


def test_default_host_facts_have_two_cells() -> None:
    facts = fake.default_host_facts()
    assert [len(cell.cpus) for cell in facts.cells] == [4, 4]
    assert facts.memory_kib == sum(cell.memory_kib for cell in facts.cells)


def test_one_console_session_at_a_time_until_forced_and_none_after_stop() -> None:
    async def main() -> None:
        driver = fake.FakeHypervisor()
        await driver.connect()
        uuid = str(uuidlib.uuid4())
        await driver.define(XML.format(name="a", uuid=uuid))
        await driver.start(uuid)
        first = await driver.open_console(uuid)
        await first.write(b"root\n")
        driver.consoles[uuid].guest_writes(b"# ")
        assert (await first.read(), bytes(driver.consoles[uuid].typed)) == (b"# ", b"root\n")
        with pytest.raises(base.ConsoleBusy, match="in use by another session"):
            await driver.open_console(uuid)
        second = await driver.open_console(uuid, force=True)
        assert await first.read() == b"", "the session taken over ends"
        await driver.destroy(uuid)
        assert await second.read() == b"", "a stopped domain hangs up its console"
        with pytest.raises(base.ConsoleBusy, match="not running"):
            await driver.open_console(uuid)

    asyncio.run(main())
