"""Benchmark: a user's graph over a dataset (`batch-agent map`) against plain `run` calls.

The three-step pipeline of `examples/graphs/pipeline.py` (extract -> classify -> summarise) over
`--items` documents (default 10,000), on one loopback emulator, both polling every 0.5 s:

- **map**: `batch-agent map examples/graphs/pipeline.py:graph docs.jsonl` (three rounds);
- **plain run**: the same three steps by hand, three `batch-agent run --wait` calls, each step's
  prompts built from the previous step's results by this script (the same requests: the map's
  bodies are those of the realtime calls, so each step's prompts are the pipeline's own).

The table reports wall time and peak RSS (the largest process of each), the checkpoint database's
size, the bytes it grew per round and per item, and the mean size of an item's final state as
JSON (what each item must keep anyway), with the map / plain ratios.

    .venv/bin/python bench/map_bench.py [--items 10000]
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

from run import BIN, measure, start_emulator  # noqa: E402 (bench/run.py, next to this script)

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


def main(argv: list[str] | None = None) -> None:
    """Run both and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args(argv)
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
            docs = work / "docs.jsonl"
            write_documents(docs, args.items)
            db = work / "map.sqlite"
            out = work / "items.jsonl"
            command = [str(BIN / "batch-agent"), "map", PIPELINE, str(docs), "--db", str(db)]
            map_wall, map_rss = measure(
                [*command, "--out", str(out), "--poll-interval", "0.5"], env, ROOT
            )
            items = [json.loads(line) for line in out.read_text().splitlines()]
            assert sum(i["status"] == "completed" for i in items) == args.items, "items failed"
            state_bytes = sum(len(json.dumps(i["state"])) for i in items) / len(items)
            map_db = db_size(db)
            plain_wall, plain_rss, plain_db = plain_steps(work, docs, env)
        finally:
            emulator.terminate()
            emulator.wait()
    per_round = map_db / ROUNDS
    print(f"pipeline of {ROUNDS} steps over {args.items:,} items, loopback emulator, poll 0.5 s")
    print(f"{'':<12} {'wall s':>8} {'peak RSS MiB':>13} {'db MB':>8} {'db per round per item':>22}")
    print(
        f"{'map':<12} {map_wall:>8.1f} {map_rss:>13.0f} {map_db / 1e6:>8.1f} "
        f"{per_round / args.items:>20.0f} B"
    )
    print(
        f"{'plain run':<12} {plain_wall:>8.1f} {plain_rss:>13.0f} {plain_db / 1e6:>8.1f} "
        f"{plain_db / ROUNDS / args.items:>20.0f} B"
    )
    print(
        f"ratios map/plain: wall {map_wall / plain_wall:.2f}x, RSS {map_rss / plain_rss:.2f}x; "
        f"an item's final state is {state_bytes:.0f} B of JSON"
    )


if __name__ == "__main__":
    main()
