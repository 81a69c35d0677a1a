"""`batch-agent embed` in separate processes: submit, resume with --thread, export, plan, served.

On the CLI's in-process emulator (no key set), and on a `langgraph dev` server (`--url`): the
vectors written as Parquet, `.npy` and JSONL are the same float32 values in input order, one
provider job holds the texts, and a resumed thread sends nothing again.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.integration_tests.test_cli import cli, emulator_jobs

pytestmark = pytest.mark.slow

COUNT = 1500  # more than one store page of results
FAILING = 700


def write_texts(path: Path) -> list[str]:
    """Write COUNT `{id, text}` records (one the emulator refuses); return their ids."""
    ids = [f"doc-{n}" for n in range(COUNT)]
    lines = [
        json.dumps(
            {"id": i, "text": f"document {n} [emulator:reject]" if n == FAILING else f"doc {n}"}
        )
        for n, i in enumerate(ids)
    ]
    path.write_text("\n".join(lines) + "\n")
    return ids


def test_embed_resumes_by_thread_and_exports_the_same_vectors_in_every_format(
    tmp_path: Path,
) -> None:
    texts = tmp_path / "texts.jsonl"
    ids = write_texts(texts)

    planned = cli(tmp_path, "plan", str(texts), "--embed", "--json")
    assert planned.returncode == 0, planned.stderr
    report = json.loads(planned.stdout)
    (job,) = report["jobs"]
    assert job["model"] == "text-embedding-3-small" and job["requests"] == COUNT
    assert job["max_output_tokens"] == 0 and job["tokens_by"] == "tokenizer cl100k_base"

    submitted = cli(tmp_path, "embed", str(texts), "--dimensions", "32")
    assert submitted.returncode == 0, submitted.stderr
    match = re.search(r"thread (\S+)\s+status submitted", submitted.stdout)
    assert match, submitted.stdout
    thread = match.group(1)

    wait = ("--wait", "--poll-interval", "0.3", "--poll-backoff", "1")
    finished = cli(
        tmp_path, "embed", "--thread", thread, *wait, "--out", "v.parquet", "--format", "parquet"
    )
    # One text failed: exit 3, the vectors written all the same.
    assert finished.returncode == 3, finished.stderr
    assert "1 of 1,500 requests failed" in finished.stderr
    table = pq.read_table(tmp_path / "v.parquet")
    assert table.column("id").to_pylist() == ids
    embedding = table.column("embedding").to_pylist()
    assert embedding[FAILING] is None
    assert table.column("error").to_pylist()[FAILING].startswith("invalid_request: ")
    vectors = np.array([v for v in embedding if v is not None], dtype="<f4")
    assert vectors.shape == (COUNT - 1, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    as_npy = cli(tmp_path, "results", thread, "--format", "npy", "--out", "v.npy")
    assert as_npy.returncode == 0, as_npy.stderr
    array = np.load(tmp_path / "v.npy")
    assert array.shape == (COUNT, 32) and np.isnan(array[FAILING]).all()
    np.testing.assert_array_equal(np.delete(array, FAILING, axis=0), vectors)

    as_jsonl = cli(tmp_path, "results", thread)
    assert as_jsonl.returncode == 0, as_jsonl.stderr
    rows = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    assert [r["id"] for r in rows] == ids
    np.testing.assert_array_equal(np.array(rows[0]["embedding"], dtype="<f4"), array[0])
    assert rows[0]["usage"]["output_tokens"] == 0 and rows[0]["usage"]["input_tokens"] > 0

    to_stdout = cli(tmp_path, "results", thread, "--format", "npy")
    assert to_stdout.returncode != 0 and "--out" in to_stdout.stderr

    # The texts went in one job, sent once; resuming the finished thread sends nothing.
    assert len(emulator_jobs(tmp_path)) == 1
    again = cli(
        tmp_path,
        "embed",
        "--thread",
        thread,
        "--wait",
        "--out",
        "again.npy",
        "--format",
        "npy",
        "--allow-failures",
    )
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), array)
    assert len(emulator_jobs(tmp_path)) == 1


def test_served_embed_gives_the_local_vectors(dev_server: str, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"served text {n}\n" for n in range(40)))
    wait = ("--wait", "--poll-interval", "0.3", "--poll-backoff", "1")
    local = cli(tmp_path, "embed", str(texts), *wait, "--out", "local.npy", "--format", "npy")
    assert local.returncode == 0, local.stderr
    remote = cli(
        tmp_path,
        "embed",
        str(texts),
        "--url",
        dev_server,
        "--provider",
        "emulator",
        "--thread",
        str(uuid.uuid4()),
        *wait,
        "--out",
        "remote.npy",
        "--format",
        "npy",
    )
    assert remote.returncode == 0, remote.stderr
    local_array, remote_array = np.load(tmp_path / "local.npy"), np.load(tmp_path / "remote.npy")
    assert local_array.shape == (40, 1536)
    np.testing.assert_array_equal(remote_array, local_array)
