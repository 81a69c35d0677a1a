"""`run --wait` exit codes: 0 when every request succeeded, 3 when the thread finished with failed
requests (results still written), 0 again with `--allow-failures`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.cli.app import app
from agent.cli.errors import EXIT_FAILED_REQUESTS

REJECT = "[emulator:reject]"  # the emulator fails such a request with HTTP 400, not retried
FAST = ["--wait", "--poll-interval", "0.1", "--poll-backoff", "1"]
# Keyless, each runs on the emulator's protocol of that provider (`emulator` is OpenAI's).
PROVIDERS = ["openai", "mistral", "anthropic", "gemini"]


def _records(rejected: int, accepted: int) -> list[dict[str, Any]]:
    bad = [{"id": f"bad{i}", "prompt": f"Ticket {i} {REJECT}"} for i in range(rejected)]
    return bad + [{"id": f"ok{i}", "prompt": f"Ticket {i}: hello"} for i in range(accepted)]


def _run_wait(
    tmp_path: Path, records: list[dict[str, Any]], *extra: str, provider: str = "emulator"
) -> tuple[Any, Path]:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.jsonl"
    db = str(tmp_path / "db.sqlite")
    args = ["run", str(source), "--db", db, "--provider", provider, *FAST, "--out", str(out)]
    result = CliRunner().invoke(app, [*args, *extra])
    return result, out


@pytest.mark.parametrize("provider", PROVIDERS)
def test_exit_code_3_when_every_request_failed_with_results_written(
    tmp_path: Path, provider: str
) -> None:
    result, out = _run_wait(tmp_path, _records(rejected=3, accepted=0), provider=provider)
    assert EXIT_FAILED_REQUESTS == 3
    assert result.exit_code == 3, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["failed"] * 3 and all(r["error"] for r in rows)
    assert "3 of 3 requests failed (their errors are in the results): exit code 3" in result.output


@pytest.mark.parametrize("provider", PROVIDERS)
def test_exit_code_3_when_some_requests_failed(tmp_path: Path, provider: str) -> None:
    result, out = _run_wait(tmp_path, _records(rejected=1, accepted=2), provider=provider)
    assert result.exit_code == 3, result.output
    assert "1 of 3 requests failed" in result.output
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize(("rejected", "accepted"), [(3, 0), (1, 2)])
def test_allow_failures_exits_0(tmp_path: Path, rejected: int, accepted: int) -> None:
    result, out = _run_wait(tmp_path, _records(rejected, accepted), "--allow-failures")
    assert result.exit_code == 0, result.output
    assert f"{rejected} of 3 requests failed (allowed by --allow-failures)" in result.output
    assert len(out.read_text().splitlines()) == 3


def test_exit_code_0_when_every_request_succeeded(tmp_path: Path) -> None:
    result, _ = _run_wait(tmp_path, _records(rejected=0, accepted=3))
    assert result.exit_code == 0, result.output
    assert "requests failed" not in result.output


def test_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(app, ["run", "--help"])
    assert "--allow-failures" in result.output
    assert "3 when the thread finished" in " ".join(result.output.split())
