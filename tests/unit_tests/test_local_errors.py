"""Errors from the local side say where and what next: a locked, read-only or full database, a
read-only or full spool. Each is really provoked (a held SQLite lock, an immutable file, a tiny
tmpfs), and the command the message suggests really resumes the thread."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.app import app
from agent.emulator import read_access_log

RECORDS = [{"id": f"t{i}", "prompt": f"Classify ticket {i}: my invoice is wrong"} for i in range(3)]
FAST = ["--provider", "emulator", "--poll-interval", "0.1", "--poll-backoff", "1"]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def _run(*args: str) -> tuple[int, str]:
    """Run the CLI in process; return the exit code and the one-line error (or the output)."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, str(result.exception) if result.exception else result.output


def _suggested(message: str) -> list[str]:
    """The command a message ends with (`... then run again: batch-agent run ...`)."""
    command = shlex.split(message.rpartition("then run again: ")[2])
    assert command[0] == "batch-agent", message
    return command[1:]


def _finish(command: list[str], out: Path) -> None:
    """Run the suggested command (with fast polling) and check every request succeeded."""
    code, output = _run(*command, *FAST[2:], "--out", str(out))
    assert code == 0, output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in RECORDS]
    assert all(r["status"] == "succeeded" for r in rows)


@pytest.fixture
def unwritable() -> Iterator[list[Path]]:
    """Paths appended here are made unwritable, even for root (`chattr +i`), until teardown."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        else:
            path.chmod(0o755 if path.is_dir() else 0o644)


def _make_unwritable(paths: list[Path], path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o555 if path.is_dir() else 0o444)
    else:
        # Root ignores file modes; the immutable attribute stops it.
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"running as root and `chattr +i` fails here: {done.stderr.strip()!r}")
    paths.append(path)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test: a disk that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"a tiny tmpfs needs root with CAP_SYS_ADMIN: {done.stderr.strip()!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the disk holding `directory` to the last byte; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    return filler


def test_a_locked_database_names_it_the_thread_and_the_resume_command(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "db.sqlite"
    assert _run("run", str(source), "--db", str(db), "--thread", "first", *FAST)[0] == 0
    monkeypatch.setenv("BATCH_AGENT_DB_TIMEOUT", "0.2")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        code, message = _run("run", str(source), "--db", str(db), "--thread", "locked", *FAST)
    finally:
        holder.close()
    assert code != 0
    assert message == (
        f"the checkpoint database {db} is locked by another process (waited 0.2 s; "
        "BATCH_AGENT_DB_TIMEOUT sets how long). Thread locked keeps what was saved; wait for "
        f"the other process to finish, then run again: batch-agent run {source} --db {db} "
        "--thread locked --wait"
    )
    _finish(_suggested(message), tmp_path / "out.jsonl")


def test_a_read_only_database_is_named(
    tmp_path: Path, source: Path, unwritable: list[Path]
) -> None:
    db = tmp_path / "db.sqlite"
    assert _run("run", str(source), "--db", str(db), "--thread", "first", *FAST)[0] == 0
    _make_unwritable(unwritable, db)
    code, message = _run("run", str(source), "--db", str(db), "--thread", "ro", *FAST)
    assert code != 0
    assert message.startswith(f"the checkpoint database {db} is read-only. Thread ro keeps ")
    assert message.endswith(
        "make it writable or name another with --db / BATCH_AGENT_DB, then run again: "
        f"batch-agent run {source} --db {db} --thread ro --wait"
    )


def test_a_read_only_spool_is_named_before_anything_is_uploaded(
    tmp_path: Path, source: Path, unwritable: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"  # the conftest's BATCH_AGENT_SPOOL_DIR
    spool.mkdir()
    _make_unwritable(unwritable, spool)
    db = tmp_path / "db.sqlite"
    code, message = _run("run", str(source), "--db", str(db), "--thread", "sp", *FAST)
    assert code != 0
    assert message.startswith(f"cannot write the spool directory (BATCH_AGENT_SPOOL_DIR) {spool}: ")
    assert (
        "Thread sp keeps what was saved; make it writable or set BATCH_AGENT_SPOOL_DIR" in message
    )
    assert read_access_log() == []
    monkeypatch.setenv("BATCH_AGENT_SPOOL_DIR", str(tmp_path / "writable-spool"))
    _finish(_suggested(message), tmp_path / "out.jsonl")


def test_a_full_spool_disk_is_named_and_leaves_no_partial_file(
    tmp_path: Path, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_SPOOL_DIR", str(tiny_disk))
    big = tmp_path / "big.jsonl"  # about 2 MiB of input lines: more than the disk holds
    big.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "prompt": f"{i} " + "x" * 2000}) + "\n" for i in range(1000)
        )
    )
    code, message = _run("run", str(big), "--thread", "full", *FAST)
    assert code != 0
    assert message.startswith(
        f"cannot write the spool directory (BATCH_AGENT_SPOOL_DIR) {tiny_disk}: the disk is "
        "full. Thread full keeps what was saved; free some space, then run again: "
        f"batch-agent run {big} --thread full --wait"
    ), message
    assert list(tiny_disk.iterdir()) == []  # the half-written input file is gone
    assert read_access_log() == []


def test_a_full_database_disk_is_named(tmp_path: Path, source: Path, tiny_disk: Path) -> None:
    db = tiny_disk / "db.sqlite"
    assert _run("run", str(source), "--db", str(db), "--thread", "first", *FAST)[0] == 0
    filler = _fill(tiny_disk)
    code, message = _run("run", str(source), "--db", str(db), "--thread", "second", *FAST)
    assert code != 0
    assert message.startswith(f"the disk holding the checkpoint database {db} is full"), message
    assert message.endswith(
        f"free some space, then run again: batch-agent run {source} --db {db} --thread "
        "second --wait"
    )
    filler.unlink()  # space freed: the suggested command picks the thread up
    _finish(_suggested(message), tmp_path / "out.jsonl")
