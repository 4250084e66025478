"""Shared command-line flags: each default read from the value it fills, so the
controller, the agent and the CLI's what-ifs start from the same numbers."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from kubevisor import flags
from kubevisor.agent import main as agent_main
from kubevisor.agent.settings import Settings as AgentSettings
from kubevisor.api import hypervisorhost, wire
from kubevisor.cli import main as cli_main
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.scheduler import Options
from kubevisor.core.placement.weighers import Multipliers
from kubevisor.handlers import main as controller_main
from kubevisor.handlers.controller import Settings as ControllerSettings


def placement(argv: list[str], *, subset: bool = True) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    flags.add_placement(parser, subset=subset)
    return parser.parse_args(argv)


def test_placement_defaults_are_the_values_defaults() -> None:
    args = placement([])
    assert (flags.ratios(args), flags.scheduler_options(args), flags.multipliers(args)) == (
        AllocationRatios(),
        Options(),
        Multipliers(),
    )


def test_the_default_cpu_ratio_is_the_apis() -> None:
    assert AllocationRatios().cpu == hypervisorhost.DEFAULT_CPU_RATIO == 4.0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            ["--cpu-ratio", "8", "--disk-ratio", "1.5"],
            (AllocationRatios(cpu=8.0, disk=1.5), Options(), Multipliers()),
            id="ratios",
        ),
        pytest.param(
            ["--host-subset-size", "3"],
            (AllocationRatios(), Options(host_subset_size=3), Multipliers()),
            id="subset",
        ),
        pytest.param(
            ["--weigher-multiplier", "ram=-1", "--weigher-multiplier", "cpu=2"],
            (AllocationRatios(), Options(), Multipliers(ram=-1.0, cpu=2.0)),
            id="multipliers-repeat",
        ),
    ],
)
def test_placement_flags(argv: list[str], expected: tuple[object, ...]) -> None:
    args = placement(argv)
    assert (flags.ratios(args), flags.scheduler_options(args), flags.multipliers(args)) == expected


def test_without_subset_there_is_no_subset_flag() -> None:
    with pytest.raises(SystemExit):
        placement(["--host-subset-size", "2"], subset=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Example:
    required: str
    plain: int = 7
    made: list[str] = field(default_factory=list)


@pytest.mark.parametrize(
    ("name", "expected"),
    [pytest.param("plain", 7, id="plain-default")],
)
def test_default(name: str, expected: object) -> None:
    assert flags.default(Example, name) == expected


@pytest.mark.parametrize("name", ["required", "made"])
def test_no_plain_default_is_an_error(name: str) -> None:
    with pytest.raises(ValueError, match="has no plain default"):
        flags.default(Example, name)


def test_controller_flags_default_to_its_settings() -> None:
    args = controller_main.parse_args([])
    settings = ControllerSettings()
    limits = settings.migration_limits
    assert (
        args.lease_namespace,
        args.heartbeat_timeout,
        args.failover_grace,
        (args.max_migrations, args.max_outbound_migrations, args.max_inbound_migrations),
        flags.ratios(args),
        flags.scheduler_options(args),
        flags.multipliers(args),
        args.metrics_port,
    ) == (
        settings.lease_namespace,
        settings.heartbeat_timeout,
        settings.failover_grace,
        (limits.per_cluster, limits.outbound_per_host, limits.inbound_per_host),
        settings.ratios,
        settings.options,
        settings.multipliers,
        9090,
    )


def test_agent_flags_default_to_its_settings() -> None:
    args = agent_main.parse_args(["--host", "h1"])
    assert (
        args.lease_namespace,
        args.lease_duration,
        args.shutdown_grace,
        args.resync_interval,
        args.metrics_port,
    ) == (wire.SYSTEM_NAMESPACE, 40, 30.0, 300.0, 9091)
    assert args.lease_duration == flags.default(AgentSettings, "lease_duration")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["simulate", "--hosts", "h.yaml", "--vms", "v.yaml"], id="simulate"),
        pytest.param(["explain-placement", "vm", "--what-if"], id="explain-placement"),
    ],
)
def test_cli_what_ifs_place_as_the_controller_does(argv: list[str]) -> None:
    args = cli_main.build_parser().parse_args(argv)
    controller = controller_main.parse_args([])
    assert (flags.ratios(args), flags.multipliers(args)) == (
        flags.ratios(controller),
        flags.multipliers(controller),
    )
