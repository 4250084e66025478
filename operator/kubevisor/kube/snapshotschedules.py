"""The controller's calls for snapshot schedules (handlers/snapshotschedules.py): the
snapshots of one schedule, creating and deleting them, the schedule's status. Kept beside
`Kube` so retention stays one module."""

from __future__ import annotations

from typing import cast

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from kubevisor.api.wire import GROUP, SCHEDULE_LABEL, SNAPSHOT_SCHEDULES, SNAPSHOTS, VERSION
from kubevisor.kube.client import Kube, Object, counted


class ScheduleApi:
    """Snapshot schedules and their snapshots through `kube` (its field manager owns the
    schedule status it applies)."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    @counted("LIST")
    async def snapshots(self, namespace: str, schedule: str) -> list[Object]:
        """The VirtualMachineSnapshots labelled with `schedule` in `namespace`."""
        reply = await self._kube.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            SNAPSHOTS.plural,
            label_selector=f"{SCHEDULE_LABEL}={schedule}",
        )
        return list(cast(Object, reply)["items"])

    @counted("POST")
    async def create(self, namespace: str, body: Object) -> bool:
        """Create the snapshot `body`; False when one of its name exists already (this
        schedule's, created by an earlier pass or another controller)."""
        try:
            await self._kube.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, SNAPSHOTS.plural, body,
                field_manager=self._kube.field_manager,
            )  # fmt: skip
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    @counted("DELETE")
    async def delete(self, namespace: str, name: str, *, uid: str) -> bool:
        """Delete the snapshot `name` while it is still the object `uid`; whether this call
        deleted it (one gone already, or replaced, is fine)."""
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
        try:
            await self._kube.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, SNAPSHOTS.plural, name, body=options
            )
        except ApiException as error:
            if error.status in (404, 409):
                return False
            raise
        return True

    @counted("APPLY")
    async def apply_status(self, namespace: str, name: str, status: Object) -> Object:
        return await self._kube.apply_object_status(
            SNAPSHOT_SCHEDULES.kind, SNAPSHOT_SCHEDULES.plural, namespace, name, status,
            self._kube.field_manager,
        )  # fmt: skip
