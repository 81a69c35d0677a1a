"""Benchmark: batch-agent's CLI against a plain openai+orjson script, on the emulator, in one run.

For each size (default 10,000 / 50,000 / 200,000 requests, each run `--repeat` times, default
3, reporting medians and the wall-time range) both run the same batch against one
loopback emulator (`batch-agent emulator serve`), each in its own process, both polling every
0.5 s (batch-agent's growing schedule is measured separately, with a simulated clock), and the table reports
wall time, requests per second, peak RSS, checkpoint database bytes, bytes written per poll step,
status calls, and the batch-agent / baseline ratios (goals: wall <= 1.5x, RSS <= 2x).

A third table (`bench/startup.py`) times start-up: `status`, `threads` and `run`'s first line.
A fourth (`bench/fastpath_micro.py`) gives each provider's body-building and result-parsing rates,
reference path against fast path (OpenAI, Mistral, Gemini). A fifth (`bench/map_bench.py`) runs a
user's three-step graph over 10,000 items with `batch-agent map` against three plain `run` calls.
A sixth (`bench/embed_bench.py`) exports 1,000,000 stored embeddings of 1,536 dimensions to
Parquet and `.npy` (wall, rows/s, MB/s, peak RSS; goal under 1 GiB) and runs `batch-agent embed`
on 100,000 texts against a plain openai SDK + numpy script. A seventh (`bench/scale_bench.py`)
plans 10,000,000 requests and runs 1,000,000 end to end against the plain script and under an
emulated enqueued-token quota (`--scale-sizes 20000,200000` for a quick look, `--no-scale` to skip).

A second table simulates polling with a fake clock against the emulator: how many status calls a
job of 1, 6 and 24 hours costs with the default backoff, and how late its completion is noticed.

    make bench                       # all sizes
    python bench/run.py --sizes 10000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import checkpoint_stats, measure, run_wait_command, start_emulator  # noqa: E402 (bench/harness.py, next to this script)


def write_input(path: Path, n: int) -> None:
    """Write `n` ticket-classification requests as JSONL."""
    with path.open("w") as fh:
        for i in range(n):
            fh.write(
                json.dumps(
                    {
                        "id": f"req-{i:07d}",
                        "prompt": f"Classify support ticket {i}: my invoice is wrong",
                    }
                )
                + "\n"
            )


def status_calls(state_dir: Path, since: float) -> int:
    """Count the batch status calls an emulator state directory received after `since`.

    One emulator serves every size and repeat of an implementation, so its log is cumulative.
    """
    from agent.emulator import read_access_log

    return sum(
        1
        for e in read_access_log(state_dir)
        if e["time"] >= since
        and e["method"] == "GET"
        and re.search(r"/batches/[^/]+$", e["path"].split("?")[0])
    )


def run_size(n: int, base: Path, url_for: dict[str, str]) -> list[dict[str, Any]]:
    """Run the baseline and batch-agent on `n` requests; return one table row each."""
    rows = []
    base.mkdir(parents=True, exist_ok=True)
    source = base / f"input-{n}.jsonl"
    write_input(source, n)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "MISTRAL_", "BATCH_AGENT_"))
    }
    env.update(OPENAI_API_KEY="bench", PYTHONUNBUFFERED="1")

    base_dir = base / f"baseline-{n}"
    base_dir.mkdir()
    started = time.time()
    wall, rss = measure(
        [
            sys.executable,
            str(ROOT / "bench" / "baseline.py"),
            str(source),
            str(base_dir / "out.jsonl"),
            "--base-url",
            url_for["baseline"],
        ],
        env,
        base_dir,
    )
    rows.append(
        {
            "size": n,
            "impl": "baseline",
            "wall": wall,
            "rss": rss,
            "db": 0,
            "per_poll": 0.0,
            "calls": status_calls(Path(url_for["baseline_dir"]), started),
        }
    )

    agent_dir = base / f"agent-{n}"
    agent_dir.mkdir()
    db = agent_dir / "checkpoints.sqlite"
    agent_env = {
        **env,
        "BATCH_AGENT_DB": str(db),
        "BATCH_AGENT_SPOOL_DIR": str(agent_dir / "spool"),
    }
    cmd = run_wait_command(source, url_for["agent"], agent_dir / "out.jsonl")
    started = time.time()
    wall, rss = measure(cmd, agent_env, agent_dir)
    size, per_poll = checkpoint_stats(db)
    rows.append(
        {
            "size": n,
            "impl": "batch-agent",
            "wall": wall,
            "rss": rss,
            "db": size,
            "per_poll": per_poll,
            "calls": status_calls(Path(url_for["agent_dir"]), started),
        }
    )
    for impl, out in (
        ("batch-agent", agent_dir / "out.jsonl"),
        ("baseline", base_dir / "out.jsonl"),
    ):
        with out.open("rb") as fh:
            ok = sum(1 for line in fh if b'"succeeded"' in line)
        assert ok == n, f"{impl} returned {ok} successful results for {n} requests"
    return rows


def median_row(group: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge repeated runs of one size and implementation: the median of every figure."""
    merged = dict(group[0])
    for key in ("wall", "rss", "db", "per_poll", "calls"):
        merged[key] = statistics.median(row[key] for row in group)
    merged["walls"] = sorted(row["wall"] for row in group)
    return merged


