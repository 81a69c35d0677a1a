"""Operating a batch: the completion webhook, progress events and the CLI's wait display, offline."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from rich.console import Console

from agent.cli.progress import WaitDisplay
from agent.cli.render import summary_table
from agent.context import Context
from agent.graph import build_graph
from agent.notify import safe_target, send_notice
from tests.support import WebhookReceiver, run_to_end

RECORDS = [{"id": f"n{i}", "prompt": f"Summarise note {i}"} for i in range(3)]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver(status=200)
    yield hook
    hook.close()


def test_standalone_thread_notifies_its_webhook_once(receiver: WebhookReceiver) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "hooked"}}
    context = Context(provider="emulator", webhook_url=receiver.url)
    values = run_to_end(graph, config, context, RECORDS)
    assert len(receiver.received) == 1
    notice = json.loads(receiver.bodies[0])
    assert notice["thread_id"] == "hooked" and notice["status"] == "completed"
    assert notice["counts"]["succeeded"] == 3
    assert notice["results"]["cli"] == "batch-agent results hooked"
    assert values["webhook"]["error"] is None and values["webhook"]["sent_at"]
    assert "s3cret-tok" not in json.dumps(values, default=str)
    # Later invocations of the finished thread send nothing more.
    graph.invoke({}, config, context=context)
    assert len(receiver.received) == 1


def test_webhook_that_refuses_is_given_up_on_without_failing_the_batch() -> None:
    refusing = WebhookReceiver(status=403)
    try:
        graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
        config = {"configurable": {"thread_id": "refused"}}
        context = Context(provider="emulator", webhook_url=refusing.url)
        values = run_to_end(graph, config, context, RECORDS)
    finally:
        refusing.close()
    assert values["status"] == "completed"  # the batch is unaffected
    assert len(refusing.received) == 1  # a 403 is not retried
    assert "HTTP 403" in values["webhook"]["error"]
    assert "s3cret-tok" not in values["webhook"]["error"]


def test_unreachable_webhook_is_retried_then_reported_by_host_only() -> None:
    pauses: list[float] = []
    problem = send_notice(
        "http://127.0.0.1:9/hook?token=s3cret-tok", {"thread_id": "t"}, sleep=pauses.append
    )
    assert problem is not None and "127.0.0.1" in problem and "s3cret-tok" not in problem
    assert len(pauses) == 2  # three tries
    assert safe_target("https://user:pw@hooks.example.com:8443/a/b?c=d") == (
        "https://hooks.example.com:8443"
    )


def test_each_status_check_streams_a_progress_event() -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "streamed"}}
    context = Context(provider="emulator", max_wait_seconds=20, poll_interval_seconds=0.2)
    events = list(
        graph.stream({"requests": RECORDS}, config, context=context, stream_mode="custom")
    )
    assert events and all(e["event"] == "batch_progress" for e in events)
    assert [e["polls"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["counts"] == {"total": 3, "succeeded": 3, "failed": 0, "pending": 0}
    assert events[-1]["next_check_seconds"] is None
    assert all(e["next_check_seconds"] > 0 for e in events[:-1])


def event(succeeded: int, status: str = "running") -> dict[str, Any]:
    return {
        "event": "batch_progress",
        "status": status,
        "counts": {"total": 40, "succeeded": succeeded, "failed": 2, "pending": 0},
        "jobs": [{"job_id": "batch_1", "provider_status": "in_progress"}],
        "next_check_seconds": 5.0,
    }


def test_wait_display_draws_a_bar_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with WaitDisplay(console, "thread-abc") as display:
        display.event(event(10))
        display.event(event(38))
    text = out.getvalue()
    assert "\x1b[" in text  # drawn with terminal control codes
    assert "40/40" in text and "failed 2" in text


def test_wait_display_prints_plain_lines_elsewhere() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with WaitDisplay(console, "thread-abc") as display:
        display.event(event(10))  # plain mode prints per run, from values
        display.values({"status": "running", "counts": event(10)["counts"], "jobs": []}, 5.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "\x1b[" not in lines[0]
    assert "succeeded 10/40 failed 2" in lines[0] and "next check in 5s" in lines[0]


def test_summary_table_shows_counts_tokens_and_time() -> None:
    out = io.StringIO()
    Console(file=out, width=120).print(
        summary_table(
            {
                "status": "completed",
                "counts": {"succeeded": 1200, "failed": 3},
                "usage": {"input_tokens": 54321, "output_tokens": 999},
            },
            75.0,
        )
    )
    text = out.getvalue()
    for expected in ("completed", "1,200", "3", "54,321", "999", "1m15s"):
        assert expected in text


@pytest.mark.parametrize("provider", ["openai", "mistral", "anthropic", "gemini"])
def test_an_outage_that_outlasts_the_retries_books_another_try(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider down through every retry: status `error` marked retry_later, routed to schedule."""
    import time

    from langgraph.types import RetryPolicy

    import agent.graph as graph_module
    from agent.graph import route_after_check

    fast_retry = RetryPolicy(
        initial_interval=0.01, max_attempts=2, jitter=False, retry_on=Exception
    )
    monkeypatch.setattr(graph_module, "NODE_RETRY", fast_retry)
    # Each SDK backs off between its own retries with `time.sleep` (seconds per attempt): the
    # emulator answers in process, so nothing is gained by waiting them out for real. Mistral's
    # retries stop after a wall-clock budget (`time.time`), so its clock moves with the sleeps.
    import mistralai.client.utils.retries as mistral_retries

    class SleptClock:
        offset = 0.0

        @classmethod
        def sleep(cls, seconds: float) -> None:
            cls.offset += seconds

        @classmethod
        def time(cls) -> float:
            return time.time() + cls.offset

    monkeypatch.setattr(time, "sleep", SleptClock.sleep)
    monkeypatch.setattr(mistral_retries, "time", SleptClock)
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "outage"}}
    context = Context(provider=provider, max_attempts=1)  # type: ignore[arg-type]
    submitted = graph.invoke({"requests": RECORDS}, config, context=context)
    assert submitted["status"] == "submitted"

    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "http_error_rate=1")
    graph.invoke({}, config, context=context)
    values = dict(graph.get_state(config).values)
    assert values["status"] == "error" and values["retry_later"] is True
    assert "gave up after 2 attempts" in values["error"]

    class Runtime:  # only the context is read by the router
        def __init__(self, context: Context) -> None:
            self.context = context

    assert route_after_check(values, Runtime(context)) == "schedule"  # type: ignore[arg-type]
    # Once the provider answers again, the next run picks up where it stopped.
    monkeypatch.delenv("BATCH_AGENT_EMULATOR_FAULTS")
    values = run_to_end(graph, config, context, None)
    assert values["status"] == "completed" and values["counts"]["succeeded"] == 3


