"""The `lab` fixture: namespaces for two hosts, their underlay and guests (see lab.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drivers.hostnet import lab as labs
from drivers.hostnet.lab import Lab


@pytest.fixture
def lab() -> Iterator[Lab]:
    with labs.built() as world:
        yield world
