"""`[emulator:delay=S]`: one job's lifecycle length, asked for in a prompt, on each protocol's SDK."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import anthropic
import openai
import pytest
from google import genai
from google.genai import types
from mistralai.client import Mistral

from agent.emulator import IN_PROCESS_BASE_URL, ManualClock, emulator_http_client
from agent.emulator.app import EmulatorApp
from agent.emulator.faults import marked_delay

KEY = "sk-emulator-x"


def jsonl(lines: list[object]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def submit_openai(state: Path, clock: ManualClock, prompts: list[str]) -> None:
    client = openai.OpenAI(
        api_key=KEY,
        base_url=f"{IN_PROCESS_BASE_URL}/openai/v1",
        http_client=emulator_http_client(state, clock),
    )
    lines = [
        {
            "custom_id": f"r{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
        }
        for n, prompt in enumerate(prompts)
    ]
    uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def submit_mistral(state: Path, clock: ManualClock, prompts: list[str]) -> None:
    client = Mistral(
        api_key=KEY,
        server_url=f"{IN_PROCESS_BASE_URL}/mistral",
        client=emulator_http_client(state, clock),
    )
    lines = [
        {"custom_id": f"r{n}", "body": {"messages": [{"role": "user", "content": prompt}]}}
        for n, prompt in enumerate(prompts)
    ]
    uploaded = client.files.upload(
        file={"file_name": "in.jsonl", "content": jsonl(lines)}, purpose="batch"
    )
    client.batch.jobs.create(
        input_files=[uploaded.id], model="mistral-small-latest", endpoint="/v1/chat/completions"
    )


def submit_anthropic(state: Path, clock: ManualClock, prompts: list[str]) -> None:
    client = anthropic.Anthropic(
        api_key=KEY,
        base_url=f"{IN_PROCESS_BASE_URL}/anthropic",
        http_client=emulator_http_client(state, clock),
    )
    client.messages.batches.create(
        requests=[
            {
                "custom_id": f"r{n}",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": prompt}],
                },
            }
            for n, prompt in enumerate(prompts)
        ]
    )


def submit_gemini(state: Path, clock: ManualClock, prompts: list[str]) -> None:
    options = types.HttpOptions(
        base_url=f"{IN_PROCESS_BASE_URL}/gemini", httpx_client=emulator_http_client(state, clock)
    )
    client = genai.Client(api_key=KEY, http_options=options)
    lines = [
        {"key": f"r{n}", "request": {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}}
        for n, prompt in enumerate(prompts)
    ]
    uploaded = client.files.upload(file=io.BytesIO(jsonl(lines)), config={"mime_type": "jsonl"})
    assert uploaded.name is not None
    client.batches.create(model="gemini-2.5-flash", src=uploaded.name)


SUBMIT: dict[str, Callable[[Path, ManualClock, list[str]], None]] = {
    "openai": submit_openai,
    "mistral": submit_mistral,
    "anthropic": submit_anthropic,
    "gemini": submit_gemini,
}
DONE = {"completed", "SUCCESS", "ended", "BATCH_STATE_SUCCEEDED"}


def test_marked_delay_reads_the_last_user_message_and_takes_the_largest() -> None:
    def body(*texts: str) -> dict[str, object]:
        return {"messages": [{"role": "user", "content": text} for text in texts]}

    assert marked_delay(body("no marker")) is None
    assert marked_delay(body("slow [emulator:delay=60] please")) == 60.0
    assert marked_delay(body("[emulator:delay=2.5] and [emulator:delay=7]")) == 7.0
    assert marked_delay(body("[emulator:delay=60]", "the last one has none")) is None
    assert marked_delay(body("[emulator:delay=-1] [emulator:delay=1e3]")) is None  # no such S


@pytest.mark.parametrize("provider", list(SUBMIT))
def test_a_marked_job_lasts_its_own_delay_the_others_the_environments(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "1")
    clock = ManualClock(start=1_000_000.0)
    submit = SUBMIT[provider]
    submit(tmp_path, clock, ["plain", "plain too"])
    # Two markers in one job: the job lasts the longer; a request without one changes nothing.
    submit(tmp_path, clock, ["a [emulator:delay=5]", "b [emulator:delay=30]", "c"])
    app = EmulatorApp(tmp_path, clock)

    def done() -> tuple[bool, bool]:
        """Whether the (two-request) unmarked and the (three-request) marked job ended."""
        by_size = {job["request_count"]: job["status"] in DONE for job in app.list_jobs()}
        return by_size[2], by_size[3]

    assert done() == (False, False)
    clock.advance(2)
    assert done() == (True, False)  # the environment's 1 s for the unmarked job
    clock.advance(27)
    assert done() == (True, False)  # 29 s: not the 5 s of the shorter marker
    clock.advance(2)
    assert done() == (True, True)
