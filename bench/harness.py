"""What every benchmark script shares: the venv's commands, a measured child process, the emulator.

`bench/run.py` runs the benchmarks; `map_bench.py` and `embed_bench.py` are run by it and alone,
so what they share lives here rather than in `run.py` (which imports them).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The venv's `bin`: `batch-agent` and `python` of the interpreter running the bench.
BIN = Path(sys.executable).parent


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Run `cmd`; return (wall seconds, peak RSS in MiB of that process tree's largest member).

    Its stderr goes to a temporary file, not a pipe: a long `run --wait` (quota waits) writes
    more progress than a pipe holds, and a pipe nobody reads until the end would block it.
    """
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            stderr = errors.read().decode(errors="replace")
            raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def start_emulator(
    state_dir: Path, delay: str, faults: str = ""
) -> tuple[subprocess.Popen[str], str]:
    """Start `batch-agent emulator serve` on a free loopback port; return it and its URL.

    `faults` is its `BATCH_AGENT_EMULATOR_FAULTS` (e.g. a quota: `enqueued_token_limit=N`).
    """
    env = {**os.environ, "BATCH_AGENT_EMULATOR_DELAY": delay}
    env.pop("BATCH_AGENT_EMULATOR_FAULTS", None)
    if faults:
        env["BATCH_AGENT_EMULATOR_FAULTS"] = faults
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


def checkpoint_stats(db: Path) -> tuple[int, float]:
    """Return the database size and the mean bytes one poll step writes (its writes + checkpoint)."""
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    with sqlite3.connect(db) as conn:
        ordered = conn.execute(
            "SELECT checkpoint_id, LENGTH(checkpoint) + LENGTH(metadata) FROM checkpoints ORDER BY checkpoint_id"
        ).fetchall()
        poll_writes = dict(
            conn.execute(
                "SELECT checkpoint_id, SUM(LENGTH(value)) FROM writes WHERE task_path LIKE '%, poll' GROUP BY checkpoint_id"
            ).fetchall()
        )
    steps = [
        poll_writes[cid] + ordered[i + 1][1]
        for i, (cid, _) in enumerate(ordered[:-1])
        if cid in poll_writes
    ]
    return size, (sum(steps) / len(steps)) if steps else 0.0


def run_wait_command(source: Path, url: str, out: Path, *extra: str) -> list[str]:
    """Return the `batch-agent run --wait` command the benchmarks time.

    The OpenAI protocol at `url`, a constant 0.5 s between polls (as the baselines poll).
    """
    return [
        str(BIN / "batch-agent"),
        "run",
        str(source),
        "--provider",
        "openai",
        "--base-url",
        url,
        "--wait",
        "--poll-interval",
        "0.5",
        "--poll-backoff",
        "1",
        "--out",
        str(out),
        *extra,
    ]
