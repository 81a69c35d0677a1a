"""Embeddings results as bulk data: stored as base64 float32, exported as JSONL, Parquet and .npy.

Result pages in the `agent.vectors` format (succeeded, failed and deduplicated lines) are put in
a SQLite store through `ThreadData.put_result_pages`, read back as the CLI reads them, exported,
and read with pyarrow / numpy: every value must equal the float32 input exactly. Memory is not
measured here (`bench/embed_bench.py` measures it).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.store.sqlite import SqliteStore
from typer.testing import CliRunner

from agent.bulk import PAGE_SIZE, ThreadData, dumps
from agent.cli.app import app
from agent.cli.errors import CliError
from agent.export import ExportError, ResultFormat, export_results, write_results
from agent.state import empty_usage
from agent.vector_export import NPY_HEADER_BYTES, npy_header
from agent.vectors import (
    VectorFormatError,
    decode,
    encode,
    failed_vector_result,
    is_vector_line,
    vector_result,
)

DIMS = 8


def usage(tokens: int) -> dict[str, int]:
    return {"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens}


def vectors_of(n: int, dims: int = DIMS, seed: int = 7) -> np.ndarray:
    """`n` float32 vectors with awkward values (tiny, huge, negative zero, not round)."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((n, dims)).astype(np.float32) / np.float32(3)
    values[0, :3] = [np.float32(1e-38), np.float32(-0.0), np.float32(3.4e38)]
    return values


def stored_lines(vectors: np.ndarray, failed: set[int], copies: dict[int, int]) -> list[bytes]:
    """Result lines: row i succeeded, failed (`failed`) or a duplicate of another (`copies`)."""
    lines = []
    for i, row in enumerate(vectors):
        rid = f"r{i:05d}"
        if i in failed:
            error = {"code": "invalid_request", "message": f"text {i} is too long"}
            result = failed_vector_result(rid, error, empty_usage(), 2)
        elif i in copies:
            original = f"r{copies[i]:05d}"
            result = {
                **vector_result(original, vectors[copies[i]].tobytes(), usage(i + 1), 1),
                "id": rid,
                "duplicate_of": original,
            }
        else:
            result = vector_result(rid, row.astype("<f4").tobytes(), usage(i + 1), 1)
        lines.append(dumps(result))
    return lines


def stored_pages(tmp_path: Path, lines: list[bytes]) -> Iterator[bytes]:
    """Put `lines` in a SQLite store's result pages and read them back as `results` does."""
    conn = sqlite3.connect(tmp_path / "store.sqlite", check_same_thread=False, isolation_level=None)
    store = SqliteStore(conn)
    store.setup()
    data = ThreadData(store, "t-vectors")
    data.put_result_pages(
        (n, lines[start : start + PAGE_SIZE])
        for n, start in enumerate(range(0, len(lines), PAGE_SIZE))
    )
    yield from data.iter_result_pages(len(lines))
    conn.close()


@pytest.fixture
def case(tmp_path: Path) -> tuple[np.ndarray, set[int], dict[int, int], list[bytes]]:
    """2,500 vectors over three pages: failures (the first rows too) and duplicates."""
    vectors = vectors_of(2500)
    failed = {0, 1, 999, 1000, 2499}
    copies = {5: 2, 1500: 3}
    for copy, original in copies.items():
        vectors[copy] = vectors[original]
    return vectors, failed, copies, stored_lines(vectors, failed, copies)


@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=64))
@settings(max_examples=50, deadline=None)
def test_stored_vector_decodes_to_the_same_float32_bytes(values: list[float]) -> None:
    raw = np.array(values, dtype="<f4").tobytes()
    text = encode(raw)
    assert decode(text).tobytes() == raw
    assert decode(text).dtype == np.dtype("<f4")
    # base64: 4 characters per 3 bytes, far below JSON's ~20 per float.
    assert len(text) <= len(raw) * 4 // 3 + 4


def test_vector_lines_are_told_from_chat_lines_and_bad_vectors_refused() -> None:
    chat = {"id": "a", "status": "failed", "content": None, "message": None, "error": None}
    assert not is_vector_line(chat)
    failed = failed_vector_result("a", {"code": "no_result", "message": "-"}, empty_usage(), 2)
    assert is_vector_line(failed) and failed["vector"] is None and failed["dimensions"] is None
    with pytest.raises(VectorFormatError):
        encode(b"abc")
    with pytest.raises(VectorFormatError):
        decode("not base64!")
    with pytest.raises(VectorFormatError):
        decode(encode(b"abcd")[:-2])


