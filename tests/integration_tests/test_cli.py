"""The `batch-agent` CLI in separate processes: resume across processes, loopback emulator, bad input.

The CLI runs in children forked from a preloaded fork server (`tests.cli_process`), except where the
exec'd console script is the point (the first `run` of `test_resume_across_processes`, the module
entry point). The emulator's jobs are counted with `agent.emulator.list_jobs` in this process; the
`emulator jobs --json` command itself is tested over loopback.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.emulator import list_jobs, read_access_log
from tests.cli_process import run_cli, start_cli
from tests.integration_tests.conftest import BIN, PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow

TICKETS = PROJECT_ROOT / "examples" / "tickets.jsonl"


def cli(
    tmp: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `batch-agent ARGS` in a separate (forked) process with an isolated environment."""
    return run_cli(args, tmp, env or clean_env(tmp), timeout=timeout)


def exec_cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `batch-agent ARGS` through the installed console script, in a fresh interpreter."""
    return subprocess.run(
        [str(BIN / "batch-agent"), *args],
        cwd=tmp,
        env=clean_env(tmp),
        capture_output=True,
        text=True,
        timeout=120,
    )


def emulator_jobs(tmp: Path) -> list[dict[str, object]]:
    """The jobs the CLI's (in-process) emulator holds under `tmp` (read here, as the CLI would)."""
    return list_jobs(tmp / "emulator")


