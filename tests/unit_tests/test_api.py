"""`agent.run_batch`: the batch graph from Python, on the in-process emulator through the real SDKs."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import httpx2
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, field_validator

from agent import BatchResults, run_batch
from agent.emulator import IN_PROCESS_BASE_URL, emulator_http_client, list_jobs, running_emulator
from agent.providers import provider_for_job
from agent.providers.openai import OpenAIProvider
from agent.requests import InputError
from tests.realtime import OPENAI_RESPONSE as OPENAI_ANSWER

FAST = {"poll_interval_seconds": 0.1, "poll_backoff": 1.0}


def test_run_batch_returns_ai_messages_in_input_order_and_errors() -> None:
    results = run_batch(
        [
            "Say hello",
            {"id": "bad", "prompt": "Refuse this [emulator:reject]"},
            [SystemMessage("Be brief."), HumanMessage("Classify: my card was charged twice")],
            {"prompt": "No id given", "params": {"max_tokens": 2}},
        ],
        provider="emulator",
        **FAST,
    )
    assert isinstance(results, BatchResults) and results.status == "completed"
    assert [r.id for r in results] == ["0", "bad", "2", "3"]
    assert [r.status for r in results] == ["succeeded", "failed", "succeeded", "succeeded"]
    hello, bad, classify, capped = results
    assert isinstance(hello.message, AIMessage)
    assert hello.content == "Emulated reply to: Say hello"
    assert classify.content == "Emulated reply to: Classify: my card was charged twice"
    for ok in (hello, classify, capped):
        assert ok.ok and ok.error is None and ok.message is not None
        meta = ok.message.usage_metadata
        assert meta is not None and meta["total_tokens"] == ok.usage["total_tokens"] > 0
    # The system message counts: 3 + 2 words, plus 3 + 6 words for the user message.
    assert classify.usage["input_tokens"] == 14
    assert capped.content == "Emulated reply" and capped.usage["output_tokens"] == 2
    assert capped.message is not None
    assert capped.message.response_metadata["finish_reason"] == "length"
    assert not bad.ok and bad.message is None and bad.content == ""
    assert bad.error is not None and bad.error["code"] == "invalid_request"
    assert results.counts == {"total": 4, "succeeded": 3, "failed": 1, "pending": 0}
    assert results.usage["total_tokens"] == sum(r.usage["total_tokens"] for r in results)


def test_run_batch_resumes_a_thread_by_id_from_another_call(tmp_path: Path) -> None:
    db = tmp_path / "notebook.sqlite"
    submitted = run_batch(["First", "Second"], provider="emulator", db=db, wait=False, **FAST)
    assert submitted.status == "submitted" and list(submitted) == [] and not submitted.done
    (job,) = submitted.jobs

    finished = run_batch(None, thread_id=submitted.thread_id, db=db, **FAST)
    assert finished.done and [r.content for r in finished] == [
        "Emulated reply to: First",
        "Emulated reply to: Second",
    ]
    assert [j["job_id"] for j in finished.jobs] == [job["job_id"]]
    # A finished thread answers from its checkpoint and store; the provider sees one job.
    again = run_batch(None, thread_id=submitted.thread_id, db=db)
    assert [r.message for r in again] == [r.message for r in finished]
    assert len(list_jobs()) == 1

    with pytest.raises(ValueError, match="no batch thread 'nope'"):
        run_batch(None, thread_id="nope", db=db)


def test_run_batch_takes_a_chat_model_and_its_settings() -> None:
    # No OPENAI_API_KEY: the openai protocol runs on the emulator (the key is never read).
    llm = ChatOpenAI(model="gpt-4o-mini", temperature=0, max_tokens=3, api_key="sk-unused")
    results = run_batch(["Explain batching in many words please"], model=llm, **FAST)
    (result,) = results
    assert result.content == "Emulated reply to:"
    assert result.message is not None
    assert result.message.response_metadata["model_name"].startswith("gpt-4o-mini")
    assert results.jobs[0]["provider"] == "openai" and results.jobs[0]["model"] == "gpt-4o-mini"


def test_run_batch_takes_a_structured_output_model() -> None:
    class Ticket(BaseModel):
        category: str
        urgent: bool

    llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-unused").with_structured_output(Ticket)
    good, broken = run_batch(
        ["Classify: my card was charged twice", "Classify [emulator:schema_violation]"],
        model=llm,
        **FAST,
    )
    # `parsed` is what the structured model's `.invoke()` returns: a Ticket, not its JSON.
    assert good.ok and isinstance(good.parsed, Ticket) and good.parsed.category
    # `.invoke()` raises for the answer without `category` (the SDK's `parse` into Ticket).
    assert not broken.ok and broken.error is not None
    assert broken.error["code"] == "output_parsing"
    assert broken.error["message"].startswith("ValidationError: 1 validation error for Ticket")


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
@pytest.mark.parametrize("include_raw", [False, True])
def test_structured_results_are_what_the_realtime_runnable_returns(
    method: str, include_raw: bool
) -> None:
    class Ticket(BaseModel):
        category: Literal["billing", "refund"]
        urgent: bool

        @field_validator("category")
        @classmethod
        def not_refund(cls, value: str) -> str:
            # A rule a JSON schema cannot carry: the graph's check passes it, Pydantic does not.
            if value == "refund":
                raise ValueError("refunds go to a person")
            return value

    llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-unused").with_structured_output(
        Ticket, method=method, include_raw=include_raw
    )
    # The emulator answers an enum with the value the prompt names.
    results = run_batch(
        ["Classify as billing: charged twice", "Classify as refund"], model=llm, **FAST
    )
    good, refused = results
    # With `include_raw=True`, `.invoke()` returns {"raw", "parsed", "parsing_error"}.
    ticket = good.parsed["parsed"] if include_raw else good.parsed
    assert good.ok and ticket == Ticket(category="billing", urgent=ticket.urgent)
    assert isinstance(ticket, Ticket) and good.message is not None
    if include_raw:
        assert good.parsed["raw"] == good.message and good.parsed["parsing_error"] is None
    if method == "json_schema":
        # As `chat.completions.parse(response_format=Ticket)` leaves it on the realtime message.
        assert good.message.additional_kwargs["parsed"] == ticket
    assert refused.message is not None  # the answer was produced (and billed): it is kept
    if include_raw and method == "function_calling":
        # The parser's error is returned in the dict, not raised, as `.invoke()` returns it.
        assert refused.ok and refused.parsed["parsed"] is None
        assert "refunds go to a person" in str(refused.parsed["parsing_error"])
        assert (results.counts["succeeded"], results.counts["failed"]) == (2, 0)
        return
    # `.invoke()` raises (json_schema: the SDK's `parse` into Ticket, even with include_raw).
    assert not refused.ok and refused.parsed is None and refused.error is not None
    assert refused.error["code"] == "output_parsing"
    assert "refunds go to a person" in refused.error["message"]
    assert (results.counts["succeeded"], results.counts["failed"]) == (1, 1)


def test_bad_requests_fail_before_anything_is_uploaded() -> None:
    with pytest.raises(InputError, match=r"input:2: duplicate id.*'a'"):
        run_batch([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], provider="emulator")
    with pytest.raises(TypeError, match="not a single string"):
        run_batch("tickets.jsonl")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown setting"):
        run_batch(["x"], poll_every=3)
    assert list_jobs() == []


def test_importing_agent_stays_cheap() -> None:
    heavy = "{'langgraph', 'langchain_core', 'openai', 'langchain_google_genai'}"
    code = (
        "import sys, agent; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{heavy} or m.startswith('google.genai')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


class Ticket(BaseModel):
    category: Literal["billing", "bug"]
    urgent: bool


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_result_equals_the_realtime_invoke(method: str, isolated_env: Path) -> None:
    """`message` and `parsed` equal what `.invoke()` returns when the provider gives that answer."""
    prompt = "Classify as bug: the app crashes on start"
    ctor = {"model": "gpt-4o-mini", "api_key": "sk-unused"}
    # keep_files: the provider's answer is read back from the job's output file below.
    batch = run_batch(
        [prompt],
        model=ChatOpenAI(**ctor).with_structured_output(Ticket, method=method),
        keep_files=True,
        **FAST,
    )  # type: ignore[arg-type]
    (result,) = batch

    # The provider's answer to that request: the line in the job's output file.
    sdk = openai.OpenAI(
        api_key="x",
        base_url=f"{IN_PROCESS_BASE_URL}/openai/v1",
        http_client=emulator_http_client(isolated_env),
    )
    output_file = sdk.batches.retrieve(str(batch.jobs[0]["job_id"])).output_file_id
    assert output_file is not None
    answer = json.loads(sdk.files.content(output_file).text)["response"]["body"]

    # Realtime: the same runnable, its HTTP client answering with that very body.
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=answer)

    realtime = ChatOpenAI(
        **ctor,  # type: ignore[arg-type]
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    ).with_structured_output(Ticket, method=method, include_raw=True)
    expected = realtime.invoke(prompt)
    assert isinstance(result.parsed, Ticket) and result.parsed == expected["parsed"]
    assert result.message is not None
    # `invoke()` message ids embed a random run id; everything else is equal.
    assert result.message.model_dump(exclude={"id"}) == expected["raw"].model_dump(exclude={"id"})


# ----------------------------------------------------------------------------- model settings


def _chat_model_at(provider: str, url: str) -> Any:
    """The provider's chat model, pointed at the loopback emulator the way a user would."""
    if provider == "openai":
        return ChatOpenAI(model="gpt-4o-mini", api_key="sk-unused", base_url=f"{url}/openai/v1")
    if provider == "mistral":
        from langchain_mistralai import ChatMistralAI

        return ChatMistralAI(
            model="mistral-small-latest", api_key="unused", endpoint=f"{url}/mistral/v1"
        )  # type: ignore[call-arg]
    if provider == "gemini":
        from langchain_google_genai import ChatGoogleGenerativeAI

        return ChatGoogleGenerativeAI(
            model="gemini-2.5-flash", api_key="unused", base_url=f"{url}/gemini"
        )
    from langchain_anthropic import ChatAnthropic

    return ChatAnthropic(model="claude-haiku-4-5", api_key="unused", base_url=f"{url}/anthropic")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("provider", "sdk_path"),
    [
        ("openai", "/openai/v1"),
        ("mistral", "/mistral"),
        ("anthropic", "/anthropic"),
        ("gemini", "/gemini"),
    ],
)
def test_run_batch_sends_the_batch_where_the_model_sends_its_calls(
    provider: str, sdk_path: str
) -> None:
    with running_emulator() as url:
        llm = _chat_model_at(provider, url)
        results = run_batch(["Say hello"], model=llm, **FAST)
        (job,) = results.jobs
        assert results.status == "completed" and results[0].content.startswith("Emulated reply")
        # Not the in-process emulator: the model's own endpoint, as the SDK's base URL.
        assert job["provider"] == provider and not job["emulated"]
        assert job["base_url"] == f"{url}{sdk_path}"
        with pytest.raises(ValueError, match="base_url= does not match the model's own"):
            run_batch(["Say hello"], model=llm, base_url="http://elsewhere.invalid")