class FakeClock:
    """A clock that only moves when someone sleeps: a day of polling runs in a second."""

    def __init__(self) -> None:
        """Start at the real time."""
        self.now = time.time()

    def time(self) -> float:
        """Return the simulated time."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Advance the simulated time instead of waiting."""
        self.now += seconds


def simulate_polling(hours: list[int]) -> list[dict[str, Any]]:
    """Drive the CLI's `--wait` loop against the in-process emulator with a simulated clock.

    The emulator's modules and the drive loop (`agent.drive`) share one fake clock; the job
    takes `h` hours; we count
    the status calls the emulator received and how long after the job ended the CLI noticed.
    """
    from typer.testing import CliRunner

    from agent import drive
    from agent.cli.app import app
    from agent.context import Context
    from agent.emulator import read_access_log

    rows = []
    for h in hours:
        with tempfile.TemporaryDirectory() as tmp:
            clock = FakeClock()
            started = clock.now
            os.environ.update(
                BATCH_AGENT_EMULATOR_DIR=f"{tmp}/emu",
                BATCH_AGENT_EMULATOR_DELAY=str(h * 3600),
                BATCH_AGENT_SPOOL_DIR=f"{tmp}/spool",
            )
            modules = [
                m
                for name, m in list(sys.modules.items())
                if name.startswith("agent.emulator") and getattr(m, "time", None) is time
            ]
            for module in [*modules, drive]:
                module.time = clock  # type: ignore[attr-defined]
            try:
                src = Path(tmp) / "in.jsonl"
                write_input(src, 10)
                args = [
                    "run",
                    str(src),
                    "--provider",
                    "emulator",
                    "--thread",
                    "sim",
                    "--db",
                    f"{tmp}/db.sqlite",
                    "--wait",
                    "--out",
                    f"{tmp}/out.jsonl",
                ]
                result = CliRunner().invoke(app, args)
                if result.exit_code != 0:
                    raise RuntimeError(result.output)
                calls = sum(
                    1
                    for e in read_access_log(f"{tmp}/emu")
                    if e["method"] == "GET" and "/batches/batch_" in e["path"]
                )
            finally:
                for module in [*modules, drive]:
                    module.time = time  # type: ignore[attr-defined]
            ctx = Context()
            rows.append(
                {
                    "hours": h,
                    "calls": calls,
                    "noticed_after_s": clock.now - (started + h * 3600),
                    "schedule": f"{ctx.poll_interval_seconds:g} s x{ctx.poll_backoff:g}, cap {ctx.max_poll_interval_seconds:g} s, ±{ctx.poll_jitter:.0%}",
                }
            )
    return rows


