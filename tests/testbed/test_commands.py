"""testbed.commands: each typed option reaches the process as the value its own parser
reads (the real `parse_args` of the agent and of the controller), and an option left
unset is not passed, so the process's default applies."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kubevisor.agent import main as agent_main
from kubevisor.handlers import main as controller_main
from kubevisor.testbed.commands import (
    LOCAL_MIGRATE_URI,
    LOOPBACK,
    AgentOptions,
    ControllerOptions,
)
from kubevisor.testbed.guest import Guest

STATE = Path("/state")
GUEST = Guest(Path("/boot/vmlinuz"), Path("/boot/initrd"), "console=ttyS0 quiet", "6.1")
AGENT = AgentOptions("host-1", "qemu+tcp://127.0.0.1:16509/system", Path("/kc"), STATE)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(
            AGENT,
            {
                "host": "host-1",
                "libvirt_uri": "qemu+tcp://127.0.0.1:16509/system",
                "kubeconfig": "/kc",
                "state_dir": "/state",
                "image_dir": "/state/images",
            },
            id="required-and-image-dir-under-state",
        ),
        pytest.param(
            replace(AGENT, image_dir=Path("/img"), domain_type="qemu"),
            {"image_dir": "/img", "domain_type": "qemu"},
            id="image-dir-and-domain-type",
        ),
        pytest.param(
            replace(AGENT, guest=GUEST),
            {
                "guest_kernel": "/boot/vmlinuz",
                "guest_initrd": "/boot/initrd",
                "guest_cmdline": "console=ttyS0 quiet",
            },
            id="guest",
        ),
        pytest.param(
            replace(AGENT, shutdown_grace=15, lease_duration=8, metrics_port=0),
            {"shutdown_grace": 15.0, "lease_duration": 8, "metrics_port": 0},
            id="numbers",
        ),
        pytest.param(
            replace(AGENT, shutdown_grace=2.5, log_level="WARNING"),
            {"shutdown_grace": 2.5, "log_level": "WARNING"},
            id="fractional-seconds-and-log-level",
        ),
        pytest.param(
            replace(
                AGENT,
                migrate_uri=LOCAL_MIGRATE_URI,
                cgroup_controllers="",
                qemu_conf=Path("/etc/qemu.conf"),
                image_source_allow=LOOPBACK,
            ),
            {
                "migrate_uri": "tcp://127.0.0.1",
                "cgroup_controllers": "",
                "qemu_conf": "/etc/qemu.conf",
            },
            id="testbed-host",
        ),
        pytest.param(
            replace(AGENT, vsphere_credentials=Path("/secret"), vsphere_insecure=True),
            {"vsphere_credentials": "/secret", "vsphere_insecure": True},
            id="vsphere",
        ),
        pytest.param(
            replace(AGENT, extra=["--resync-interval", "60"]),
            {"resync_interval": 60.0},
            id="extra-flags-pass-through",
        ),
    ],
)
def test_agent_options_reach_the_agents_parser(
    options: AgentOptions, expected: dict[str, Any]
) -> None:
    argv = options.argv()
    assert argv[:3] == [sys.executable, "-m", "kubevisor.agent.main"]
    parsed = vars(agent_main.parse_args(argv[3:]))
    assert {key: _plain(parsed[key]) for key in expected} == expected


def test_unset_options_leave_the_agents_defaults() -> None:
    """Only the required flags and --image-dir are passed when nothing else is set."""
    flags = [arg for arg in AGENT.argv()[3:] if arg.startswith("--")]
    assert flags == ["--host", "--libvirt-uri", "--kubeconfig", "--state-dir", "--image-dir"]


def test_an_image_source_allowance_is_passed() -> None:
    argv = replace(AGENT, image_source_allow=LOOPBACK).argv()
    assert argv[argv.index("--image-source-allow") + 1] == "127.0.0.0/8"


CONTROLLER = ControllerOptions(Path("/kc"))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(CONTROLLER, {"kubeconfig": "/kc", "standalone": True}, id="standalone"),
        pytest.param(
            replace(CONTROLLER, standalone=False, peering="kubevisor", priority=200),
            {"standalone": False, "peering": "kubevisor", "priority": 200},
            id="peered-replica",
        ),
        pytest.param(
            replace(
                CONTROLLER,
                metrics_port=0,
                failover_grace=20,
                lease_namespace="leases",
                log_level="WARNING",
            ),
            {
                "metrics_port": 0,
                "failover_grace": 20.0,
                "lease_namespace": "leases",
                "log_level": "WARNING",
            },
            id="numbers-and-names",
        ),
    ],
)
def test_controller_options_reach_the_controllers_parser(
    options: ControllerOptions, expected: dict[str, Any]
) -> None:
    argv = options.argv()
    assert argv[:3] == [sys.executable, "-m", "kubevisor.handlers.main"]
    parsed = vars(controller_main.parse_args(argv[3:]))
    assert {key: _plain(parsed[key]) for key in expected} == expected


def _plain(value: object) -> object:
    return str(value) if isinstance(value, Path) else value
