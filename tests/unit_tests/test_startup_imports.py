"""Read-only commands import only what they use: `status`, `threads` and `results` on a SQLite
database load no LangGraph, LangChain, provider SDK or numpy (seconds of start-up), and read the
same values the compiled graph's `get_state` gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.checkpoint_reader import read_thread, read_threads
from agent.cli.app import app
from agent.cli.backend import READ_KEYS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "numpy",
    "langgraph",
    "langchain_core",
    "langchain_openai",
    "langchain_anthropic",
    "langchain_mistralai",
    "langchain_google_genai",
    "langsmith",
    "openai",
    "anthropic",
    "mistralai",
    "google.genai",
    "langgraph_sdk",
)
PROBE = """
import json, sys
from agent.cli.app import cli_main
code = cli_main(sys.argv[2:])
loaded = sorted(name for name in json.loads(sys.argv[1]) if name in sys.modules)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""
# A keyless `--provider gemini` run (on the emulator's Gemini protocol).
GEMINI = [("gem", 2, "gemini")]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three finished emulated threads (one small enough to keep its results in state; one of
    them on the Gemini protocol, whose thread names a provider the others do not)."""
    tmp = tmp_path_factory.mktemp("startup")
    db = tmp / "db.sqlite"
    for thread, size, provider in (("small", 2, "emulator"), ("other", 3, "emulator"), *GEMINI):
        source = tmp / f"{thread}.jsonl"
        source.write_text(
            "".join(json.dumps({"id": f"r{i}", "prompt": f"hi {i}"}) + "\n" for i in range(size))
        )
        args = ["run", str(source), "--provider", provider, "--db", str(db), "--thread", thread]
        env = {
            "BATCH_AGENT_EMULATOR_DIR": str(tmp / "emulator"),
            "BATCH_AGENT_EMULATOR_DELAY": "0",
            "BATCH_AGENT_SPOOL_DIR": str(tmp / "spool"),
        }
        result = CliRunner().invoke(app, [*args, "--wait", "--poll-interval", "0.1"], env=env)
        assert result.exit_code == 0, result.output
    return db


@pytest.mark.parametrize(
    "command",
    [
        ["status", "small"],
        ["status", "small", "--json"],
        ["threads"],
        ["results", "small"],
        ["status", "gem"],
        ["results", "gem"],
    ],
    ids=" ".join,
)
def test_read_only_commands_load_nothing_heavy(database: Path, command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *command, "--db", str(database)],
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    probe = json.loads(done.stderr.strip().splitlines()[-1])
    assert probe == {"code": 0, "loaded": []}, done.stderr
    assert done.stdout.strip()


def _graph_values(db: Path, thread_id: str) -> tuple[dict[str, Any], str]:
    from agent.persistence import open_batch_graph

    with open_batch_graph(db) as graph:
        snapshot = graph.get_state({"configurable": {"thread_id": thread_id}})
        return dict(snapshot.values), str(snapshot.created_at)


def test_the_reader_gives_what_get_state_gives(database: Path) -> None:
    for thread_id in ("small", "other", "gem"):
        values, created_at = _graph_values(database, thread_id)
        assert "results" in values or thread_id == "other"
        assert read_thread(database, thread_id) == values  # every key, messages decoded
        wanted = {k: v for k, v in values.items() if k in READ_KEYS}
        assert read_thread(database, thread_id, READ_KEYS) == wanted
    listed = {t.thread_id: t for t in read_threads(database) or []}
    assert set(listed) == {"small", "other", "gem"}
    assert listed["small"].created_at == _graph_values(database, "small")[1]
    assert read_thread(database, "never-ran") == {}


def test_a_thread_stopped_mid_step_is_left_to_langgraph(tmp_path: Path) -> None:
    """Pending writes (a run killed between a node's end and the next checkpoint): fall back."""
    import sqlite3

    db = tmp_path / "db.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,"
        " type, checkpoint, metadata);"
        "CREATE TABLE writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,"
        " channel, type, value);"
        "CREATE TABLE store (prefix, key, value);"
    )
    import ormsgpack

    blob = ormsgpack.packb({"ts": "now", "channel_values": {"status": "running"}})
    conn.execute("INSERT INTO checkpoints VALUES ('t', '', '1', NULL, 'msgpack', ?, NULL)", (blob,))
    conn.commit()
    assert read_thread(db, "t") == {"status": "running"}
    conn.execute(
        "INSERT INTO writes VALUES ('t', '', '1', 'task', '', 0, 'status', 'msgpack', ?)", (blob,)
    )
    conn.commit()
    conn.close()
    assert read_thread(db, "t") is None  # the caller compiles the graph and asks get_state