def main() -> None:
    """Run every size, print the comparison and the polling simulation."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--no-simulation", action="store_true")
    parser.add_argument("--no-startup", action="store_true", help="skip bench/startup.py")
    parser.add_argument("--no-fastpath", action="store_true", help="skip bench/fastpath_micro.py")
    parser.add_argument("--no-map", action="store_true", help="skip bench/map_bench.py")
    parser.add_argument("--map-items", type=int, default=10_000, help="items of bench/map_bench.py")
    parser.add_argument("--no-embed", action="store_true", help="skip bench/embed_bench.py")
    parser.add_argument("--no-scale", action="store_true", help="skip bench/scale_bench.py")
    parser.add_argument(
        "--scale-sizes",
        default="1000000,10000000",
        help="bench/scale_bench.py's SMALL,LARGE: end to end and quota, and planned "
        "(20000,200000 runs in about a minute)",
    )
    parser.add_argument(
        "--embed-vectors", type=int, default=1_000_000, help="vectors bench/embed_bench.py exports"
    )
    parser.add_argument(
        "--embed-texts", type=int, default=100_000, help="texts bench/embed_bench.py embeds"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per size; the table shows medians (this machine's timings vary by ±15%%)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    # Like any installed package, start from compiled bytecode (an editable install has none,
    # and PYTHONDONTWRITEBYTECODE would make every run recompile agent/).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "agent")], check=True)
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    with tempfile.TemporaryDirectory(prefix="batch-agent-bench-") as tmp:
        base = Path(tmp)
        processes = []
        try:
            urls: dict[str, str] = {}
            for name in ("baseline", "agent"):
                state = base / f"emulator-{name}"
                process, url = start_emulator(state, "1")
                processes.append(process)
                urls[name] = f"{url}/openai/v1"
                urls[f"{name}_dir"] = str(state)
            runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
            for n in sizes:
                for attempt in range(1, args.repeat + 1):
                    console.print(
                        f"[bold]running {n:,} requests ({attempt}/{args.repeat})...[/bold]"
                    )
                    for row in run_size(n, base / f"run-{attempt}", urls):
                        runs.setdefault((n, row["impl"]), []).append(row)
            rows = [median_row(group) for group in runs.values()]
        finally:
            for process in processes:
                process.terminate()
                process.wait()

    table = Table(
        title="batch-agent vs plain openai+orjson script (emulator over loopback, job delay 1 s)"
    )
    for column in (
        "requests",
        "impl",
        "wall s (range)",
        "req/s",
        "peak RSS MiB",
        "checkpoint DB",
        "bytes/poll step",
        "status calls",
    ):
        table.add_column(column, justify="right")
    by_size: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_size.setdefault(row["size"], {})[row["impl"]] = row
        table.add_row(
            f"{row['size']:,}",
            row["impl"],
            f"{row['wall']:.1f} ({row['walls'][0]:.1f}-{row['walls'][-1]:.1f})",
            f"{row['size'] / row['wall']:,.0f}",
            f"{row['rss']:.0f}",
            f"{row['db']:,.0f}",
            f"{row['per_poll']:,.0f}",
            f"{row['calls']:g}",
        )
    for n, pair in by_size.items():
        a, b = pair["batch-agent"], pair["baseline"]
        table.add_row(
            f"{n:,}",
            "[bold]ratio[/bold]",
            f"{a['wall'] / b['wall']:.2f}x",
            "",
            f"{a['rss'] / b['rss']:.2f}x",
            "",
            "",
            "",
        )
    console.print(table)
    console.print(
        "goals: wall <= 1.5x and peak RSS <= 2x the baseline at every size; bytes/poll step < 20 KB"
    )

    if not args.no_simulation:
        sim = Table(title="polling with a simulated clock against the emulator (defaults), one job")
        for column in ("job takes", "status calls", "completion noticed after", "schedule"):
            sim.add_column(column, justify="right")
        for row in simulate_polling([1, 6, 24]):
            sim.add_row(
                f"{row['hours']} h",
                f"{row['calls']:g}",
                f"{row['noticed_after_s']:.0f} s",
                row["schedule"],
            )
        console.print(sim)

    if not args.no_startup:
        import startup  # bench/startup.py, next to this script

        startup.print_table(startup.measure())

    if not args.no_fastpath:
        import fastpath_micro  # bench/fastpath_micro.py, next to this script

        console.print("[bold]fast paths: building and parsing rates per provider[/bold]")
        fastpath_micro.main([])

    if not args.no_map:
        import map_bench  # bench/map_bench.py, next to this script

        console.print("[bold]a user's graph over a dataset: map against plain run calls[/bold]")
        map_bench.main(["--items", str(args.map_items)])

    if not args.no_embed:
        import embed_bench  # bench/embed_bench.py, next to this script

        console.print(
            "[bold]embeddings: export to Parquet / .npy, and embed against plain SDK[/bold]"
        )
        embed_bench.main(["--vectors", str(args.embed_vectors), "--texts", str(args.embed_texts)])

    if not args.no_scale:
        import scale_bench  # bench/scale_bench.py, next to this script

        console.print(
            "[bold]scale: plan 10,000,000 requests; 1,000,000 end to end and under a quota[/bold]"
        )
        scale_bench.main(["--sizes", args.scale_sizes])


if __name__ == "__main__":
    main()
