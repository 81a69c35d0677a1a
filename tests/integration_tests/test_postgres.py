"""PostgreSQL persistence and concurrent workers: real CLI processes sharing one database.

A module fixture starts a throwaway server with `scripts/postgres.sh` (installing PostgreSQL with
apt-get when it is missing) and stops it afterwards. Workers racing on one thread must never run
the graph at the same time: exactly one provider job and one collect per thread. The emulator's
`create_delay` holds each create response back, which widens the race window: without the thread
lock two workers on one thread then collect twice, and sometimes create two jobs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.emulator import list_jobs, read_access_log
from agent.persistence import open_persistence, redact_db_url, resolve_db
from tests.cli_process import run_cli, start_cli, start_forked
from tests.integration_tests.conftest import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow

SCRIPT = PROJECT_ROOT / "scripts" / "postgres.sh"
TICKETS = PROJECT_ROOT / "examples" / "tickets.jsonl"
TICKET_IDS = [json.loads(line)["id"] for line in TICKETS.read_text().splitlines()]
RACE_FAULTS = "create_delay=1"


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 for this module (its URL); stopped afterwards."""
    state = tmp_path_factory.mktemp("postgres")
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", str(state)],
        capture_output=True,
        text=True,
        timeout=900,  # a first run installs PostgreSQL with apt-get
    )
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        url = started.stdout.strip().splitlines()[-1]
        assert url.startswith("postgresql://postgres@127.0.0.1:"), started.stdout
        yield url
    finally:
        stopped = subprocess.run(
            ["bash", str(SCRIPT), "stop", str(state)], capture_output=True, text=True, timeout=120
        )
        assert stopped.returncode == 0, stopped.stderr