def test_run_batch_creates_the_jobs_in_the_models_organization() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=OPENAI_ANSWER)

    llm = ChatOpenAI(
        model="gpt-4o-mini",
        api_key="sk-unused",
        organization="org-batch7",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    llm.invoke("Say hello")
    assert seen[-1].headers["openai-organization"] == "org-batch7"

    results = run_batch(["Say hello"], model=llm, wait=False, **FAST)
    (job,) = results.jobs
    assert job["organization"] == "org-batch7"
    # Every later call on the job (poll, collect, cancel) is made in that organization too.
    provider = provider_for_job(job)
    assert isinstance(provider, OpenAIProvider) and provider.organization == "org-batch7"
    polled = OpenAIProvider(
        emulated=False,
        base_url="http://files.invalid/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        organization=job["organization"],
    )
    with contextlib.suppress(Exception):
        polled.status(job)  # the canned answer is no batch; only the request matters
    assert seen[-1].headers["openai-organization"] == "org-batch7"


def test_run_batch_answers_as_the_models_output_version() -> None:
    llm = ChatOpenAI(
        model="gpt-4o-mini", api_key="sk-unused", output_version="v1", logit_bias={50256: -100}
    )
    (result,) = run_batch(["Say hello"], model=llm, **FAST)
    assert result.ok and result.message is not None
    # v1 messages carry standard content blocks, as `llm.invoke()` returns them.
    assert result.message.content == [{"type": "text", "text": result.content}]
    assert result.message.response_metadata["output_version"] == "v1"
