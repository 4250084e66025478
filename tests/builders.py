"""Manifests of kubevisor's objects as the tests apply them (importable as `builders`):
the apiVersion/kind/metadata wrapping written once, the spec as each test gives it."""

from __future__ import annotations

from typing import Any

from kubevisor.api.wire import API_VERSION


def vm(name: str, *, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    """A VirtualMachine with `spec` as given (its namespace, if any)."""
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {"apiVersion": API_VERSION, "kind": "VirtualMachine", "metadata": metadata, "spec": spec}


def tiny_vm(name: str, **spec: Any) -> dict[str, Any]:
    """A VirtualMachine of 128 MiB (what the testbed guest needs under TCG) unless `spec`
    says otherwise."""
    return vm(name, **{"memory": {"size": "128Mi"}, **spec})


def hvh(name: str, **spec: Any) -> dict[str, Any]:
    """A HypervisorHost with `spec` as given."""
    return {
        "apiVersion": API_VERSION,
        "kind": "HypervisorHost",
        "metadata": {"name": name},
        "spec": spec,
    }
