"""Provider webhooks under `langgraph dev`: the emulator's signed event makes a served thread collect."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from langgraph_sdk import get_sync_client

from agent.emulator import read_access_log
from agent.emulator.webhooks import event_body, sign
from tests.integration_tests.conftest import free_port, start_dev_server, stop_dev_server

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"served-webhook-test-key-000000").decode()
RECORDS = [{"id": "a", "prompt": "Say hello"}, {"id": "b", "prompt": "Say goodbye"}]


def _post(url: str, provider: str, body: bytes, headers: dict[str, str]) -> httpx2.Response:
    return httpx2.post(f"{url}/batch-agent/webhooks/{provider}", content=body, headers=headers)


# `emulator` is OpenAI's protocol; Gemini (no key on the server) runs on its in-process protocol.
@pytest.mark.parametrize("provider", ["emulator", "gemini"])
def test_a_webhook_makes_the_thread_collect_with_at_most_three_status_calls(
    tmp_path: Path, provider: str
) -> None:
    hook, other = ("openai", "gemini") if provider == "emulator" else ("gemini", "openai")
    port = free_port()
    process, url = start_dev_server(
        tmp_path,
        port=port,
        **{f"BATCH_AGENT_{hook.upper()}_WEBHOOK_SECRET": SECRET},
        BATCH_AGENT_EMULATOR_WEBHOOK_URL=f"http://127.0.0.1:{port}/batch-agent/webhooks/{{provider}}",
        BATCH_AGENT_EMULATOR_WEBHOOK_SECRET=SECRET,
        # Every event twice (same webhook-id) and out of order: the route must dedupe.
        BATCH_AGENT_EMULATOR_FAULTS="webhook_duplicates=1",
    )
    try:
        now = int(time.time())
        unknown = event_body(hook, "done", {"id": "nobody", "name": "batches/nobody"}, now)
        # Refused calls: 401 (wrong secret, stale timestamp), 404 (unknown job), 503 (no secret).
        wrong = "whsec_" + base64.b64encode(b"not-the-secret-00000000000000").decode()
        assert _post(url, hook, unknown, sign(wrong, "wh_x", now, unknown)).status_code == 401
        stale = sign(SECRET, "wh_x", now - 400, unknown)
        assert _post(url, hook, unknown, stale).status_code == 401
        assert _post(url, hook, unknown, sign(SECRET, "wh_x", now, unknown)).status_code == 404
        assert _post(url, hook, b"{", sign(SECRET, "wh_y", now, b"{")).status_code == 400
        elsewhere = event_body(other, "done", {"id": "g", "name": "batches/g"}, now)
        assert _post(url, other, elsewhere, sign(SECRET, "wh_z", now, elsewhere)).status_code == 503

        client = get_sync_client(url=url, api_key=None)
        # Nothing was remembered for the refused calls: the id answers 404 again, not duplicate.
        assert _post(url, hook, unknown, sign(SECRET, "wh_x", now, unknown)).status_code == 404

        thread_id = client.threads.create()["thread_id"]
        first = client.runs.wait(
            thread_id, "batch", input={"requests": RECORDS}, context={"provider": provider}
        )
        assert isinstance(first, dict) and first["status"] == "submitted"
        job_id = first["jobs"][0]["job_id"]
        # With the webhook configured the next self-scheduled poll is the long safety interval.
        assert first["next_check_at"] > time.time() + 3000

        values: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            values = client.threads.get_state(thread_id)["values"]
            if values.get("status") == "completed":
                break
            time.sleep(0.3)
        assert values.get("status") == "completed", values.get("status")
        assert [r["id"] for r in values["results"]] == ["a", "b"]

        status_calls = [
            e
            for e in read_access_log(tmp_path / "emulator")
            if e["path"].endswith("/" + job_id.removeprefix("batches/"))
        ]
        assert len(status_calls) <= 3, status_calls
        seen = client.store.search_items(["batch_agent_webhooks", "seen"], limit=10)["items"]
        assert [item["value"]["job_id"] for item in seen] == [job_id]  # the duplicate was dropped
        assert json.dumps(seen).count(SECRET) == 0
        # A redelivery of that event is acknowledged and starts nothing.
        again = event_body(hook, "done", {"id": job_id, "name": job_id}, int(time.time()))
        headers = sign(SECRET, seen[0]["key"], int(time.time()), again)
        runs_before = len(client.runs.list(thread_id, limit=100))
        answer = _post(url, hook, again, headers)
        assert (answer.status_code, answer.json()["status"]) == (200, "duplicate")
        assert len(client.runs.list(thread_id, limit=100)) == runs_before
    finally:
        stop_dev_server(process)
