"""`batch-agent results --format csv`: a CSV that reads back to the same ids, statuses and answers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

from agent.cli import app
from agent.export import CSV_COLUMNS

# Commas, quotes, a newline and non-ASCII text in the answers; one request the emulator refuses.
RECORDS = [
    {"id": "plain", "prompt": "Say hello"},
    {"id": "tricky", "prompt": 'Quote "this", then\nthat — ünïcode, ok'},
    {"id": "refused", "prompt": "Please [emulator:reject]"},
    {"id": "capped", "prompt": "A long question with many words", "params": {"max_tokens": 3}},
]


def test_csv_export_round_trips_ids_statuses_and_contents(tmp_path: Path) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    db = str(tmp_path / "checkpoints.sqlite")
    runner = CliRunner()
    fast = ["--poll-interval", "0.1", "--poll-backoff", "1"]
    run = runner.invoke(
        app,
        ["run", str(source), "--thread", "t-csv", "--db", db, "--wait", *fast]
        + ["--out", str(tmp_path / "x.csv"), "--format", "csv"],
        catch_exceptions=False,
    )
    assert run.exit_code == 0, run.output
    jsonl = runner.invoke(app, ["results", "t-csv", "--db", db], catch_exceptions=False)
    assert jsonl.exit_code == 0
    expected = [json.loads(line) for line in jsonl.stdout.splitlines()]
    as_csv = runner.invoke(
        app, ["results", "t-csv", "--db", db, "--format", "csv"], catch_exceptions=False
    )
    assert as_csv.exit_code == 0

    for text in (as_csv.stdout, (tmp_path / "x.csv").read_text(encoding="utf-8")):
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        assert [(r["id"], r["status"]) for r in rows] == [(e["id"], e["status"]) for e in expected]
        assert [r["id"] for r in rows] == [r["id"] for r in RECORDS]
        assert [r["content"] for r in rows] == [e["content"] or "" for e in expected]
        assert rows[1]["content"] == 'Emulated reply to: Quote "this", then\nthat — ünïcode, ok'
        assert [int(r["output_tokens"]) for r in rows] == [
            e["usage"]["output_tokens"] for e in expected
        ]
        assert rows[2]["status"] == "failed" and rows[2]["error"].startswith("invalid_request: ")
        assert rows[0]["error"] == ""
