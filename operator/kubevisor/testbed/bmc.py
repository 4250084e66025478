"""A Redfish BMC for testbed hosts: sushy-tools' emulator (the OpenStack Redfish emulator)
serving one system per testbed host, so that powering a system off really stops that host
— its libvirtd and every QEMU in its namespaces (`hosts.stop_hosts`), as a power cut
would — and its power state is whether the host runs.

It runs as its own process, like a BMC: `python -m kubevisor.testbed.bmc CONFIG`, where
CONFIG is a JSON file written by `write_config`:

    {"port": 8000, "users": {"admin": "secret"}, "protocol": "redfish",
     "systems": {"kubevisor-host-3": {"stateDir": "/tmp/.../extra-host", "stuck": false}}}

Each system's Id is its host's name; its state directory is the one the host was started
in. A `stuck` system accepts the power-off and stays On (a BMC that does not do what it
says). With `users`, requests need HTTP basic auth (the emulator's own check, against a
bcrypt htpasswd file written next to CONFIG); a wrong password gets 401.

sushy-tools chooses among its own drivers (libvirt, nova, ironic, fake); this module puts
`TestbedSystems` (its `resources.systems` driver interface) in their place. With protocol
"ipmi" the same systems (one: an IPMI BMC has one) answer IPMI over LAN on UDP `port`,
through pyghmi's BMC server (`pyghmi.ipmi.bmc.Bmc`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
from pyghmi.ipmi import bmc as ipmi
from pyghmi.ipmi.private import serversession
from sushy_tools import error
from sushy_tools.emulator import main as emulator
from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver

from kubevisor.testbed import hosts

log = logging.getLogger("kubevisor.testbed.bmc")

FORCE_OFF = ("ForceOff", "GracefulShutdown", "PushPowerButton")


@dataclass(frozen=True)
class System:
    """One testbed host behind the BMC."""

    name: str
    state_dir: Path
    stuck: bool = False


def write_config(
    path: Path,
    *,
    port: int,
    systems: Sequence[System],
    users: dict[str, str] | None = None,
    protocol: str = "redfish",
) -> Path:
    """The BMC's CONFIG file; returns `path`."""
    document = {
        "port": port,
        "protocol": protocol,
        "users": users or {},
        "systems": {s.name: {"stateDir": str(s.state_dir), "stuck": s.stuck} for s in systems},
    }
    path.write_text(json.dumps(document))
    return path


def argv(config: Path) -> list[str]:
    """The command line of the BMC process."""
    return [sys.executable, "-m", "kubevisor.testbed.bmc", str(config)]


class TestbedSystems(AbstractSystemsDriver):  # type: ignore[misc]
    """sushy-tools' systems driver over testbed hosts."""

    def __init__(self, systems: dict[str, System]) -> None:
        self._systems = systems

    @property
    def driver(self) -> str:
        return "<kubevisor testbed hosts>"

    @property
    def systems(self) -> list[str]:
        return list(self._systems)

    def _get(self, identity: str) -> System:
        try:
            return self._systems[identity]
        except KeyError:
            raise error.NotFound(f"system {identity} is not a testbed host here") from None

    def uuid(self, identity: str) -> str:
        return self._get(identity).name

    def name(self, identity: str) -> str:
        return self._get(identity).name

    def get_power_state(self, identity: str) -> str:
        system = self._get(identity)
        if system.stuck:
            return "On"
        running = any(h.pid is not None for h in hosts.list_hosts(system.state_dir))
        return "On" if running else "Off"

    def set_power_state(self, identity: str, state: str) -> None:
        system = self._get(identity)
        if state not in FORCE_OFF:
            raise error.NotSupportedError(
                f"{state}: this BMC only powers testbed hosts off (start them with the testbed)"
            )
        if system.stuck:
            log.warning("system %s: %s accepted and ignored (stuck)", identity, state)
            return
        stopped = hosts.stop_hosts(system.state_dir)
        log.warning("system %s: %s stopped %s", identity, state, [h.name for h in stopped])

    def get_boot_device(self, identity: str) -> str:
        self._get(identity)
        return "Hdd"

    def set_boot_device(self, identity: str, boot_source: str) -> None:
        raise error.NotSupportedError("boot devices of testbed hosts")


INVALID_AUTHENTICATION_ALGORITHM = 0x11
"""RMCP+ status code (IPMI 2.0 table 13-15)."""


def _sha1_only(original: Any) -> Any:
    """pyghmi's server answers every RMCP+ open-session request with cipher suite 3
    (HMAC-SHA1), even one asking for SHA-256, which its own client asks for first and then
    cannot check; a real BMC refuses what it cannot do, and the client falls back to SHA-1.
    So refuse any other authentication algorithm (request byte 12, IPMI 2.0 table 13-16)."""

    def respond(session: Any, request: bytearray) -> bytearray:
        if request[12] != 1:
            return bytearray([request[0], INVALID_AUTHENTICATION_ALGORITHM, 0, 0]) + request[4:8]
        return bytearray(original(session, request))

    return respond


class TestbedIpmi(ipmi.Bmc):  # type: ignore[misc]
    """pyghmi's IPMI BMC server over one testbed host."""

    def __init__(self, systems: TestbedSystems, users: dict[str, str], port: int) -> None:
        super().__init__(users, port=port, address="127.0.0.1")
        self.testbed = systems
        self.identity = systems.systems[0]

    def get_power_state(self) -> str:
        return self.testbed.get_power_state(self.identity).lower()

    def power_off(self) -> None:
        self.testbed.set_power_state(self.identity, "ForceOff")


def _auth_file(users: dict[str, str], path: Path) -> Path:
    lines = [
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}"
        for user, pw in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def serve(config: Path) -> None:
    document: dict[str, Any] = json.loads(config.read_text())
    systems = {
        name: System(name, Path(entry["stateDir"]), bool(entry.get("stuck")))
        for name, entry in document["systems"].items()
    }
    driver = TestbedSystems(systems)
    if document.get("protocol") == "ipmi":
        sessions = serversession.ServerSession
        sessions.create_open_session_response = _sha1_only(sessions.create_open_session_response)
        log.info("IPMI BMC of %s on UDP 127.0.0.1:%s", driver.systems, document["port"])
        TestbedIpmi(driver, document["users"], int(document["port"])).listen()
        return
    settings: dict[str, Any] = {
        "SUSHY_EMULATOR_LISTEN_IP": "127.0.0.1",
        "SUSHY_EMULATOR_LISTEN_PORT": int(document["port"]),
        # Systems must not be cached across requests: the power state is the host's now.
        "SUSHY_EMULATOR_NO_MEMOIZE": True,
    }
    if document.get("users"):
        settings["SUSHY_EMULATOR_AUTH_FILE"] = str(
            _auth_file(document["users"], config.with_suffix(".htpasswd"))
        )
    emulator.Application.systems = property(lambda _app: driver)
    emulator.app.configure(extra_config=settings)
    emulator.app.run(host="127.0.0.1", port=int(document["port"]), threaded=True)


def main(args: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kubevisor.testbed.bmc", description=__doc__)
    parser.add_argument("config", type=Path)
    options = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(options.config)


if __name__ == "__main__":
    main()
