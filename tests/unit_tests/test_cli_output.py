"""What the CLI shows: `status` at 80 columns never cuts an ID, `status --json` has the fields the
README lists, the wait display's first frame and countdown, and `--check-models`."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agent.cli.app import app
from agent.cli.progress import WaitDisplay

README = Path(__file__).resolve().parents[2] / "README.md"
NOTICE = "No OPENAI_API_KEY set: using the offline batch emulator (openai protocol)"


# Each provider's default model; keyless, each runs on the emulator's protocol of that provider.
MODELS = {
    "openai": "gpt-4o-mini",
    "mistral": "mistral-small-latest",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
}


@pytest.fixture(params=list(MODELS))
def finished(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str, str]:
    """A database with one finished emulated batch; returns it, the thread's only job ID and
    its provider.

    Once per provider: their job IDs differ in form and length (Gemini's `batches/<id>`).
    """
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"r{i}", "prompt": f"hi {i}"}) + "\n" for i in range(2))
    )
    db = tmp_path / "db.sqlite"
    args = ["run", str(source), "--provider", request.param, "--db", str(db), "--thread", "t1"]
    result = CliRunner().invoke(
        app, [*args, "--wait", "--poll-interval", "0.1", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(CliRunner().invoke(app, ["status", "t1", "--db", str(db), "--json"]).stdout)
    assert report["jobs"][0]["provider"] == request.param
    return db, report["jobs"][0]["job_id"], request.param


def test_status_at_80_columns_prints_every_id_and_model_whole(
    finished: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, job_id, provider = finished
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(app, ["status", "t1", "--db", str(db)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert table and all(len(line) <= 80 for line in table), result.stdout
    # No column is cropped at the edge: every line of the table ends on its border.
    assert all(line.rstrip()[-1] in "┓┃┩│┘" for line in table), result.stdout
    assert any(job_id in line for line in lines), result.stdout  # on one line: copy-pasteable
    assert any(MODELS[provider] in line for line in lines), result.stdout
    assert "…" not in result.stdout
    assert f"completed · {provider} (emulator)" in lines[0]


def test_status_on_a_wide_terminal_keeps_the_ids_in_the_table(
    finished: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, job_id, provider = finished
    monkeypatch.setenv("COLUMNS", "160")
    out = CliRunner().invoke(app, ["status", "t1", "--db", str(db)]).stdout
    row = rf"│ {re.escape(job_id)} +│ {MODELS[provider]}"
    assert re.search(row, out), out
    assert f"completed · {provider} (emulator)" in out.splitlines()[0]


def _readme_fields(pattern: str) -> list[str]:
    text = README.read_text()
    bullet = text[text.index("- `status --json` prints one object") :]
    match = re.search(pattern, bullet, re.S)
    assert match, pattern
    return re.findall(r"`(\w+)`", match.group(1))


def test_status_json_has_exactly_the_fields_the_readme_lists(
    finished: tuple[Path, str, str],
) -> None:
    db, _, _ = finished
    report = json.loads(CliRunner().invoke(app, ["status", "t1", "--db", str(db), "--json"]).stdout)
    assert list(report) == _readme_fields(r"with the fields (.*?)\.\s")
    assert list(report["jobs"][0]) == _readme_fields(r"Each job has the\s+fields (.*?)\. It reads")
    job = report["jobs"][0]
    assert job["attempt"] == 1 and re.fullmatch(r"[0-9a-f]{32}", job["key"])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _event(done: int, next_check: float | None = 5.0) -> dict[str, object]:
    return {
        "event": "batch_progress",
        "status": "running",
        "counts": {"total": 40, "succeeded": done, "failed": 0, "pending": 40 - done},
        "jobs": [{"job_id": "batch_1", "provider_status": "in_progress"}],
        "next_check_seconds": next_check,
    }


def _plain(text: str) -> str:
    """Terminal output without its control sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_the_first_run_s_notice_is_not_glued_to_an_empty_bar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As in `batch-agent run --wait` on a terminal: the console writes to stderr, and logging
    # (the emulator notice) holds the stderr stream it was given by `logging.basicConfig`.
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = logging.StreamHandler(terminal)
    logging.getLogger().addHandler(handler)
    try:
        console = Console(stderr=True, force_terminal=True, width=100)
        with WaitDisplay(console, "thread-abc", clock=FakeClock()) as display:
            logging.getLogger("agent.providers").warning(NOTICE)  # the first run plans, submits
            display.event(_event(10))
            logging.getLogger("agent.graph").warning("a later warning")
            display.event(_event(20))
    finally:
        logging.getLogger().removeHandler(handler)
    text = _plain(terminal.getvalue())
    assert "0/?" not in text  # no frame was drawn before there was anything to show
    lines = text.replace("\r", "\n").splitlines()
    assert any(line.startswith(NOTICE) for line in lines), text
    assert any(line.startswith("a later warning") for line in lines), text
    assert "20/40" in text


def test_next_check_counts_down_between_checks() -> None:
    out = io.StringIO()
    clock = FakeClock()
    console = Console(file=out, force_terminal=True, width=120)
    with WaitDisplay(console, "thread-abc", clock=clock) as display:
        display.event(_event(10, next_check=30))
        assert _wait_for(out, "next check in 30s"), _plain(out.getvalue())[-400:]
        clock.now += 12  # no new event: only time passes
        assert _wait_for(out, "next check in 18s"), _plain(out.getvalue())[-400:]


def _wait_for(out: io.StringIO, text: str, seconds: float = 3.0) -> bool:
    """Wait (real time) for the bar's own refresh (10 a second) to draw `text`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in _plain(out.getvalue()):
            return True
        time.sleep(0.05)
    return False


def test_plan_takes_check_models(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"id": "a", "prompt": "hi", "params": {"model": "house-no-such-model-7"}}) + "\n"
    )
    args = ["plan", str(source), "--provider", "emulator"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0 and "unknown model 'house-no-such-model-7'" in str(
        refused.exception
    )
    allowed = CliRunner().invoke(app, [*args, "--no-check-models", "--json"])
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["jobs"][0]["model"] == "house-no-such-model-7"


def test_run_takes_check_models(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "prompt": "hi"}) + "\n")
    db = tmp_path / "db.sqlite"
    args = [
        "run",
        str(source),
        "--provider",
        "emulator",
        "--model",
        "house-no-such-model-7",
        "--db",
        str(db),
    ]
    refused = CliRunner().invoke(app, [*args, "--thread", "no"])
    assert refused.exit_code != 0 and "unknown model 'house-no-such-model-7'" in str(
        refused.exception
    )
    allowed = CliRunner().invoke(app, [*args, "--thread", "yes", "--no-check-models"])
    assert allowed.exit_code == 0, allowed.output
    report = json.loads(
        CliRunner().invoke(app, ["status", "yes", "--db", str(db), "--json"]).stdout
    )
    assert report["jobs"][0]["model"] == "house-no-such-model-7"