def test_a_threads_webhook_is_kept_for_later_runs_without_it(receiver: WebhookReceiver) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "kept-hook"}}
    graph.invoke(
        {"requests": RECORDS},
        config,
        context=Context(provider="emulator", webhook_url=receiver.url),
    )
    # Later runs (another client, the CLI) do not repeat the URL: the notice still goes out once.
    values = run_to_end(graph, config, Context(provider="emulator"), None)
    assert values["status"] == "completed"
    assert len(receiver.received) == 1
    assert json.loads(receiver.bodies[0])["thread_id"] == "kept-hook"
    assert "s3cret-tok" not in json.dumps(values, default=str)  # in the store, not the state


def test_cli_run_takes_a_webhook_url(receiver: WebhookReceiver, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    args = ["run", str(source), "--provider", "emulator", "--db", str(tmp_path / "db.sqlite")]
    args += ["--wait", "--poll-interval", "0.2", "--out", str(tmp_path / "out.jsonl")]
    result = CliRunner().invoke(app, [*args, "--webhook-url", receiver.url])
    assert result.exit_code == 0, result.output
    assert len(receiver.received) == 1
    assert json.loads(receiver.bodies[0])["counts"]["succeeded"] == len(RECORDS)


def test_threads_lists_each_batch_newest_first_with_its_full_id(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    db = ["--db", str(tmp_path / "checkpoints.sqlite")]
    runner = CliRunner()
    fast = ["--poll-interval", "0.1", "--poll-backoff", "1"]
    for args in (["--thread", "finished-thread", "--wait", *fast], ["--thread", "left-running"]):
        done = runner.invoke(app, ["run", str(source), *db, *args, "--out", str(tmp_path / "o")])
        assert done.exit_code == 0, done.output

    listed = runner.invoke(app, ["threads", *db])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert [line.split()[2] for line in lines] == ["left-running", "finished-thread"]
    assert "completed" in lines[1] and "succeeded 3/3" in lines[1]
    assert "submitted" in lines[0] and "jobs 1" in lines[0]

    as_json = runner.invoke(app, ["threads", *db, "--json", "--limit", "1"])
    (newest,) = json.loads(as_json.stdout)
    assert newest["thread_id"] == "left-running" and newest["status"] == "submitted"
    assert newest["counts"]["total"] == 3 and newest["jobs"] == 1
