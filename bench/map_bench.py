"""Benchmark: a user's graph over a dataset (`batch-agent map`) against plain `run` calls.

The three-step pipeline of `examples/graphs/pipeline.py` (extract -> classify -> summarise) over
`--items` documents (default 10,000), on one loopback emulator, both polling every 0.5 s:

- **map**: `batch-agent map examples/graphs/pipeline.py:graph docs.jsonl` (three rounds);
- **plain run**: the same three steps by hand, three `batch-agent run --wait` calls, each step's
  prompts built from the previous step's results by this script (the same requests: the map's
  bodies are those of the realtime calls, so each step's prompts are the pipeline's own).

The table reports wall time and peak RSS (the largest process of each), the checkpoint database's
size, the bytes it grew per round and per item, and the mean size of an item's final state as
JSON (what each item must keep anyway), with the map / plain ratios. The map runs a second time
over a tenth of the items (`--small`): the bytes per item per round of the two runs show whether
a round's checkpoint bytes grow with anything but the number of its items.

    .venv/bin/python bench/map_bench.py [--items 10000] [--small 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from harness import BIN, measure, start_emulator  # noqa: E402 (bench/harness.py, next to this script)

PIPELINE = "examples/graphs/pipeline.py:graph"
ROUNDS = 3


def write_documents(path: Path, n: int) -> None:
    """Write `n` support tickets as the pipeline's input."""
    with path.open("w") as fh:
        for i in range(n):
            fh.write(
                json.dumps({"text": f"Ticket {i}: I was charged twice for order A-{i}."}) + "\n"
            )


def db_size(db: Path) -> int:
    """Return the size of a SQLite database with its WAL files."""
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def plain_steps(work: Path, docs: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Run the pipeline's three steps as three `batch-agent run` calls; return wall, RSS, db."""
    from examples.graphs.pipeline import Ticket

    db = work / "plain.sqlite"
    texts = [json.loads(line)["text"] for line in docs.read_text().splitlines()]
    wall_total, rss_peak = 0.0, 0.0

    def step(name: str, records: list[dict[str, Any]], extra: list[str]) -> list[dict[str, Any]]:
        nonlocal wall_total, rss_peak
        source, out = work / f"{name}.jsonl", work / f"{name}-out.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in records))
        args = [str(BIN / "batch-agent"), "run", str(source), "--wait", "--poll-interval", "0.5"]
        wall, rss = measure([*args, "--db", str(db), "--out", str(out), *extra], env, work)
        wall_total, rss_peak = wall_total + wall, max(rss_peak, rss)
        return [json.loads(line) for line in out.read_text().splitlines()]

    facts = step(
        "extract",
        [
            {"id": str(i), "prompt": f"List the key facts of this support ticket: {t}"}
            for i, t in enumerate(texts)
        ],
        [],
    )
    schema = work / "ticket.json"
    schema.write_text(json.dumps(Ticket.model_json_schema()))
    labels = step(
        "classify",
        [
            {"id": r["id"], "prompt": f"Categorise the ticket with these facts: {r['content']}"}
            for r in facts
        ],
        ["--schema", str(schema)],
    )
    by_id = {r["id"]: r for r in facts}
    step(
        "summarise",
        [
            {
                "id": r["id"],
                "messages": [
                    {"role": "system", "content": "Write one short line."},
                    {
                        "role": "user",
                        "content": f"Summarise for the {json.loads(r['content'])['category']} "
                        f"queue: {by_id[r['id']]['content']}",
                    },
                ],
            }
            for r in labels
        ],
        [],
    )
    return wall_total, rss_peak, db_size(db)


def map_run(work: Path, n: int, env: dict[str, str]) -> tuple[float, float, int, float]:
    """Run the pipeline over `n` documents with `batch-agent map`; return wall, RSS, db, state.

    The last is the mean size of an item's final state as JSON.
    """
    folder = work / f"map-{n}"
    folder.mkdir()
    docs, db, out = folder / "docs.jsonl", folder / "map.sqlite", folder / "items.jsonl"
    write_documents(docs, n)
    command = [str(BIN / "batch-agent"), "map", PIPELINE, str(docs), "--db", str(db)]
    wall, rss = measure([*command, "--out", str(out), "--poll-interval", "0.5"], env, ROOT)
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(i["status"] == "completed" for i in items) == n, "items failed"
    return wall, rss, db_size(db), sum(len(json.dumps(i["state"])) for i in items) / n


def main(argv: list[str] | None = None) -> None:
    """Run both and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument(
        "--small",
        type=int,
        default=0,
        help="also map this many items, to show the bytes per item per round do not grow "
        "with the round's size (default: a tenth of --items; 0 with --items under 100)",
    )
    args = parser.parse_args(argv)
    small = args.small or (args.items // 10 if args.items >= 100 else 0)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="batch-agent-map-bench-") as tmp:
        work = Path(tmp)
        emulator, url = start_emulator(work / "emulator", "1")
        try:
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("OPENAI_", "MISTRAL_", "BATCH_AGENT_"))
            }
            env.update(
                OPENAI_API_KEY="bench", OPENAI_BASE_URL=f"{url}/openai/v1", PYTHONUNBUFFERED="1"
            )
            map_wall, map_rss, map_db, state_bytes = map_run(work, args.items, env)
            small_run = map_run(work, small, env) if small else None
            docs = work / "docs.jsonl"
            write_documents(docs, args.items)
            plain_wall, plain_rss, plain_db = plain_steps(work, docs, env)
        finally:
            emulator.terminate()
            emulator.wait()
    print(f"pipeline of {ROUNDS} steps over {args.items:,} items, loopback emulator, poll 0.5 s")
    print(f"{'':<16} {'wall s':>8} {'peak RSS MiB':>13} {'db MB':>8} {'db per round per item':>22}")
    rows = [(f"map {args.items:,}", map_wall, map_rss, map_db, args.items)]
    if small_run is not None:
        rows.append((f"map {small:,}", small_run[0], small_run[1], small_run[2], small))
    rows.append((f"plain run {args.items:,}", plain_wall, plain_rss, plain_db, args.items))
    for name, wall, rss, db, n in rows:
        print(f"{name:<16} {wall:>8.1f} {rss:>13.0f} {db / 1e6:>8.1f} {db / ROUNDS / n:>20.0f} B")
    print(
        f"ratios map/plain: wall {map_wall / plain_wall:.2f}x, RSS {map_rss / plain_rss:.2f}x; "
        f"an item's final state is {state_bytes:.0f} B of JSON"
    )
    if small_run is not None:
        growth = (map_db / args.items) / (small_run[2] / small)
        print(
            f"checkpoint bytes per item per round at {args.items:,} items / at {small:,}: "
            f"{growth:.2f}x (1.00x: a round's bytes grow with its items' own state only)"
        )


if __name__ == "__main__":
    main()