def test_npy_export_is_the_float32_array_in_input_order_with_failed_rows_nan(
    tmp_path: Path, case: tuple[np.ndarray, set[int], dict[int, int], list[bytes]]
) -> None:
    vectors, failed, _, lines = case
    out = tmp_path / "out" / "vectors.npy"
    report = export_results(stored_pages(tmp_path, lines), out, ResultFormat.npy, len(lines))
    assert (report.rows, report.failed, report.dims) == (2500, len(failed), DIMS)
    array = np.load(out)
    assert array.dtype == np.dtype("<f4") and array.shape == (2500, DIMS)
    ok = [i for i in range(2500) if i not in failed]
    assert array[ok].tobytes() == vectors[ok].tobytes()
    assert np.isnan(array[sorted(failed)]).all()
    # Memory-mapped reading works too (the header is what numpy itself would accept).
    assert np.load(out, mmap_mode="r")[1500].tobytes() == vectors[3].tobytes()
    assert not [p for p in out.parent.iterdir() if p.name != "vectors.npy"]  # no temp file left


def test_parquet_export_round_trips_every_column(
    tmp_path: Path, case: tuple[np.ndarray, set[int], dict[int, int], list[bytes]]
) -> None:
    vectors, failed, _, lines = case
    out = tmp_path / "vectors.parquet"
    report = export_results(stored_pages(tmp_path, lines), out, "parquet", len(lines))
    assert (report.rows, report.failed, report.dims) == (2500, len(failed), DIMS)
    table = pq.read_table(out)
    assert str(table.schema.field("embedding").type) == f"fixed_size_list<element: float>[{DIMS}]"
    assert table.column("id").to_pylist() == [f"r{i:05d}" for i in range(2500)]
    statuses = table.column("status").to_pylist()
    assert [i for i, s in enumerate(statuses) if s == "failed"] == sorted(failed)
    embedding = table.column("embedding").combine_chunks()
    assert [i for i in range(2500) if not embedding[i].is_valid] == sorted(failed)
    # The values under a null embedding are not stored: read them as NaN.
    flat = embedding.values.to_numpy(zero_copy_only=False).reshape(2500, DIMS)
    ok = [i for i in range(2500) if i not in failed]
    assert flat[ok].tobytes() == vectors[ok].tobytes()
    tokens = table.column("input_tokens").to_pylist()
    assert tokens[2] == 3 and tokens[0] == 0
    assert table.column("error").to_pylist()[999] == "invalid_request: text 999 is too long"
    assert table.column("error").to_pylist()[2] is None


def test_jsonl_export_writes_embeddings_as_float32_values(
    tmp_path: Path, case: tuple[np.ndarray, set[int], dict[int, int], list[bytes]]
) -> None:
    vectors, failed, copies, lines = case
    out = tmp_path / "vectors.jsonl"
    report = export_results(stored_pages(tmp_path, lines), out, "jsonl")
    assert report.rows == 2500
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [f"r{i:05d}" for i in range(2500)]
    for i, record in enumerate(records):
        assert set(record) >= {"id", "status", "embedding", "dimensions", "usage", "error"}
        assert "vector" not in record
        if i in failed:
            assert record["embedding"] is None and record["status"] == "failed"
            assert record["error"]["code"] == "invalid_request"
        else:
            assert np.array(record["embedding"], dtype="<f4").tobytes() == vectors[i].tobytes()
            assert record["dimensions"] == DIMS
    assert records[1500]["duplicate_of"] == f"r{copies[1500]:05d}"


def test_vectors_wider_than_one_page_and_all_failed_threads(tmp_path: Path) -> None:
    # 1,536 dimensions (a real model's) over two pages; then a thread with no vector at all.
    vectors = vectors_of(1200, 1536)
    lines = stored_lines(vectors, set(), {})
    report = export_results(iter(_pages(lines)), tmp_path / "wide.npy", "npy", 1200)
    assert report.dims == 1536
    assert np.load(tmp_path / "wide.npy").tobytes() == vectors.tobytes()

    none = stored_lines(vectors_of(3), {0, 1, 2}, {})
    npy = export_results(iter(_pages(none)), tmp_path / "none.npy", "npy", 3)
    assert (npy.rows, npy.failed, npy.dims) == (3, 3, None)
    assert np.load(tmp_path / "none.npy").shape == (3, 0)
    parquet = export_results(iter(_pages(none)), tmp_path / "none.parquet", "parquet", 3)
    assert parquet.failed == 3
    assert pq.read_table(tmp_path / "none.parquet").column("embedding").null_count == 3