def test_resume_across_processes(tmp_path: Path) -> None:
    submitted = exec_cli(tmp_path, "run", str(TICKETS))  # end to end through the console script
    assert submitted.returncode == 0, submitted.stderr
    assert "offline batch emulator" in submitted.stderr and "synthetic" in submitted.stderr
    match = re.search(r"thread (\S+)\s+status submitted", submitted.stdout)
    assert match, submitted.stdout
    thread = match.group(1)

    status = cli(tmp_path, "status", thread, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["status"] in {"submitted", "running"}
    assert report["counts"]["total"] == 20 and len(report["jobs"]) == 1
    job_id = report["jobs"][0]["job_id"]

    finished = cli(
        tmp_path,
        "run",
        "--thread",
        thread,
        "--wait",
        "--poll-interval",
        "0.3",
        "--out",
        "out.jsonl",
    )
    assert finished.returncode == 0, finished.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected_ids = [json.loads(line)["id"] for line in TICKETS.read_text().splitlines()]
    assert [r["id"] for r in rows] == expected_ids
    assert all(
        r["status"] == "succeeded"
        and r["error"] is None
        and r["content"].startswith("Emulated reply to:")
        for r in rows
    )
    assert all(
        r["usage"]["total_tokens"] == r["usage"]["input_tokens"] + r["usage"]["output_tokens"] > 0
        for r in rows
    )
    assert set(rows[0]) == {
        "id",
        "status",
        "content",
        "message",
        "usage",
        "error",
        "attempts",
        "via",
    }
    assert all(r["attempts"] == 1 and r["via"] == "batch" for r in rows)

    again = cli(tmp_path, "results", thread)
    assert again.returncode == 0, again.stderr
    assert [json.loads(line) for line in again.stdout.splitlines()] == rows

    final = json.loads(cli(tmp_path, "status", thread, "--json").stdout)
    assert final["status"] == "completed" and final["counts"]["succeeded"] == 20
    jobs = emulator_jobs(tmp_path)
    assert [j["id"] for j in jobs] == [job_id]  # the provider saw exactly one job


@pytest.fixture
def loopback_emulator(tmp_path: Path) -> Iterator[str]:
    """`batch-agent emulator serve --port 0` in its own process; yields its base URL."""
    process = start_cli(
        ["emulator", "serve", "--port", "0", "--dir", str(tmp_path / "served")],
        tmp_path,
        clean_env(tmp_path),
    )
    try:
        line = process.first_line(timeout=60)
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line + process.stderr_so_far()
        yield match.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


# (provider, the path on the loopback emulator `--base-url` names, the API version Gemini's calls
# must use). google-genai talks to `v1` unless the URL ends in a version: both are served.
LOOPBACK = [
    ("openai", "/openai/v1", None),
    ("mistral", "/mistral", None),
    ("anthropic", "/anthropic", None),
    ("gemini", "/gemini", "v1"),
    ("gemini", "/gemini/v1beta", "v1beta"),
]


@pytest.mark.parametrize(
    ("provider", "suffix", "version"),
    LOOPBACK,
    ids=["openai", "mistral", "anthropic", "gemini-v1", "gemini-v1beta"],
)
def test_real_sdks_over_loopback_with_base_url(
    tmp_path: Path, loopback_emulator: str, provider: str, suffix: str, version: str | None
) -> None:
    env = clean_env(
        tmp_path,
        OPENAI_API_KEY="sk-loopback-test",
        MISTRAL_API_KEY="loopback-test",
        ANTHROPIC_API_KEY="sk-ant-loopback-test",
        GOOGLE_API_KEY="loopback-test-google",
    )
    done = cli(
        tmp_path,
        "run",
        str(TICKETS),
        "--provider",
        provider,
        "--base-url",
        loopback_emulator + suffix,
        "--thread",
        "loop",
        "--wait",
        "--poll-interval",
        "0.3",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "emulator" not in done.stderr  # a compatible endpoint, not the in-process emulator
    # Nothing of ours warns about requests the user never wrote (the fast paths' self-check
    # probes go through the LangChain classes, which warn about some of them).
    assert "Warning" not in done.stderr, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 20 and all(r["status"] == "succeeded" for r in rows)
    served = cli(tmp_path, "emulator", "jobs", "--json", "--dir", str(tmp_path / "served"))
    assert [j["provider"] for j in json.loads(served.stdout)] == [provider]
    if version is not None:
        # Every batch and file call went to the API version the URL named (uploads have their
        # own `/upload/<version>/files` path).
        calls = [e["path"] for e in read_access_log(tmp_path / "served")]
        assert calls and all(p.startswith(("/gemini/upload/", "/gemini/v")) for p in calls)
        assert {p.split("/")[2] for p in calls if not p.startswith("/gemini/upload/")} == {version}
        assert {p.split("/")[3] for p in calls if p.startswith("/gemini/upload/")} == {version}

    # The stored results export as they were printed (JSONL) and as CSV, from this process's
    # checkpoint database: no provider call is needed.
    again = cli(tmp_path, "results", "loop", env=env)
    assert again.returncode == 0, again.stderr
    assert [json.loads(line) for line in again.stdout.splitlines()] == rows
    as_csv = cli(tmp_path, "results", "loop", "--format", "csv", env=env)
    assert as_csv.returncode == 0, as_csv.stderr
    table = list(csv.DictReader(io.StringIO(as_csv.stdout, newline="")))
    assert [(r["id"], r["status"], r["content"], r["error"]) for r in table] == [
        (r["id"], "succeeded", r["content"], "") for r in rows
    ]
    assert [(int(r["input_tokens"]), int(r["output_tokens"])) for r in table] == [
        (r["usage"]["input_tokens"], r["usage"]["output_tokens"]) for r in rows
    ]


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("", (), "in.jsonl: no requests: the input is empty"),
        (
            '{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n',
            (),
            "in.jsonl:2: duplicate id",
        ),
        ('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": \n', (), "in.jsonl:2: malformed JSON"),
        ('{"id": "a", "prompt": "x"}\n', ("--provider", "bogus"), "unknown provider 'bogus'"),
    ],
    ids=["empty", "duplicate-ids", "malformed-line", "unknown-provider"],
)
def test_bad_input_fails_with_one_line_and_uploads_nothing(
    tmp_path: Path, content: str, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "in.jsonl").write_text(content)
    done = cli(tmp_path, "run", "in.jsonl", *args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert emulator_jobs(tmp_path) == []
    assert not list((tmp_path / "emulator").rglob("file-*")), "nothing may be uploaded"


def test_unknown_thread_and_unfinished_results_are_clear_errors(tmp_path: Path) -> None:
    db = tmp_path / "checkpoints.sqlite"
    for command in (["status", "t"], ["results", "t"], ["threads"], ["run", "--thread", "t"]):
        done = cli(tmp_path, *command)
        assert done.returncode == 1, command
        assert f"error: no checkpoint database at {db}" in done.stderr, done.stderr
    assert not db.exists()  # a mistyped --db leaves no empty database behind

    env = clean_env(tmp_path, BATCH_AGENT_EMULATOR_DELAY="60")
    submitted = cli(tmp_path, "run", str(TICKETS), env=env)
    thread = re.search(r"thread (\S+)", submitted.stdout).group(1)  # type: ignore[union-attr]
    done = cli(tmp_path, "status", "no-such-thread")
    assert done.returncode == 1 and "no batch thread 'no-such-thread'" in done.stderr
    early = cli(tmp_path, "results", thread, env=env)
    assert early.returncode == 1 and "not collected yet" in early.stderr


def test_module_entry_point_matches_console_script(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
    )
    assert (
        done.returncode == 0
        and "run" in done.stdout
        and "status" in done.stdout
        and "results" in done.stdout
    )


def test_cancel_command_collects_partial_results(tmp_path: Path) -> None:
    # A 60 s job, whose OpenAI-protocol requests complete from 6 s to 48 s: a cancel sent 15 s
    # after the job's creation lands mid-job however slow the machine is.
    tickets = tmp_path / "slow-tickets.jsonl"
    tickets.write_text(
        "".join(
            json.dumps(
                {**json.loads(line), "prompt": f"{json.loads(line)['prompt']} [emulator:delay=60]"}
            )
            + "\n"
            for line in TICKETS.read_text().splitlines()
        )
    )
    env = clean_env(tmp_path)
    submitted = cli(tmp_path, "run", str(tickets), env=env)
    thread = re.search(r"thread (\S+)", submitted.stdout).group(1)  # type: ignore[union-attr]
    (job,) = list_jobs(tmp_path / "emulator")
    time.sleep(max(0.0, float(job["created_at"]) + 15 - time.time()))
    cancelled = cli(tmp_path, "cancel", thread, "--poll-interval", "0.2", env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    report = json.loads(cli(tmp_path, "status", thread, "--json", env=env).stdout)
    assert report["status"] == "cancelled"
    assert report["jobs"][0]["provider_status"] == "cancelled"
    rows = [
        json.loads(line) for line in cli(tmp_path, "results", thread, env=env).stdout.splitlines()
    ]
    assert len(rows) == 20
    statuses = {r["status"] for r in rows}
    assert statuses == {"succeeded", "failed"}  # partial output kept, the rest accounted for
    again = cli(tmp_path, "cancel", thread, env=env)
    assert again.returncode == 1 and "already 'cancelled'" in again.stderr


def test_ctrl_c_while_waiting_says_how_to_resume(tmp_path: Path) -> None:
    env = clean_env(tmp_path, BATCH_AGENT_EMULATOR_DELAY="8")
    # The child's SIGINT is live, as a terminal's is (`start_cli` sees to it).
    waiting = start_cli(["run", str(TICKETS), "--thread", "t-int", "--wait"], tmp_path, env)
    deadline = time.time() + 60
    while not emulator_jobs(tmp_path) and time.time() < deadline:
        time.sleep(0.2)
    waiting.send_signal(signal.SIGINT)
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 130, stderr
    assert "interrupted: thread t-int is saved" in stderr
    assert "resume: batch-agent run --thread t-int --wait" in stderr
    assert "Traceback" not in stderr

    # The hint works: the same job is picked up (not submitted again) and finished.
    resumed = cli(tmp_path, "run", "--thread", "t-int", "--wait", "--poll-interval", "0.5", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert len(resumed.stdout.splitlines()) == 20
    assert len(emulator_jobs(tmp_path)) == 1


def test_another_request_set_on_a_thread_is_refused_and_the_thread_goes_on(tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "x1", "prompt": "something else"}\n')
    assert cli(tmp_path, "run", str(TICKETS), "--thread", "T").returncode == 0
    refused = cli(tmp_path, "run", str(other), "--thread", "T", "--wait")
    assert refused.returncode == 1
    assert "already holds a batch of 20 requests" in refused.stderr
    assert "of 1 request " in refused.stderr and "new thread" in refused.stderr
    assert "Traceback" not in refused.stderr
    # The thread is as it was: resuming it finishes A's batch with A's results, on one job.
    done = cli(
        tmp_path, "run", "--thread", "T", "--wait", "--poll-interval", "0.3", "--out", "a.jsonl"
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert (
        len(rows) == 20 and rows[0]["id"] == json.loads(TICKETS.read_text().splitlines()[0])["id"]
    )
    again = cli(tmp_path, "run", str(other), "--thread", "T")  # a finished thread refuses too
    assert again.returncode == 1 and "already holds a batch of 20 requests" in again.stderr
    assert len(emulator_jobs(tmp_path)) == 1


def test_a_thread_rerun_after_its_database_is_deleted_creates_no_second_job(
    tmp_path: Path,
) -> None:
    assert cli(tmp_path, "run", str(TICKETS), "--thread", "nightly").returncode == 0
    for path in tmp_path.glob("checkpoints.sqlite*"):
        # The worker's disk is gone, with the database's journal files and thread locks.
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    done = cli(
        tmp_path, "run", str(TICKETS), "--thread", "nightly", "--wait", "--poll-interval", "0.3"
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 20
    assert len(emulator_jobs(tmp_path)) == 1


def test_run_wait_exits_3_when_requests_failed(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"id": "ok", "prompt": "Say hello"})
        + "\n"
        + json.dumps({"id": "no", "prompt": "Refuse this [emulator:reject]"})
        + "\n"
    )
    wait = ("--wait", "--poll-interval", "0.3", "--poll-backoff", "1")
    failed = cli(tmp_path, "run", "in.jsonl", "--thread", "f", *wait, "--out", "out.jsonl")
    assert failed.returncode == 3, failed.stderr
    assert "1 of 2 requests failed" in failed.stderr and "Traceback" not in failed.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["succeeded", "failed"]

    # Resuming the finished thread reports the same; --allow-failures accepts it.
    again = cli(tmp_path, "run", "--thread", "f", *wait, "--out", "again.jsonl")
    assert again.returncode == 3, again.stderr
    allowed = cli(tmp_path, "run", "--thread", "f", *wait, "--allow-failures", "--out", "a.jsonl")
    assert allowed.returncode == 0, allowed.stderr
