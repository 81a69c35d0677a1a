"""How `batch-agent` fails: one `error:` line for a usage error, the right column for malformed
JSON, and a programming error that says it is a bug (with its traceback under `--debug`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.requests import InputError, iter_file_requests

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# A programming error in the middle of `status --json`: the report cannot be encoded, as when a
# value of the wrong type gets into it. json.dumps (the standard library) raises the TypeError.
BUG = """
import json, sys
def broken(*args, **kwargs):
    raise TypeError("Object of type Oops is not JSON serializable")
json.dumps = broken
sys.argv = ["batch-agent", *sys.argv[1:]]
from agent.cli import main
main()
"""


def _batch_agent(
    tmp_path: Path, *args: str, code: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the console script's entry point (`agent.cli:main`) in a fresh process."""
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "agent.cli"]
    return subprocess.run(
        command if code else [*command, *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def finished_thread(tmp_path: Path) -> Path:
    """A database with one finished emulator batch on thread `done`."""
    from typer.testing import CliRunner

    from agent.cli.app import app

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "prompt": "hi"}) + "\n")
    db = tmp_path / "db.sqlite"
    args = ["run", str(source), "--provider", "emulator", "--db", str(db), "--thread", "done"]
    result = CliRunner().invoke(app, [*args, "--wait", "--poll-interval", "0.1"])
    assert result.exit_code == 0, result.output
    return db


def test_a_usage_error_is_one_error_line(tmp_path: Path) -> None:
    done = _batch_agent(tmp_path, "results", "t", "--format", "xml")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "'xml'" in lines[0] and "--format" in lines[0]
    assert "batch-agent results --help" in lines[0]


def test_a_programming_error_says_it_is_a_bug(finished_thread: Path, tmp_path: Path) -> None:
    done = _batch_agent(
        tmp_path, "status", "done", "--db", str(finished_thread), "--json", code=BUG
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: internal error in batch-agent (TypeError: Object of")
    assert "This is a bug" in done.stderr and "--debug" in done.stderr


@pytest.mark.parametrize("how", ["flag", "flag-last", "env"])
def test_debug_prints_the_traceback(finished_thread: Path, tmp_path: Path, how: str) -> None:
    args = ["status", "done", "--db", str(finished_thread), "--json"]
    if how == "flag":
        done = _batch_agent(tmp_path, "--debug", *args, code=BUG)
    elif how == "flag-last":
        done = _batch_agent(tmp_path, *args, "--debug", code=BUG)
    else:
        done = _batch_agent(tmp_path, *args, code=BUG, BATCH_AGENT_DEBUG="1")
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):"), done.stderr
    assert "in broken\nTypeError: Object of type Oops is not JSON serializable\n" in done.stderr
    assert "error: internal error in batch-agent (TypeError" in done.stderr


def test_an_ordinary_error_stays_one_line(tmp_path: Path) -> None:
    done = _batch_agent(tmp_path, "status", "nope", "--db", str(tmp_path / "missing.sqlite"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: no checkpoint database at {tmp_path / 'missing.sqlite'}: name the one `run` "
        "used with --db or BATCH_AGENT_DB"
    ]


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ('{"id":"b","prompt": "oops"', 27),  # ends early: the column after the last character
        ('{"id":"b","prompt": "oops" x}', 28),
        ('{"id":"b","prompt": "ooéps" x}', 29),  # characters, not bytes
        ('{"id":"b" "prompt": "oops"}', 11),
    ],
)
def test_malformed_json_names_the_column_in_its_line(
    tmp_path: Path, line: str, column: int
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "prompt": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as raised:
        list(iter_file_requests(path))
    assert str(raised.value).startswith("in.jsonl:2: malformed JSON: ")
    assert str(raised.value).endswith(f" at column {column}")


def test_debug_tracebacks_mask_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from agent.cli.errors import CliError, report_error

    key = "sk-canary-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    try:
        try:
            raise RuntimeError(f"401: Incorrect API key provided: {key}")  # as an SDK words it
        except RuntimeError as sdk_error:
            raise CliError("the provider refused the key") from sdk_error
    except CliError as exc:
        out = io.StringIO()
        report_error(exc, out, debug=True)
    text = out.getvalue()
    assert "Incorrect API key provided: [redacted]" in text
    assert key not in text and "error: the provider refused the key" in text
