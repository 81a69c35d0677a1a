"""Scale figures: planning 10,000,000 requests, and 1,000,000 end to end, with and without a quota.

Three kinds of row, every one a separate process measured by `harness.measure` (wall time, peak
RSS of the process):

- `plan` (nothing uploaded) of the small and the large size (default 1,000,000 and 10,000,000
  requests, written once to a temporary directory): wall, peak RSS and the RSS ratio large/small,
  which stays near 1 when memory is bounded (ids and dedupe keys spill to disk,
  `agent.first_seen`; ids are spooled to files, `agent.id_spool`).
- The small size end to end on a loopback emulator (job delay 1 s): the plain openai+orjson script
  (`bench/baseline.py`) and `batch-agent run --wait`, in the same run: wall, the ratio (goal
  <= 1.3x), peak RSS (goal < 1 GiB) and bytes one poll step writes to the checkpoint database
  (goal < 20 KB; `harness.checkpoint_stats`).
- The small size under an emulated OpenAI enqueued-token quota (`enqueued_token_limit`, 20,000,000
  at 1,000,000 requests, scaled with the size; job delay 20 s, so jobs meet it), with prompts of
  50 tokens (the emulator's count) so the batch holds 2.5x the quota: once learned from the provider's
  refusal, once set with `--max-enqueued-tokens`. It reports the jobs that ran, the waves (the
  jobs in creation order, grouped into runs whose tokens fit the quota), the refused creates, the
  thread's failed jobs (goal 0) and wall.

    python bench/scale_bench.py                          # 1,000,000 and 10,000,000 (~15 min)
    python bench/scale_bench.py --sizes 20000,200000     # a developer's minute
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import BIN, checkpoint_stats, measure, run_wait_command, start_emulator  # noqa: E402 (next to this)

# The quota: 20,000,000 enqueued tokens for 1,000,000 requests; smaller runs scale it,
# and the per-job request cap (OpenAI's 50,000), so they run the same number of jobs and waves.
QUOTA_PER_REQUEST = 20
JOBS_AT_ANY_SIZE = 20
# "ticket N says: " and 44 words: the emulator counts 3 + words per message, 50 tokens, 2.5x the
# quota in all.
LONG_PROMPT = " ".join(["word"] * 44)
# Under the quota, jobs run 20 s: longer than it takes to upload the jobs that fill the quota,
# so they meet it (with 1 s, each job ends before the next few are uploaded).
QUOTA_JOB_DELAY = "20"


def write_input(path: Path, n: int, *, long: bool = False) -> int:
    """Write `n` requests as JSONL (short ticket prompts, or 52-token ones); return its bytes."""
    with path.open("w") as fh:
        for i in range(n):
            prompt = (
                f"ticket {i} says: {LONG_PROMPT}"
                if long
                else f"Classify support ticket {i}: my invoice is wrong"
            )
            fh.write(f'{{"id":"r{i:08d}","prompt":"{prompt}"}}\n')
    return path.stat().st_size


def clean_env(**extra: str) -> dict[str, str]:
    """Return the environment without provider or batch-agent settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "MISTRAL_", "BATCH_AGENT_"))
    }
    env.update(OPENAI_API_KEY="bench", PYTHONUNBUFFERED="1", **extra)
    return env


def plan_row(source: Path, n: int, work: Path) -> dict[str, Any]:
    """Time `batch-agent plan` of `source` (`n` requests): nothing built, nothing uploaded."""
    work.mkdir(parents=True, exist_ok=True)
    env = clean_env(BATCH_AGENT_SPOOL_DIR=str(work / "spool"), TMPDIR=str(work))
    cmd = [str(BIN / "batch-agent"), "plan", str(source), "--provider", "openai", "--json"]
    wall, rss = measure(cmd, env, work)
    return {"row": "plan", "size": n, "wall": wall, "rss": rss}


