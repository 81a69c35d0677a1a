"""`langgraph dev` serves graph `batch`: run it through langgraph-sdk, re-run to poll, read results."""

from __future__ import annotations

import json
import logging
import pickle
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk import get_sync_client

from agent.emulator import list_jobs
from tests.integration_tests.conftest import PROJECT_ROOT, start_dev_server, stop_dev_server
from tests.support import undescribed

pytestmark = pytest.mark.slow

RECORDS = [
    {"id": "first", "prompt": "Summarise the benefits of batching"},
    {
        "id": "second",
        "messages": [{"role": "user", "content": "Classify: my card was charged twice"}],
    },
    {"id": "third", "prompt": "Say hello"},
]


# `emulator` is OpenAI's protocol. Gemini (no key on the server: its protocol on the in-process
# emulator) is the one whose lines, identity and results differ most; Mistral and Anthropic are
# served the same way and are left out to keep the suite fast (their batches go through the
# same graph in process, `tests/unit_tests/`).
@pytest.mark.parametrize("provider", ["emulator", "gemini"])
def test_served_graph_submits_polls_and_collects(dev_server: str, provider: str) -> None:
    client = get_sync_client(url=dev_server, api_key=None)
    thread = client.threads.create()
    thread_id = thread["thread_id"]

    first = client.runs.wait(
        thread_id, "batch", input={"requests": RECORDS}, context={"provider": provider}
    )
    assert isinstance(first, dict) and first["status"] == "submitted"
    job_id = first["jobs"][0]["job_id"]

    values: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        client.runs.wait(thread_id, "batch", input={})
        values = client.threads.get_state(thread_id)["values"]
        if values["status"] == "completed":
            break
    assert values["status"] == "completed"
    assert values["jobs"][0]["job_id"] == job_id  # the same job, never a second one
    results = values["results"]
    assert [r["id"] for r in results] == ["first", "second", "third"]
    assert (
        results[1]["message"]["content"] == "Emulated reply to: Classify: my card was charged twice"
    )
    assert (
        results[1]["message"]["usage_metadata"]["total_tokens"]
        == results[1]["usage"]["total_tokens"]
        > 0
    )
    assert values["requests"] == []  # bulk input dropped after upload
    assert values["jobs"][0]["provider"] == ("openai" if provider == "emulator" else provider)
    # Both providers' batch price is half the realtime one (gpt-4o-mini, gemini-2.5-flash).
    cost = values["cost"]
    assert cost["source"].startswith("genai-prices") and cost["batch_usd"] > 0
    assert cost["realtime_usd"] == pytest.approx(2 * cost["batch_usd"])
    assert cost["output_tokens"] == sum(r["usage"]["output_tokens"] for r in results)
    # The paged way to results of any size: the store API, one page of up to 1,000 results.
    where = values["results_store"]
    page = client.store.get_item(where["namespace"], key="000000")
    assert page is not None and where["pages"] == 1
    paged = [json.loads(line) for line in page["value"]["jsonl"].split("\n")]
    assert [r["id"] for r in paged] == ["first", "second", "third"]
    assert paged[1]["message"]["content"] == results[1]["message"]["content"]


