"""What every benchmark script shares: the venv's commands, a measured child process, the emulator.

`bench/run.py` runs the benchmarks; `map_bench.py` and `embed_bench.py` are run by it and alone,
so what they share lives here rather than in `run.py` (which imports them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

# The venv's `bin`: `batch-agent` and `python` of the interpreter running the bench.
BIN = Path(sys.executable).parent


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Run `cmd`; return (wall seconds, peak RSS in MiB of that process tree's largest member)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def start_emulator(state_dir: Path, delay: str) -> tuple[subprocess.Popen[str], str]:
    """Start `batch-agent emulator serve` on a free loopback port; return it and its URL."""
    env = {**os.environ, "BATCH_AGENT_EMULATOR_DELAY": delay}
    env.pop("BATCH_AGENT_EMULATOR_FAULTS", None)
    process = subprocess.Popen(
        [str(BIN / "batch-agent"), "emulator", "serve", "--port", "0", "--dir", str(state_dir)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", process.stdout.readline())
    if not match:
        raise RuntimeError("the emulator did not start")
    return process, match.group(1)
