"""Benchmark: embeddings as bulk data, exported to Parquet / .npy, and `batch-agent embed` end to end.

1. **Export**: `--vectors` synthetic embeddings results (default 1,000,000 of `--dims` 1,536) are
   written into a `SqliteStore` in a temporary folder through `ThreadData.put_result_pages`, in
   the stored format of `agent.vectors` (base64 float32 lines), the way a collected embeddings
   thread holds them. Each export then runs in its own process, reading the pages as
   `batch-agent results` does: Parquet and `.npy` (`agent.export.export_results`), against two
   baselines on the same float32 values: a plain copy of their raw bytes, and `numpy.save` of a
   memory-mapped array. Reported: wall time, rows/s, MB/s of output, peak RSS (the child's
   `ru_maxrss`). The goal: peak RSS under 1 GiB at 1,000,000 x 1,536.
2. **Embed**: `--texts` texts (default 100,000) through `batch-agent embed FILE --model
   text-embedding-3-small --wait --poll-interval 0.5 --out X.npy --format npy` against a plain
   openai SDK + numpy script (`bench/embed_baseline.py`), on one loopback emulator; wall time and
   peak RSS of each and the ratios. A row that cannot run (no `embed` command yet, an emulator
   without embeddings answers) says why instead of failing the bench.

    .venv/bin/python bench/embed_bench.py [--vectors 1000000] [--dims 1536] [--texts 100000]
    .venv/bin/python bench/embed_bench.py --small      # 10,000 vectors, 2,000 texts
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from harness import BIN, measure, start_emulator  # noqa: E402 (bench/harness.py, next to this script)

THREAD = "embed-bench"
MODEL = "text-embedding-3-small"
MIB = 1024 * 1024


def fill_store(db: Path, raw: Path, n: int, dims: int) -> None:
    """Make `db` hold a finished embeddings thread of `n` synthetic vectors, and `raw` the floats.

    The vectors go into the store's result pages through `ThreadData.put_result_pages`, as a
    collected embeddings thread's do; one checkpoint says the thread is finished, so the
    export is timed through the real `batch-agent results` command. `raw` is the same float32
    values as a `.npy` file, for the baselines and the check.
    """
    import numpy as np
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.store.sqlite import SqliteStore

    from agent.bulk import PAGE_SIZE, ThreadData, dumps
    from agent.vectors import vector_result

    conn = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None)
    store = SqliteStore(conn)
    store.setup()
    saver = SqliteSaver(sqlite3.connect(str(db), check_same_thread=False))
    saver.setup()
    values = {"status": "completed", "request_count": n, "jobs": []}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = dict.fromkeys(values, 1)
    config = {"configurable": {"thread_id": THREAD, "checkpoint_ns": ""}}
    saver.put(config, checkpoint, {"source": "update", "step": 1}, dict.fromkeys(values, 1))  # type: ignore[arg-type]
    saver.conn.commit()
    same = np.lib.format.open_memmap(raw, mode="w+", dtype="<f4", shape=(n, dims))
    usage = {"input_tokens": 8, "output_tokens": 0, "total_tokens": 8}
    rng = np.random.default_rng(0)

    def pages() -> Iterator[tuple[int, list[bytes]]]:
        for page, start in enumerate(range(0, n, PAGE_SIZE)):
            block = rng.standard_normal((min(PAGE_SIZE, n - start), dims), dtype=np.float32)
            same[start : start + len(block)] = block
            yield (
                page,
                [
                    dumps(vector_result(f"t-{start + i:07d}", row.tobytes(), usage, 1))
                    for i, row in enumerate(block)
                ],
            )

    ThreadData(store, THREAD).put_result_pages(pages())
    same.flush()
    conn.close()


def copy_child(src: str, out: str) -> None:
    """In the measured process: copy the raw float32 file (the I/O floor)."""
    with open(src, "rb") as fh, open(out, "wb") as dst:
        shutil.copyfileobj(fh, dst, 8 * MIB)


def npsave_child(src: str, out: str) -> None:
    """In the measured process: `numpy.save` of the memory-mapped float32 array."""
    import numpy as np

    np.save(out, np.load(src, mmap_mode="r"))


def export_rows(work: Path, n: int, dims: int, env: dict[str, str]) -> list[dict[str, Any]]:
    """Fill a store with `n` vectors, export them every way; return one row per way."""
    import numpy as np

    db, raw = work / "store.sqlite", work / "same.npy"
    print(f"writing {n:,} x {dims:,} vectors into a SqliteStore ...", file=sys.stderr, flush=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    # In a process of its own: the measured ones are started by this one, and a child's peak
    # RSS counts the memory its parent had when it was started.
    subprocess.run(me + ["--child-fill", str(db), str(raw), str(n), str(dims)], check=True)
    results = [str(BIN / "batch-agent"), "results", THREAD, "--db", str(db), "--format"]
    runs = {
        "parquet": results + ["parquet", "--out", str(work / "out.parquet")],
        "npy": results + ["npy", "--out", str(work / "out.npy")],
        "baseline: copy of the float32 bytes": me
        + ["--child-copy", str(raw), str(work / "copy.bin")],
        "baseline: numpy.save of a memmap": me
        + ["--child-npsave", str(raw), str(work / "saved.npy")],
    }
    outputs = {
        "parquet": work / "out.parquet",
        "npy": work / "out.npy",
        "baseline: copy of the float32 bytes": work / "copy.bin",
        "baseline: numpy.save of a memmap": work / "saved.npy",
    }
    rows = []
    for name, cmd in runs.items():
        print(f"export: {name} ...", file=sys.stderr, flush=True)
        row: dict[str, Any] = {"impl": name, "rows": n}
        try:
            row["wall"], row["rss"] = measure(cmd, env, work)
            row["bytes"] = outputs[name].stat().st_size
        except RuntimeError as exc:
            row["failed"] = str(exc).strip().splitlines()[-1][:100]
        rows.append(row)
        if name == "npy" and "failed" not in row:
            # The export is the stored floats, exactly (first and last rows).
            got, want = np.load(outputs[name], mmap_mode="r"), np.load(raw, mmap_mode="r")
            assert got.shape == want.shape and got[0].tobytes() == want[0].tobytes()
            assert got[-1].tobytes() == want[-1].tobytes()
        outputs[name].unlink(missing_ok=True)  # tens of GB at full size: one at a time
    rows.append({"impl": "store (result pages)", "rows": n, "bytes": db.stat().st_size})
    return rows


def write_texts(path: Path, n: int) -> None:
    """Write `n` texts to embed, as JSONL `{id, text}`."""
    with path.open("w") as fh:
        for i in range(n):
            text = f"Ticket {i}: I was charged twice for order A-{i}."
            fh.write(json.dumps({"id": f"t-{i:07d}", "text": text}) + "\n")


def embed_rows(work: Path, n: int, env: dict[str, str]) -> list[dict[str, Any]]:
    """Embed `n` texts with `batch-agent embed` and with the plain script; one row each."""
    texts = work / "texts.jsonl"
    write_texts(texts, n)
    emulator, url = start_emulator(work / "emulator", "1")
    rows: list[dict[str, Any]] = []
    try:
        env = {**env, "OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": f"{url}/openai/v1"}
        agent_dir = work / "agent"
        agent_dir.mkdir()
        agent_env = {
            **env,
            "BATCH_AGENT_DB": str(agent_dir / "checkpoints.sqlite"),
            "BATCH_AGENT_SPOOL_DIR": str(agent_dir / "spool"),
        }
        has_embed = (
            subprocess.run(
                [str(BIN / "batch-agent"), "embed", "--help"],
                env=agent_env,
                capture_output=True,
            ).returncode
            == 0
        )
        agent_out = agent_dir / "vectors.npy"
        cmd = [str(BIN / "batch-agent"), "embed", str(texts), "--model", MODEL, "--wait"]
        cmd += ["--poll-interval", "0.5", "--out", str(agent_out), "--format", "npy"]
        if has_embed:
            rows.append(_timed("batch-agent embed", n, cmd, agent_env, agent_dir, agent_out))
        else:
            skipped = "skipped: no embed command"
            rows.append({"impl": "batch-agent embed", "rows": n, "failed": skipped})
        plain_dir = work / "plain"
        plain_dir.mkdir()
        plain_out = plain_dir / "vectors.npy"
        cmd = [sys.executable, str(ROOT / "bench" / "embed_baseline.py"), str(texts)]
        cmd += [str(plain_out), "--base-url", f"{url}/openai/v1", "--model", MODEL]
        rows.append(_timed("plain openai + numpy", n, cmd, env, plain_dir, plain_out))
    finally:
        emulator.terminate()
        emulator.wait()
    return rows


def _timed(
    name: str, n: int, cmd: list[str], env: dict[str, str], cwd: Path, out: Path
) -> dict[str, Any]:
    """Run one implementation; its row, or the reason it failed (the last line it printed)."""
    import numpy as np

    row: dict[str, Any] = {"impl": name, "rows": n}
    try:
        row["wall"], row["rss"] = measure(cmd, env, cwd)
        shape = np.load(out, mmap_mode="r").shape
        if shape[0] != n:
            row["failed"] = f"wrote {shape[0]:,} vectors of {n:,}"
    except (RuntimeError, OSError, ValueError) as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        row["failed"] = "failed: " + (lines[-1][:110] if lines else type(exc).__name__)
    return row


def print_tables(export: list[dict[str, Any]], embed: list[dict[str, Any]], dims: int) -> None:
    """Print the two tables and the ratios."""
    if export:
        n = export[0]["rows"]
        print(f"\nexport of {n:,} embeddings x {dims:,} dims from a SqliteStore (one process each)")
        print(
            f"{'':<38} {'wall s':>8} {'rows/s':>11} {'MB/s':>8} {'peak RSS MiB':>13} {'file MB':>9}"
        )
        for row in export:
            if "failed" in row:
                print(f"{row['impl']:<38} {row['failed']}")
            elif "wall" not in row:
                print(
                    f"{row['impl']:<38} {'':>8} {'':>11} {'':>8} {'':>13} {row['bytes'] / 1e6:>9,.0f}"
                )
            else:
                print(
                    f"{row['impl']:<38} {row['wall']:>8.1f} {row['rows'] / row['wall']:>11,.0f} "
                    f"{row['bytes'] / 1e6 / row['wall']:>8,.0f} {row['rss']:>13,.0f} "
                    f"{row['bytes'] / 1e6:>9,.0f}"
                )
        worst = max(
            (row["rss"] for row in export if "rss" in row and row["impl"] in ("parquet", "npy")),
            default=0.0,
        )
        print(f"goal: peak RSS of the exports under 1,024 MiB (largest: {worst:,.0f} MiB)")
    if embed:
        n = embed[0]["rows"]
        print(f"\nembeddings of {n:,} texts, loopback emulator, poll 0.5 s")
        print(f"{'':<24} {'wall s':>8} {'texts/s':>9} {'peak RSS MiB':>13}")
        for row in embed:
            if "failed" in row:
                print(f"{row['impl']:<24} {row['failed']}")
            else:
                print(
                    f"{row['impl']:<24} {row['wall']:>8.1f} {row['rows'] / row['wall']:>9,.0f} "
                    f"{row['rss']:>13,.0f}"
                )
        agent, plain = embed[0], embed[-1]
        if "wall" in agent and "wall" in plain:
            print(
                f"ratios batch-agent/plain: wall {agent['wall'] / plain['wall']:.2f}x, "
                f"RSS {agent['rss'] / plain['rss']:.2f}x"
            )


def main(argv: list[str] | None = None) -> None:
    """Run the export and embed benchmarks (or one measured child process of them)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=1536)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--small", action="store_true", help="10,000 vectors, 2,000 texts")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--no-embed", action="store_true")
    parser.add_argument("--child-fill", nargs=4, metavar=("DB", "RAW", "N", "DIMS"))
    parser.add_argument("--child-copy", nargs=2, metavar=("SRC", "OUT"))
    parser.add_argument("--child-npsave", nargs=2, metavar=("SRC", "OUT"))
    args = parser.parse_args(argv)
    if args.child_fill:
        db, raw, n, dims = args.child_fill
        fill_store(Path(db), Path(raw), int(n), int(dims))
        return
    if args.child_copy:
        copy_child(*args.child_copy)
        return
    if args.child_npsave:
        npsave_child(*args.child_npsave)
        return
    if args.small:
        args.vectors, args.texts = 10_000, 2_000
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "MISTRAL_", "BATCH_AGENT_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    export: list[dict[str, Any]] = []
    embed: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="batch-agent-embed-bench-") as tmp:
        work = Path(tmp)
        if not args.no_export:
            (work / "export").mkdir()
            export = export_rows(work / "export", args.vectors, args.dims, env)
            shutil.rmtree(work / "export")
        if not args.no_embed:
            (work / "embed").mkdir()
            embed = embed_rows(work / "embed", args.texts, env)
    print_tables(export, embed, args.dims)


if __name__ == "__main__":
    main()