def test_remote_graph_reads_a_served_thread_to_the_end(
    dev_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's RemoteGraph loop: submit, then only read; the server polls by itself."""
    batch = RemoteGraph("batch", url=dev_server, api_key=None)
    config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
    context = {"provider": "emulator", "poll_interval_seconds": 1, "poll_backoff": 1.0}
    first = batch.invoke({"requests": RECORDS}, config, context=context)
    assert first["status"] == "submitted"
    deadline = time.monotonic() + 60
    while (values := batch.get_state(config).values)["status"] != "completed":
        assert time.monotonic() < deadline, values
        time.sleep(0.5)
    assert [r["id"] for r in values["results"]] == [r["id"] for r in RECORDS]
    # Invoked again, the finished thread runs no node and streams no state: RemoteGraph.invoke
    # returns None with the warning the README explains.
    with caplog.at_level(logging.WARNING, logger="langgraph.pregel.remote"):
        assert batch.invoke({}, config) is None
    assert "No events received from remote graph" in caplog.text
    assert batch.get_state(config).values["status"] == "completed"


def test_studio_schemas_describe_input_state_and_context(dev_server: str) -> None:
    client = get_sync_client(url=dev_server, api_key=None)
    (assistant,) = client.assistants.search(graph_id="batch")
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    assert "requests" in schemas["input_schema"]["properties"]
    assert {"status", "jobs", "results", "usage"} <= set(schemas["output_schema"]["properties"])
    assert {"jobs", "request_count", "polls"} <= set(schemas["state_schema"]["properties"])
    context = schemas["context_schema"]["properties"]
    assert context["provider"]["default"] == "auto"
    assert "emulator" in context["provider"]["description"]
    assert context["max_wait_seconds"]["default"] == 0
    # Studio's forms: every input and context field is typed and described.
    for name, spec in {**schemas["input_schema"]["properties"], **context}.items():
        assert spec.get("description"), f"{name} has no description"
        assert "type" in spec or "anyOf" in spec or "enum" in spec, f"{name} has no type"
    # And so is every field of its output and state views, internal bookkeeping marked as such.
    for which in ("input_schema", "output_schema", "state_schema", "context_schema"):
        assert undescribed(schemas[which]) == [], which
    state = schemas["state_schema"]["properties"]
    assert state["waits_this_run"]["description"].startswith("Internal:")
    assert state["jobs"]["items"] == {"$ref": "#/$defs/Job"}
    assert context["self_schedule"]["type"] == "boolean" and context["self_schedule"]["default"]
    assert context["poll_interval_seconds"]["type"] == "number"
    graph = client.assistants.get_graph(assistant["assistant_id"])
    nodes = {node["id"] for node in graph["nodes"]}
    assert {"submit", "poll", "wait", "collect", "schedule", "notify"} <= nodes
    # The polling edge: poll leads to collect, wait and schedule (come back later).
    assert {"collect", "wait", "schedule"} <= {
        edge["target"] for edge in graph["edges"] if edge["source"] == "poll"
    }


def repo_server_state() -> dict[str, tuple[int, int]]:
    """Return the files of the repo's own `.langgraph_api/` (a developer's dev server state)."""
    folder = PROJECT_ROOT / ".langgraph_api"
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()}


class ServerOpsUnpickler(pickle.Unpickler):
    """Read a dev server's `.langgraph_ops.pckl` without importing the server.

    Its runs name `langgraph_api` functions (e.g. `langgraph_api.metadata.incr_nodes`), whose
    modules read the server's own configuration from the environment when imported; the
    threads need nothing but datetimes and UUIDs.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Stand a placeholder in for the server's own objects."""
        if module.split(".")[0] in {"langgraph_api", "langgraph_runtime_inmem"}:
            return f"{module}.{name}"
        return super().find_class(module, name)


def test_hard_kill_of_the_server_loses_no_job(tmp_path: Path) -> None:
    """SIGKILL `langgraph dev` with a job in flight, restart it, resume: one job, all results.

    Its servers also show that a test server keeps its threads out of the repo: the next
    `langgraph dev` in the repo must not show the threads the tests made.
    """
    before = repo_server_state()
    process, url = start_dev_server(tmp_path)
    try:
        client = get_sync_client(url=url, api_key=None)
        thread_id = client.threads.create()["thread_id"]
        first = client.runs.wait(
            thread_id, "batch", input={"requests": RECORDS}, context={"provider": "emulator"}
        )
        assert isinstance(first, dict) and first["status"] == "submitted"
        job_id = first["jobs"][0]["job_id"]
    finally:
        stop_dev_server(process, signal.SIGKILL)

    process, url = start_dev_server(tmp_path)
    try:
        client = get_sync_client(url=url, api_key=None)
        values: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # The durable checkpointer kept the thread's state; the run re-creates the thread record.
            client.runs.wait(thread_id, "batch", input={}, if_not_exists="create")
            values = client.threads.get_state(thread_id)["values"]
            if values.get("status") == "completed":
                break
            time.sleep(0.5)
        assert values.get("status") == "completed", values
        assert [j["job_id"] for j in values["jobs"]] == [job_id]
        assert [r["id"] for r in values["results"]] == [r["id"] for r in RECORDS]
        assert all(r["status"] == "succeeded" for r in values["results"])
        assert [j["id"] for j in list_jobs(tmp_path / "emulator")] == [job_id]
    finally:
        stop_dev_server(process)  # a graceful stop writes the server's threads and runs out

    # The test servers' threads went to the temp dir, and nothing was created or touched in the
    # repo.
    ops = tmp_path / ".langgraph_api" / ".langgraph_ops.pckl"
    with ops.open("rb") as file:
        threads = ServerOpsUnpickler(file).load()["threads"]
    assert thread_id in {str(thread["thread_id"]) for thread in threads}
    assert repo_server_state() == before