def agent_run(
    source: Path, url: str, work: Path, *extra: str, env_extra: dict[str, str] | None = None
) -> tuple[float, float, Path]:
    """Run `batch-agent run --wait` on `source`; return wall, peak RSS and its database."""
    work.mkdir(parents=True)
    db = work / "checkpoints.sqlite"
    env = clean_env(
        BATCH_AGENT_DB=str(db),
        BATCH_AGENT_SPOOL_DIR=str(work / "spool"),
        TMPDIR=str(work),
        **(env_extra or {}),
    )
    cmd = run_wait_command(source, url, work / "out.jsonl", "--thread", "scale", *extra)
    wall, rss = measure(cmd, env, work)
    return wall, rss, db


def succeeded(out: Path) -> int:
    """Count the succeeded result lines of an output file."""
    with out.open("rb") as fh:
        return sum(1 for line in fh if b'"succeeded"' in line)


def end_to_end_rows(source: Path, n: int, base: Path) -> list[dict[str, Any]]:
    """Run the plain script and batch-agent on `n` requests, each on its own emulator."""
    rows = []
    for impl in ("baseline", "batch-agent"):
        process, url = start_emulator(base / f"emulator-{impl}", "1")
        try:
            work = base / f"e2e-{impl}"
            if impl == "baseline":
                work.mkdir()
                cmd = [
                    sys.executable,
                    str(ROOT / "bench" / "baseline.py"),
                    str(source),
                    str(work / "out.jsonl"),
                    "--base-url",
                    f"{url}/openai/v1",
                ]
                wall, rss = measure(cmd, clean_env(), work)
                per_poll = 0.0
            else:
                wall, rss, db = agent_run(source, f"{url}/openai/v1", work)
                _, per_poll = checkpoint_stats(db)
        finally:
            process.terminate()
            process.wait()
        ok = succeeded(work / "out.jsonl")
        assert ok == n, f"{impl} returned {ok} successful results for {n} requests"
        rows.append({"row": impl, "size": n, "wall": wall, "rss": rss, "per_poll": per_poll})
        shutil.rmtree(work)  # a million results: keep the disk for the next row
    return rows


def waves(jobs: list[dict[str, Any]], per_request: int, quota: int) -> int:
    """Group jobs in creation order into runs whose prompt tokens fit `quota`; count the runs."""
    count, held = 0, quota + 1
    for job in sorted(jobs, key=lambda job: job["created_at"]):
        tokens = job["request_count"] * per_request
        if held + tokens > quota:
            count, held = count + 1, 0
        held += tokens
    return count


