"""Unit tests wait in virtual time: every graph and drive-loop pause advances the emulator's clock.

A test that needs real time (threads racing in real time, an emulator in another process or on
its own clock, `create_delay`) opts out with `@pytest.mark.realtime`.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _virtual_waits_unless_realtime(request: pytest.FixtureRequest) -> None:
    """Use `virtual_waits` (tests/conftest.py) for every unit test not marked `realtime`."""
    if request.node.get_closest_marker("realtime") is None:
        request.getfixturevalue("virtual_waits")
