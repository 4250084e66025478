"""core/drain.py: each resident VM's next step, and the host's drain progress."""

from __future__ import annotations

import pytest

from kubevisor.core import drain
from kubevisor.core.drain import MAX_ATTEMPTS, Progress, Resident, Step


def _vm(name: str = "a", **fields: object) -> Resident:
    values: dict[str, object] = {"strategy": "LiveMigrate", "phase": "Running", **fields}
    return Resident(name=name, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("resident", "expected"),
    [
        pytest.param(_vm(), Step.MIGRATE, id="running-live-migrate-migrates"),
        pytest.param(_vm(phase="Paused"), Step.MIGRATE, id="paused-live-migrate-migrates"),
        pytest.param(
            _vm(phase="Migrating"), Step.MIGRATE, id="migrating-phase-without-a-job-migrates"
        ),
        pytest.param(_vm(phase="Stopped"), Step.EVICT, id="stopped-live-migrate-moves-cold"),
        pytest.param(_vm(phase="Starting"), Step.EVICT, id="starting-live-migrate-moves-cold"),
        pytest.param(_vm(phase="Failed"), Step.EVICT, id="failed-live-migrate-moves-cold"),
        pytest.param(_vm(phase="Scheduled"), Step.EVICT, id="scheduled-live-migrate-moves-cold"),
        pytest.param(_vm(phase=None), Step.EVICT, id="no-phase-yet-moves-cold"),
        pytest.param(_vm(strategy="Shutdown"), Step.EVICT, id="shutdown-evicts-a-running-vm"),
        pytest.param(
            _vm(strategy="Shutdown", phase="Stopped"), Step.EVICT, id="shutdown-evicts-stopped"
        ),
        pytest.param(_vm(live_migration=False), Step.EVICT, id="live-migrate-on-lxc-moves-cold"),
        pytest.param(
            _vm(live_migration=False, migrating=True), Step.WAIT, id="admin-job-on-lxc-waits"
        ),
        pytest.param(
            _vm(strategy="None", live_migration=False), Step.BLOCKED, id="none-on-lxc-blocks"
        ),
        pytest.param(_vm(strategy="None"), Step.BLOCKED, id="none-blocks"),
        pytest.param(
            _vm(strategy="None", phase="Stopped"), Step.BLOCKED, id="none-blocks-even-stopped"
        ),
        pytest.param(_vm(migrating=True), Step.WAIT, id="job-in-flight-waits"),
        pytest.param(_vm(evicting=True), Step.WAIT, id="eviction-under-way-waits"),
        pytest.param(
            _vm(strategy="None", migrating=True), Step.WAIT, id="admin-migration-of-none-waits"
        ),
        pytest.param(
            _vm(migrating=True, failed_migrations=MAX_ATTEMPTS),
            Step.WAIT,
            id="job-in-flight-waits-past-the-threshold",
        ),
        pytest.param(
            _vm(failed_migrations=MAX_ATTEMPTS - 1),
            Step.MIGRATE,
            id="retried-below-the-threshold",
        ),
        pytest.param(
            _vm(failed_migrations=MAX_ATTEMPTS), Step.BLOCKED, id="blocked-at-the-threshold"
        ),
        pytest.param(
            _vm(failed_migrations=MAX_ATTEMPTS + 2),
            Step.BLOCKED,
            id="blocked-past-the-threshold",
        ),
        pytest.param(
            _vm(phase="Stopped", failed_migrations=MAX_ATTEMPTS),
            Step.EVICT,
            id="stopped-after-failed-migrations-moves-cold",
        ),
    ],
)
def test_step(resident: Resident, expected: Step) -> None:
    assert drain.step(resident) is expected


@pytest.mark.parametrize(
    ("residents", "expected"),
    [
        pytest.param(
            [],
            Progress("Drained", 0, 0, 0, 0, "no VMs left on the host"),
            id="drained-with-none-left",
        ),
        pytest.param(
            [_vm("a", migrating=True), _vm("b", strategy="Shutdown", evicting=True)],
            Progress("Draining", 2, 1, 1, 0, "2 VMs left: 1 migrating, 1 stopping"),
            id="draining-counts-migrating-and-stopping",
        ),
        pytest.param(
            [_vm("a")],
            Progress("Draining", 1, 0, 0, 0, "1 VMs left: 0 migrating, 0 stopping"),
            id="draining-before-the-first-step",
        ),
        pytest.param(
            [_vm("a", strategy="None"), _vm("b", migrating=True)],
            Progress(
                "Draining",
                2,
                1,
                0,
                1,
                "2 VMs left: 1 migrating, 0 stopping; blocked by a (evictionStrategy None)",
            ),
            id="one-blocked-among-others-is-still-draining",
        ),
        pytest.param(
            [_vm("a", strategy="None")],
            Progress(
                "Blocked",
                1,
                0,
                0,
                1,
                "1 VMs left: 0 migrating, 0 stopping; blocked by a (evictionStrategy None)",
            ),
            id="blocked-when-the-only-vm-is-blocked",
        ),
        pytest.param(
            [_vm("a", strategy="None"), _vm("b", failed_migrations=MAX_ATTEMPTS)],
            Progress(
                "Blocked",
                2,
                0,
                0,
                2,
                "2 VMs left: 0 migrating, 0 stopping; blocked by a (evictionStrategy None), "
                f"b ({MAX_ATTEMPTS} failed migrations)",
            ),
            id="blocked-when-every-vm-is-blocked-naming-each",
        ),
        pytest.param(
            [_vm("b", failed_migrations=MAX_ATTEMPTS - 1)],
            Progress("Draining", 1, 0, 0, 0, "1 VMs left: 0 migrating, 0 stopping"),
            id="failed-migrations-below-the-threshold-do-not-block",
        ),
        pytest.param(
            [_vm("b", failed_migrations=MAX_ATTEMPTS, migrating=True)],
            Progress("Draining", 1, 1, 0, 0, "1 VMs left: 1 migrating, 0 stopping"),
            id="a-new-job-in-flight-unblocks",
        ),
    ],
)
def test_progress(residents: list[Resident], expected: Progress) -> None:
    assert drain.progress(residents) == expected


def test_progress_wire_form_is_the_host_drain_status() -> None:
    wire = drain.progress([_vm("a", strategy="None")]).to_wire()
    assert wire == {
        "phase": "Blocked",
        "remaining": 1,
        "migrating": 0,
        "stopping": 0,
        "blocked": 1,
        "message": "1 VMs left: 0 migrating, 0 stopping; blocked by a (evictionStrategy None)",
    }
