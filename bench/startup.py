"""Benchmark: how fast `batch-agent` starts (read-only commands, and `run`'s first line).

On a real small database (one finished emulator batch of 3 requests), the median of 7 runs of:

- `batch-agent status THREAD` and `batch-agent threads` (goal: at most 0.5 s on the project's
  2-core machine): they only read the checkpoint, so they must not import LangGraph, LangChain,
  the provider SDKs or numpy;
- `batch-agent run INPUT` until its first line on stderr (goal: within 1.5 s);

against `python -c pass` (the interpreter alone) and `python -c "import openai"` (one SDK).

    python bench/startup.py          # also run by bench/run.py (`make bench`)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNS = 7
GOALS = {"status": 0.5, "threads": 0.5, "run: first line": 1.5}


def _env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        BATCH_AGENT_DB=str(base / "db.sqlite"),
        BATCH_AGENT_EMULATOR_DIR=str(base / "emulator"),
        BATCH_AGENT_SPOOL_DIR=str(base / "spool"),
        BATCH_AGENT_EMULATOR_DELAY="0",
    )
    return env


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds until `cmd` exits (it must succeed)."""
    started = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def _first_line(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds until `cmd` writes its first line on stderr (then it is left to finish)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    process.stderr.readline()
    elapsed = time.perf_counter() - started
    process.communicate()
    return elapsed


def measure() -> list[dict[str, Any]]:
    """Build the small database, then time each command `RUNS` times; return the medians."""
    cli = str(BIN / "batch-agent")
    with tempfile.TemporaryDirectory(prefix="batch-agent-startup-") as tmp:
        base = Path(tmp)
        env = _env(base)
        source = base / "in.jsonl"
        source.write_text(
            "".join(json.dumps({"id": f"r{i}", "prompt": f"Say {i}"}) + "\n" for i in range(3))
        )
        finished = [cli, "run", str(source), "--provider", "emulator", "--thread", "T"]
        subprocess.run(
            [*finished, "--wait", "--poll-interval", "0.2", "--out", str(base / "out.jsonl")],
            env=env,
            cwd=base,
            check=True,
            capture_output=True,
        )
        cases: dict[str, Any] = {
            "python -c pass": lambda: _timed([sys.executable, "-c", "pass"], env, base),
            'python -c "import openai"': lambda: _timed(
                [sys.executable, "-c", "import openai"], env, base
            ),
            "status": lambda: _timed([cli, "status", "T"], env, base),
            "threads": lambda: _timed([cli, "threads"], env, base),
            "run: first line": lambda: _first_line(
                [cli, "run", str(source), "--provider", "emulator"], env, base
            ),
        }
        rows = []
        for name, case in cases.items():
            times = sorted(case() for _ in range(RUNS))
            rows.append(
                {
                    "command": name,
                    "median": statistics.median(times),
                    "min": times[0],
                    "max": times[-1],
                    "goal": GOALS.get(name),
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print the medians, ranges and goals as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"start-up: median of {RUNS} runs on a small real database")
    for column in ("command", "median s", "range s", "goal s"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for row in rows:
        goal = row["goal"]
        verdict = "" if goal is None else (" ok" if row["median"] <= goal else " OVER")
        table.add_row(
            row["command"],
            f"{row['median']:.2f}",
            f"{row['min']:.2f}-{row['max']:.2f}",
            "" if goal is None else f"{goal:.1f}{verdict}",
        )
    Console(width=150).print(table)


def main() -> None:
    """Measure and print."""
    # Like any installed package, start from compiled bytecode (an editable install has none).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "agent")], check=True)
    print_table(measure())


if __name__ == "__main__":
    main()
