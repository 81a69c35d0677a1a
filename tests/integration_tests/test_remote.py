"""`batch-agent ... --url`: the CLI drives a `langgraph dev` server and gets local mode's results."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import pytest
from langgraph_sdk import get_sync_client

from tests.integration_tests.test_cli import TICKETS, cli

pytestmark = pytest.mark.slow

# More than one store page (1,000 results) and more than `results_in_state`, so results must
# come page by page from the server's store; three requests the emulator refuses.
COUNT = 1200
FAILING = {7: "[emulator:reject]", 500: "[emulator:content_policy]", 1100: "[emulator:reject]"}


def write_requests(path: Path) -> list[str]:
    lines, ids = [], []
    for n in range(COUNT):
        request_id = f"r{n}"
        prompt = f"Classify ticket {n}: {FAILING.get(n, 'my invoice is wrong')}"
        if n % 3 == 0:
            record = {"id": request_id, "messages": [{"role": "user", "content": prompt}]}
        else:
            record = {"id": request_id, "prompt": prompt, "params": {"max_tokens": 4}}
        lines.append(json.dumps(record))
        ids.append(request_id)
    path.write_text("\n".join(lines) + "\n")
    return ids


def jsonl(path_or_text: Path | str) -> list[dict[str, object]]:
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    return [json.loads(line) for line in text.splitlines()]


def test_remote_run_status_results_match_local_mode(dev_server: str, tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    ids = write_requests(requests)
    wait = ("--wait", "--poll-interval", "0.3", "--poll-backoff", "1")

    local = cli(tmp_path, "run", str(requests), *wait, "--out", "local.jsonl", "--allow-failures")
    assert local.returncode == 0, local.stderr

    thread = str(uuid.uuid4())
    remote = cli(
        tmp_path,
        "run",
        str(requests),
        "--url",
        dev_server,
        "--provider",
        "emulator",
        "--thread",
        thread,
        *wait,
        "--out",
        "remote.jsonl",
    )
    # Three requests failed: exit code 3 (without --allow-failures), results written all the same.
    assert remote.returncode == 3, remote.stderr
    assert "3 of 1,200 requests failed" in remote.stderr
    local_rows, remote_rows = jsonl(tmp_path / "local.jsonl"), jsonl(tmp_path / "remote.jsonl")
    assert [r["id"] for r in remote_rows] == ids
    for field in ("id", "status", "content", "usage", "error"):
        assert [r[field] for r in remote_rows] == [r[field] for r in local_rows], field
    failed = {r["id"]: r["error"]["code"] for r in remote_rows if r["status"] == "failed"}
    assert failed == {
        "r7": "invalid_request",
        "r500": "content_policy_violation",
        "r1100": "invalid_request",
    }

    # The served thread is listed by `threads --url` (newest first, so it is there at any limit).
    listed = cli(tmp_path, "threads", "--url", dev_server, "--json", "--limit", "1")
    assert listed.returncode == 0, listed.stderr
    (newest,) = json.loads(listed.stdout)
    assert newest["thread_id"] == thread and newest["status"] == "completed"
    assert newest["counts"]["total"] == COUNT and newest["jobs"] == 1

    status = cli(tmp_path, "status", thread, "--url", dev_server, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["thread_id"] == thread and report["status"] == "completed"
    assert report["counts"] == {"total": COUNT, "succeeded": COUNT - 3, "failed": 3, "pending": 0}

    # Results again, from the server's store pages, as JSONL and as CSV.
    again = cli(tmp_path, "results", thread, "--url", dev_server)
    assert again.returncode == 0, again.stderr
    assert jsonl(again.stdout) == remote_rows
    as_csv = cli(tmp_path, "results", thread, "--url", dev_server, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout, newline="")))
    assert [(r["id"], r["status"]) for r in rows] == [(r["id"], r["status"]) for r in local_rows]
    assert rows[7]["error"].startswith("invalid_request: ") and rows[8]["error"] == ""
    assert int(rows[1]["output_tokens"]) == remote_rows[1]["usage"]["output_tokens"]  # type: ignore[index]

    # The served thread really holds the batch (one job on the server's emulator).
    client = get_sync_client(url=dev_server, api_key=None)
    values = client.threads.get_state(thread)["values"]
    assert values["request_count"] == COUNT and values["results_store"]["pages"] == 2
    assert values["results"] == []  # too many for thread state: only the store has them

    finished = cli(tmp_path, "cancel", thread, "--url", dev_server)
    assert finished.returncode == 1 and "nothing to cancel" in finished.stderr


def test_remote_bad_input_and_unknown_thread_fail_before_anything_is_sent(
    dev_server: str, tmp_path: Path
) -> None:
    client = get_sync_client(url=dev_server, api_key=None)
    before = len(client.threads.search(limit=1000))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "hi"}\n{"id": "a", "prompt": "again"}\n')
    done = cli(tmp_path, "run", str(bad), "--url", dev_server)
    assert done.returncode == 1
    assert "bad.jsonl:2: duplicate id" in done.stderr and "'a'" in done.stderr
    assert len(client.threads.search(limit=1000)) == before  # no thread, no run

    missing = str(uuid.uuid4())
    for command in (("status", missing), ("results", missing), ("run", "--thread", missing)):
        done = cli(tmp_path, *command, "--url", dev_server)
        assert done.returncode == 1
        assert f"no batch thread '{missing}' on {dev_server}" in done.stderr, done.stderr


def test_remote_run_sends_the_response_schema(dev_server: str, tmp_path: Path) -> None:
    schema = {
        "title": "Ticket",
        "type": "object",
        "properties": {"category": {"type": "string"}, "urgent": {"type": "boolean"}},
        "required": ["category", "urgent"],
    }
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    (tmp_path / "in.jsonl").write_text(
        '{"id": "a", "prompt": "Classify: card charged twice"}\n'
        '{"id": "b", "prompt": "Classify [emulator:schema_violation]"}\n'
    )
    done = cli(
        tmp_path,
        *("run", "in.jsonl", "--url", dev_server, "--provider", "emulator"),
        *("--schema", "schema.json", "--validate-schema", "--wait", "--poll-interval", "0.3"),
    )
    assert done.returncode == 3, done.stderr  # one answer breaks the schema on purpose
    good, broken = jsonl(done.stdout)
    assert good["status"] == "succeeded" and set(good["parsed"]) == {"category", "urgent"}
    # `--validate-schema` reaches the served run's context: the answer breaking it fails.
    assert broken["status"] == "failed" and broken["error"]["code"] == "schema"


def test_remote_cancel_stops_the_served_jobs_and_collects(dev_server: str, tmp_path: Path) -> None:
    """A job that takes 60 s on the server's emulator, cancelled through `cancel --url`."""
    # The example tickets, each asking the emulator for a 60 s job.
    tickets = tmp_path / "slow-tickets.jsonl"
    tickets.write_text(
        "".join(
            json.dumps({**row, "prompt": f"{row['prompt']} [emulator:delay=60]"}) + "\n"
            for row in jsonl(TICKETS)
        )
    )
    url = dev_server
    submitted = cli(tmp_path, "run", str(tickets), "--url", url, "--provider", "emulator")
    assert submitted.returncode == 0, submitted.stderr
    thread = submitted.stdout.split()[1]
    report = json.loads(cli(tmp_path, "status", thread, "--url", url, "--json").stdout)
    assert report["status"] in {"submitted", "running"} and report["counts"]["total"] == 20

    cancelled = cli(tmp_path, "cancel", thread, "--url", url, "--poll-interval", "0.5")
    assert cancelled.returncode == 0, cancelled.stderr
    report = json.loads(cli(tmp_path, "status", thread, "--url", url, "--json").stdout)
    assert report["status"] == "cancelled"
    assert report["jobs"][0]["provider_status"] == "cancelled"
    rows = jsonl(cli(tmp_path, "results", thread, "--url", url).stdout)
    # Every request is accounted for. What finished before the cancel landed is kept (on a loaded
    # machine the CLI calls above can take longer than the first requests' 6 s); the last ones
    # finish at 48 s, so some are always cancelled.
    assert len(rows) == 20 and {r["status"] for r in rows} <= {"succeeded", "failed"}
    assert any(r["status"] == "failed" for r in rows)
