"""`batch-agent results --format csv`: a CSV that reads back to the same ids, statuses and answers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

from agent.cli.app import app
from agent.export import CSV_COLUMNS, write_results

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
        + ["--out", str(tmp_path / "x.csv"), "--format", "csv", "--allow-failures"],
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


def test_csv_defuses_answers_a_spreadsheet_would_run_as_formulas() -> None:
    # A ticket can talk a model into answering a formula; ids stay exactly as given.
    answers = {
        "=1": '=HYPERLINK("http://evil.example","click")',
        "+2": "+1+1",
        "-3": "-2+3",
        "@4": "@SUM(A1:A2)",
        "tab": "\t=1+1",
        "plain": "A normal answer = fine",
    }
    lines = [
        json.dumps(
            {
                "id": rid,
                "status": "succeeded",
                "content": text,
                "usage": {"input_tokens": 1, "output_tokens": 2},
            }
        )
        for rid, text in answers.items()
    ]
    lines.append(
        json.dumps(
            {
                "id": "bad",
                "status": "failed",
                "content": None,
                "error": {"code": "=bad", "message": "x"},
            }
        )
    )
    out = io.BytesIO()
    assert write_results([("\n".join(lines) + "\n").encode()], out, "csv") == len(lines)
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode(), newline="")))
    assert [r["id"] for r in rows] == [*answers, "bad"]
    assert [r["content"] for r in rows[:-1]] == [
        "'" + text if rid != "plain" else text for rid, text in answers.items()
    ]
    assert rows[-1]["error"] == "'=bad: x"