def test_npy_header_reads_back_with_numpy(tmp_path: Path) -> None:
    header = npy_header((1_000_000_000, 3072))
    assert len(header) == NPY_HEADER_BYTES
    path = tmp_path / "header.npy"
    path.write_bytes(npy_header((2, 3)) + np.arange(6, dtype="<f4").tobytes())
    assert np.load(path).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_export_refuses_chat_results_mixed_widths_and_a_missing_page(tmp_path: Path) -> None:
    chat = [dumps({"id": "a", "status": "succeeded", "content": "hi", "usage": usage(1)})]
    for fmt in ("parquet", "npy"):
        with pytest.raises(ExportError, match="chat thread"):
            export_results(iter(_pages(chat)), tmp_path / f"chat.{fmt}", fmt, 1)
        assert not (tmp_path / f"chat.{fmt}").exists()
    mixed = [
        dumps(vector_result("a", np.ones(4, "<f4").tobytes(), usage(1), 1)),
        dumps(vector_result("b", np.ones(3, "<f4").tobytes(), usage(1), 1)),
    ]
    with pytest.raises(ExportError, match="3 dimensions where the first vector has 4"):
        export_results(iter(_pages(mixed)), tmp_path / "mixed.npy", "npy", 2)
    lines = stored_lines(vectors_of(5), set(), {})
    with pytest.raises(ExportError, match="holds 5 results of 6"):
        export_results(iter(_pages(lines)), tmp_path / "short.parquet", "parquet", 6)
    assert list(tmp_path.iterdir()) == []  # nothing half-written stays
    with pytest.raises(ExportError, match="--out"):
        write_results(iter(_pages(lines)), open(tmp_path / "x", "wb"), "npy")  # noqa: SIM115


def test_results_command_writes_npy_and_parquet_and_refuses_stdout_and_chat(
    tmp_path: Path,
) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"r{i}", "prompt": f"hi {i}"}) + "\n" for i in range(3))
    )
    db = tmp_path / "checkpoints.sqlite"
    runner = CliRunner()
    fast = ["--poll-interval", "0.1", "--poll-backoff", "1"]
    run = runner.invoke(
        app,
        ["run", str(source), "--thread", "t", "--db", str(db), "--wait", *fast],
        catch_exceptions=False,
    )
    assert run.exit_code == 0, run.output

    refused = runner.invoke(app, ["results", "t", "--db", str(db), "--format", "npy"])
    assert isinstance(refused.exception, CliError)
    assert "--format npy writes a binary file: give --out FILE" in str(refused.exception)
    chat = runner.invoke(
        app,
        [
            "results",
            "t",
            "--db",
            str(db),
            "--format",
            "parquet",
            "--out",
            str(tmp_path / "c.parquet"),
        ],
    )
    assert isinstance(chat.exception, CliError) and "chat thread" in str(chat.exception)
    assert not (tmp_path / "c.parquet").exists()

    # The same thread's pages as an embeddings thread stores them (one failed text).
    vectors = vectors_of(3)
    lines = stored_lines(vectors, {1}, {})
    with sqlite3.connect(db, isolation_level=None, check_same_thread=False) as conn:
        ThreadData(SqliteStore(conn), "t").put_result_pages([(0, lines)])
    out = tmp_path / "v.npy"
    npy = runner.invoke(
        app, ["results", "t", "--db", str(db), "--format", "npy", "--out", str(out)]
    )
    assert npy.exit_code == 0, npy.output
    assert "wrote 3 results" in npy.output and "1 of 3 requests failed" in npy.output
    array = np.load(out)
    assert array[[0, 2]].tobytes() == vectors[[0, 2]].tobytes() and np.isnan(array[1]).all()
    parquet = runner.invoke(
        app,
        [
            "results",
            "t",
            "--db",
            str(db),
            "--format",
            "parquet",
            "--out",
            str(tmp_path / "v.parquet"),
        ],
    )
    assert parquet.exit_code == 0, parquet.output
    assert pq.read_table(tmp_path / "v.parquet").column("id").to_pylist() == [
        "r00000",
        "r00001",
        "r00002",
    ]
    jsonl = runner.invoke(app, ["results", "t", "--db", str(db)])
    assert [orjson.loads(line)["embedding"] is None for line in jsonl.stdout.splitlines()] == [
        False,
        True,
        False,
    ]


def _pages(lines: list[bytes]) -> list[bytes]:
    return [
        b"\n".join(lines[start : start + PAGE_SIZE]) + b"\n"
        for start in range(0, len(lines), PAGE_SIZE)
    ]