def cli(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `batch-agent ARGS` to completion in a separate (forked) process."""
    return run_cli(args, tmp, env)


def run_workers(tmp: Path, env: dict[str, str], threads: list[str]) -> list[Path]:
    """Start one `run --wait` worker per entry of `threads` at once; return their outputs."""
    outs = [tmp / f"out{n}.jsonl" for n in range(len(threads))]
    workers = [
        start_cli(
            ["run", str(TICKETS), "--thread", thread, "--wait", "--poll-interval", "0.2"]
            + ["--out", str(out)],
            tmp,
            {**env, "PYTHONFAULTHANDLER": "1"},
        )
        for thread, out in zip(threads, outs, strict=True)
    ]
    for worker in workers:
        try:
            _, stderr = worker.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            # PYTHONFAULTHANDLER: SIGABRT makes a stuck worker print every thread's stack.
            stacks = []
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGABRT)
                stacks.append(w.communicate(timeout=30)[1][-6000:])
            pytest.fail("a worker hung:\n" + "\n----\n".join(stacks))
        assert worker.returncode == 0, stderr
    return outs


def jobs_of(tmp: Path, thread: str) -> list[dict[str, Any]]:
    """The workers' (in-process) emulator's jobs for `thread`, read here from its state."""
    return [
        j
        for j in list_jobs(tmp / "emulator")
        if (j.get("metadata") or {}).get("batch_agent_thread") == thread
    ]


def output_downloads(tmp: Path) -> int:
    """How many times the workers downloaded a result file (one per collect of a job)."""
    return sum(
        row["method"] == "GET" and row["path"].endswith("/content")
        for row in read_access_log(tmp / "emulator")
    )


def assert_complete(out: Path) -> None:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == TICKET_IDS
    assert all(r["status"] == "succeeded" for r in rows)


def race_one_thread(tmp: Path, db: str) -> None:
    env = clean_env(tmp, BATCH_AGENT_DB=db, BATCH_AGENT_EMULATOR_FAULTS=RACE_FAULTS)
    thread = f"same-{uuid.uuid4().hex[:8]}"
    for out in run_workers(tmp, env, [thread, thread]):
        assert_complete(out)
    assert len(jobs_of(tmp, thread)) == 1  # never submitted twice
    assert output_downloads(tmp) == 1  # never collected twice


def test_two_workers_on_one_thread_postgres(tmp_path: Path, postgres_url: str) -> None:
    race_one_thread(tmp_path, postgres_url)


def test_two_workers_on_one_thread_sqlite(tmp_path: Path) -> None:
    race_one_thread(tmp_path, str(tmp_path / "shared.sqlite"))


def test_two_threads_then_status_and_results_from_a_third_process(
    tmp_path: Path, postgres_url: str
) -> None:
    env = clean_env(tmp_path, BATCH_AGENT_DB=postgres_url, BATCH_AGENT_EMULATOR_FAULTS=RACE_FAULTS)
    suffix = uuid.uuid4().hex[:8]
    threads = [f"a-{suffix}", f"b-{suffix}"]
    outs = run_workers(tmp_path, env, threads)
    for out in outs:
        assert_complete(out)
    jobs = {thread: jobs_of(tmp_path, thread) for thread in threads}
    assert all(len(found) == 1 for found in jobs.values())
    assert output_downloads(tmp_path) == 2

    # `--db` takes the URL too (typer makes it a Path, which turns `//` into `/`).
    env_without_db = {k: v for k, v in env.items() if k != "BATCH_AGENT_DB"}
    status = cli(tmp_path, env_without_db, "status", threads[0], "--json", "--db", postgres_url)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["status"] == "completed" and report["counts"]["succeeded"] == 20
    assert [j["job_id"] for j in report["jobs"]] == [jobs[threads[0]][0]["id"]]
    results = cli(tmp_path, env, "results", threads[1])
    assert results.returncode == 0, results.stderr
    assert results.stdout == outs[1].read_text()
    # Both threads are listed from the shared database (the server is shared across tests).
    listed = cli(tmp_path, env, "threads", "--json", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    found = {t["thread_id"]: t for t in json.loads(listed.stdout)}
    assert all(found[t]["status"] == "completed" and found[t]["jobs"] == 1 for t in threads)


def hold_lock(db: str, ready: str) -> None:
    """In a forked child: hold the lock of thread `locked-thread` in `db` until killed."""
    with open_persistence(db) as persistence, persistence.thread_lock("locked-thread"):
        Path(ready).touch()
        time.sleep(120)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_thread_lock_blocks_until_its_holder_dies(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    db = (
        str(tmp_path / "lock.sqlite")
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    ready = tmp_path / "held"
    holder = start_forked(hold_lock, db, str(ready))
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and holder.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), "the holder never took the lock"
        acquired = threading.Event()
        with open_persistence(db) as persistence:
            with persistence.thread_lock("another-thread"):
                pass  # other threads are not blocked

            def wait_for_lock() -> None:
                with persistence.thread_lock("locked-thread"):
                    acquired.set()

            waiter = threading.Thread(target=wait_for_lock, daemon=True)
            waiter.start()
            assert not acquired.wait(1.0)  # blocks while the holder lives
            holder.kill()  # SIGKILL
            assert acquired.wait(10.0)  # released by the holder's death
            waiter.join(5)
    finally:
        holder.kill()
        holder.join()


def test_workers_set_up_a_fresh_database_at_once(postgres_url: str) -> None:
    """The first setup runs `CREATE INDEX CONCURRENTLY`; workers waiting for it must not wedge it."""
    import psycopg

    name = f"fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    opened: list[str] = []

    def open_once() -> None:
        with open_persistence(url) as persistence:
            opened.append(persistence.location)

    workers = [threading.Thread(target=open_once, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    assert opened == [url] * 4


def test_urls_never_show_passwords(tmp_path: Path) -> None:
    url = "postgresql://batch:hunter2@127.0.0.1:1/db?sslmode=disable&password=hunter2"
    assert (
        redact_db_url(url) == "postgresql://batch:***@127.0.0.1:1/db?sslmode=disable&password=***"
    )
    assert redact_db_url("postgres://batch@host/db") == "postgres://batch@host/db"
    assert resolve_db(Path("postgresql://batch@host:5432/db")) == "postgresql://batch@host:5432/db"
    assert resolve_db(Path("checkpoints.sqlite")) == Path("checkpoints.sqlite")

    failed = cli(tmp_path, clean_env(tmp_path), "status", "some-thread", "--db", url)
    assert failed.returncode == 1
    assert "hunter2" not in failed.stderr + failed.stdout
    assert "postgresql://batch:***@127.0.0.1:1/db" in failed.stderr