def quota_rows(source: Path, n: int, base: Path) -> list[dict[str, Any]]:
    """Run `n` long requests under an enqueued-token quota: learned, then configured."""
    from agent.emulator import list_jobs
    from agent.emulator.answers import prompt_token_count

    quota = QUOTA_PER_REQUEST * n
    per_request = prompt_token_count(
        [{"role": "user", "content": f"ticket {n - 1} says: {LONG_PROMPT}"}]
    )
    per_job = max(n // JOBS_AT_ANY_SIZE, 1)
    rows = []
    for mode, extra in (("learned", ()), ("configured", ("--max-enqueued-tokens", str(quota)))):
        state = base / f"emulator-quota-{mode}"
        process, url = start_emulator(
            state, QUOTA_JOB_DELAY, faults=f"enqueued_token_limit={quota}"
        )
        work = base / f"quota-{mode}"
        try:
            wall, rss, db = agent_run(
                source,
                f"{url}/openai/v1",
                work,
                *extra,
                env_extra={"BATCH_AGENT_MAX_REQUESTS_PER_JOB": str(per_job)},
            )
            emulated = list_jobs(state)
            _, per_poll = checkpoint_stats(db)
        finally:
            process.terminate()
            process.wait()
        report = subprocess.run(
            [str(BIN / "batch-agent"), "status", "scale", "--db", str(db), "--json"],
            env=clean_env(),
            capture_output=True,
            check=True,
            text=True,
        )
        jobs = json.loads(report.stdout)["jobs"]
        ran = [job for job in emulated if job["status"] == "completed"]
        ok = succeeded(work / "out.jsonl")
        assert ok == n, f"quota ({mode}) returned {ok} successful results for {n} requests"
        rows.append(
            {
                "row": f"quota {mode}",
                "size": n,
                "wall": wall,
                "rss": rss,
                "quota": quota,
                "tokens": per_request * n,
                "jobs": len(ran),
                "waves": waves(ran, per_request, quota),
                "refused": sum(1 for job in emulated if job["status"] == "failed"),
                "failed": sum(1 for job in jobs if job.get("status") == "failed"),
                "per_poll": per_poll,
            }
        )
        shutil.rmtree(work)
    return rows


def measure_all(small: int, large: int, base: Path, kinds: set[str]) -> list[dict[str, Any]]:
    """Run the scale rows of `kinds`: plan at both sizes, end to end and under the quota at `small`."""
    from rich.console import Console

    console = Console()
    rows = []
    for n in (small, large) if "plan" in kinds else ():
        source = base / f"plan-{n}.jsonl"
        console.print(f"[bold]scale: writing {n:,} requests...[/bold]")
        size = write_input(source, n)
        console.print(f"[bold]scale: plan of {n:,} requests ({size / 2**20:,.0f} MiB)...[/bold]")
        rows.append({**plan_row(source, n, base / f"plan-{n}"), "bytes": size})
        source.unlink()
    if "e2e" in kinds:
        source = base / f"plan-{small}.jsonl"
        write_input(source, small)
        console.print(
            f"[bold]scale: {small:,} requests end to end, baseline and batch-agent[/bold]"
        )
        rows += end_to_end_rows(source, small, base)
        source.unlink()
    if "quota" in kinds:
        source = base / f"long-{small}.jsonl"
        write_input(source, small, long=True)
        console.print(f"[bold]scale: {small:,} requests under an enqueued-token quota...[/bold]")
        rows += quota_rows(source, small, base)
    return rows


def print_table(rows: list[dict[str, Any]], load: tuple[float, float]) -> None:
    """Print the scale table and the goals."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"scale (emulator over loopback, job delay 1 s, 20 s under the quota; load average {load[0]:.1f} "
        f"before, {load[1]:.1f} after)"
    )
    for column in ("row", "requests", "wall s", "req/s", "peak RSS MiB", "figures"):
        table.add_column(column, justify="left" if column in {"row", "figures"} else "right")
    plans = [row for row in rows if row["row"] == "plan"]
    by_row = {row["row"]: row for row in rows}
    for row in rows:
        figures = ""
        if row["row"] == "plan":
            figures = f"input {row['bytes'] / 2**20:,.0f} MiB, nothing uploaded"
            if row is plans[-1] and len(plans) > 1:
                figures += (
                    f"; RSS {row['rss'] / plans[0]['rss']:.2f}x the {plans[0]['size']:,} plan"
                )
        elif row["row"] == "batch-agent":
            ratio = row["wall"] / by_row["baseline"]["wall"]
            figures = (
                f"wall {ratio:.2f}x the baseline (goal <= 1.3x); "
                f"{row['per_poll']:,.0f} bytes/poll step (goal < 20 KB)"
            )
        elif row["row"].startswith("quota"):
            figures = (
                f"{row['tokens']:,} tokens, quota {row['quota']:,}: {row['jobs']} jobs in "
                f"{row['waves']} waves, {row['refused']} refused, {row['failed']} failed (goal 0); "
                f"{row['per_poll']:,.0f} bytes/poll step"
            )
        table.add_row(
            row["row"],
            f"{row['size']:,}",
            f"{row['wall']:.1f}",
            f"{row['size'] / row['wall']:,.0f}",
            f"{row['rss']:.0f}",
            figures,
        )
    Console(width=170).print(table)
    print("goals: peak RSS < 1 GiB end to end and bounded in planning (the RSS ratio near 1)")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the scale rows at the given sizes and print their table; return the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="1000000,10000000",
        help="SMALL,LARGE: the end-to-end and quota size (also planned), and the planned size",
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--rows", default="plan,e2e,quota", help="which rows to run (default: all three kinds)"
    )
    args = parser.parse_args(argv)
    small, large = (int(s) for s in args.sizes.split(","))
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="batch-agent-scale-") as tmp:
        started = time.perf_counter()
        rows = measure_all(small, large, Path(tmp), set(args.rows.split(",")))
    print(f"scale rows took {time.perf_counter() - started:.0f} s")
    print_table(rows, (before, os.getloadavg()[0]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
