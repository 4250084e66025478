"""The VMs bound to this agent's host, as its watch last delivered them.

The agent's watch fills it; the other parts read it. A VM's uid is kept after the VM
is gone (deleted, or bound to another host) until the reconciler removed its domain, so
fencing does not take that domain for a stray meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kubevisor.kube.client import Object


def key_of(obj: Object) -> str:
    """namespace/name of an object."""
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


class BoundVms:
    def __init__(self) -> None:
        self._objects: dict[str, Object] = {}
        """By namespace/name."""
        self._uids: dict[str, str] = {}
        """Last known uid per key, kept after deletion until the domain is gone."""
        self._keys: dict[str, str] = {}
        """Key per uid, for libvirt's events (which name the domain's uuid, the VM's uid)."""

    # -- what the watch tells ------------------------------------------------------------

    def replace(self, objects: Iterable[Object]) -> None:
        """A fresh listing: exactly these VMs are bound here now."""
        self._objects = {}
        for obj in objects:
            self.remember(obj)

    def remember(self, obj: Object) -> str:
        """A VM added or changed; returns its key."""
        key = key_of(obj)
        uid = obj["metadata"]["uid"]
        self._objects[key] = obj
        old = self._uids.get(key)
        if old is not None and old != uid:
            # Same name, new object: the old domain is a stray now.
            self._keys.pop(old, None)
        self._uids[key] = uid
        self._keys[uid] = key
        return key

    def unbound(self, key: str) -> None:
        """Deleted, or bound to another host: its uid stays until `forget`."""
        self._objects.pop(key, None)

    def forget(self, key: str) -> None:
        """The VM's domain and files are gone from this host: nothing of it is left."""
        uid = self._uids.pop(key, None)
        if uid is not None:
            self._keys.pop(uid, None)

    # -- what the other parts ask --------------------------------------------------------

    def get(self, key: str) -> Object | None:
        return self._objects.get(key)

    def uid(self, key: str) -> str | None:
        """The VM's uid, also after it left until `forget`."""
        return self._uids.get(key)

    def key(self, uid: str) -> str | None:
        """The key of the VM with this uid, also after it left until `forget`."""
        return self._keys.get(uid)

    def is_bound(self, uid: str) -> bool:
        """A VM with this uid is bound here now."""
        key = self._keys.get(uid)
        return key is not None and key in self._objects

    def known_uids(self) -> set[str]:
        """uids of the VMs bound here and of those whose domains are still to remove."""
        return set(self._keys)

    def keys(self) -> list[str]:
        return list(self._objects)

    def objects(self) -> Iterator[Object]:
        return iter(list(self._objects.values()))

    def __iter__(self) -> Iterator[str]:
        """The keys of the VMs bound here."""
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._objects)
