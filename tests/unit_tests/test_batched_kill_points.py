"""The test-only kill points of a map: inert unless named, refused when malformed, exact when armed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.batched import kill_points
from agent.batched.kill_points import KILL_AT


def test_without_the_variable_nothing_is_killed_or_wrapped() -> None:
    marker = object()
    kill_points.reach("invoke")
    assert kill_points.watched(marker) is marker


def test_a_malformed_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in ("invoke", "invoke:0", "nowhere:1", "invoke:x"):
        monkeypatch.setenv(KILL_AT, setting)
        with pytest.raises(ValueError, match=KILL_AT):
            kill_points.reach("invoke")


def test_the_nth_pass_of_the_named_point_kills_the_process() -> None:
    script = (
        "from agent.batched import kill_points\n"
        "for n in range(1, 5):\n"
        "    kill_points.reach('pool')\n"
        "    kill_points.reach('invoke')\n"
        "    print(n, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={KILL_AT: "invoke:3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -9 and done.stdout.split() == ["1", "2"]
