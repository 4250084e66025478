"""Configurators of the general elements: the security label."""

from __future__ import annotations

import pytest

from kubevisor.core.domain import converter
from kubevisor.core.domain.document import DomainError
from kubevisor.core.domain.host import HostEnvironment

from .builders import vm


@pytest.mark.parametrize(
    "security_model",
    [pytest.param(None, id="unknown"), pytest.param("none", id="none")],
)
def test_confinement_needs_a_security_driver(security_model: str | None) -> None:
    machine = vm({"memory": {"size": "64Mi"}, "security": {"requireConfinement": True}})
    host = HostEnvironment(domain_type="kvm", security_model=security_model)
    with pytest.raises(DomainError, match="security driver"):
        converter.render(machine, host=host)
