"""A failed batched call raises, in its node, what the realtime call would raise (issue 14).

For each provider a one-node graph's batched call fails on the emulator (a 400 for the
`[emulator:reject]` marker; 429s and 500s for `request_fail_rate=1` with no retries), and the
exception the node meets is compared with what the same LangChain chat model's realtime
`.invoke()` raises for that status on the emulator's realtime endpoints: the same class (made a
`BatchCallError` too), caught by the user's own `except` of the SDK's classes, and a
`with_fallbacks` model falls back on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as genai_errors
from langchain_core.exceptions import ModelRateLimitError, ModelRefusalError, OutputParserException
from langchain_google_genai.chat_models import ChatGoogleGenerativeAIError
from langgraph.graph import END, START, StateGraph

from agent.batched import BatchCallError, batched, map_graph
from agent.emulator import ManualClock, list_jobs
from agent.providers import provider_class
from tests.emulated_models import PROVIDERS, batch_model, realtime_model
from tests.graphs.pipeline import Doc
from tests.support import FAST_POLLING
from tests.unit_tests.test_emulator_realtime import LABEL_SCHEMA

FAULTS = "BATCH_AGENT_EMULATOR_FAULTS"
# What a user's node catches, per provider: the SDK classes realtime's errors are instances of
# (langchain-mistralai raises httpx's; langchain-google-genai its own for a 4xx).
SDK_ERRORS: dict[str, tuple[type[Exception], ...]] = {
    "openai": (openai.BadRequestError, openai.RateLimitError, openai.InternalServerError),
    "mistral": (httpx.HTTPStatusError,),
    "anthropic": (anthropic.BadRequestError, anthropic.RateLimitError, anthropic.APIStatusError),
    "gemini": (ChatGoogleGenerativeAIError, genai_errors.ServerError),
}
# How the emulator's realtime endpoint is made to answer each status (with the prompt to send).
REALTIME_FAULTS = {
    400: ("x [emulator:reject]", ""),
    429: ("hi", "realtime_429_rate=1"),
    500: ("hi", "http_error_rate=1,seed=1"),  # this seed's first draw is a 500
}


def _guarded_graph(
    model: Any, catch: tuple[type[BaseException], ...], seen: list[BaseException]
) -> StateGraph[Any, Any, Any, Any]:
    """A graph of one node that asks `model`, catching `catch` as a user's node would."""

    def node(state: Doc) -> dict[str, Any]:
        try:
            return {"fact": model.invoke(state["text"]).content}
        except catch as exc:
            seen.append(exc)
            return {"fact": f"caught {type(exc).__name__}"}

    builder = StateGraph(Doc)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return builder


def _status(exc: BaseException) -> int:
    """The HTTP status an exception of any of the four SDKs stands for."""
    for candidate in (exc, exc.__cause__):
        status = getattr(candidate, "status_code", None)
        if isinstance(status, int):
            return status
        response = getattr(candidate, "response", None)
        if response is not None:
            return int(response.status_code)
        code = getattr(candidate, "code", None)
        if isinstance(code, int):
            return code
    raise AssertionError(f"no status in {exc!r}")


def _realtime_raises(
    provider: str, state_dir: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> dict[int, type[BaseException]]:
    """The class the realtime `.invoke()` raises for a 400, a 429 and a 500 from the emulator."""
    raised: dict[int, type[BaseException]] = {}
    llm = realtime_model(provider, state_dir, clock, monkeypatch, max_retries=0)
    for status, (prompt, faults) in REALTIME_FAULTS.items():
        monkeypatch.setenv(FAULTS, faults)
        with pytest.raises(Exception) as caught:
            llm.invoke(prompt)
        assert _status(caught.value) == status, repr(caught.value)
        raised[status] = type(caught.value)
    monkeypatch.delenv(FAULTS)
    return raised


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_failed_call_raises_the_class_realtime_raises(
    provider: str,
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    realtime = _realtime_raises(provider, isolated_env, emulator_clock, monkeypatch)
    seen: list[BaseException] = []
    graph = _guarded_graph(batched(batch_model(provider)), SDK_ERRORS[provider], seen)
    rejected = map_graph(graph, [{"text": "refuse me [emulator:reject]"}], **FAST_POLLING)
    monkeypatch.setenv(FAULTS, "request_fail_rate=1")
    docs = [{"text": f"question {i}"} for i in range(8)]
    failed = map_graph(
        graph, docs, map_id=f"errors-realtime-{provider}", max_attempts=1, **FAST_POLLING
    )
    # The user's own `except` of the SDK's classes caught every failure: the items completed.
    assert [item.status for item in [*rejected, *failed]] == ["completed"] * 9
    assert len(seen) == 9
    statuses = [_status(exc) for exc in seen]
    assert statuses[0] == 400 and set(statuses[1:]) == {429, 500}
    for exc, status in zip(seen, statuses, strict=True):
        assert isinstance(exc, realtime[status]) and isinstance(exc, BatchCallError)
        assert type(exc).__name__ == realtime[status].__name__
        assert type(exc).__bases__ == (realtime[status], BatchCallError)
        assert exc.key.startswith("call-") and exc.batch.startswith(
            "map-" if exc is seen[0] else "errors-"
        )
        assert f"batched model call failed in batch {exc.batch} (" in str(exc)
    assert "[emulator:reject]" in str(seen[0])


def test_a_users_except_rate_limit_error_catches_rate_limits_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[BaseException] = []
    model = batched(batch_model("openai"))
    graph = _guarded_graph(model, (openai.RateLimitError,), seen)
    monkeypatch.setenv(FAULTS, "request_fail_rate=1")
    # A failed line is a 429 or a 500 by a draw per job and line: 16 lines make both kinds
    # all but certain (all alike: 2 in 65,536; 6 lines failed about 1 run in 30).
    docs = [{"text": f"question {i}"} for i in range(16)]
    items = map_graph(graph, docs, map_id="errors-rate-limit", max_attempts=1, **FAST_POLLING)
    caught = [item for item in items if item.status == "completed"]
    uncaught = [item for item in items if item.status == "failed"]
    assert caught and uncaught and len(caught) + len(uncaught) == len(docs)
    assert all(item.state["fact"] == "caught OpenAIRateLimitError" for item in caught)
    assert all(isinstance(exc, ModelRateLimitError) for exc in seen)  # LangChain's class too
    # A server error is not a rate limit: its node raised it, and the item failed with it.
    for item in uncaught:
        assert item.error and item.error.startswith("OpenAIAPIError: Error code: 500 - ")
        assert "batched model call failed in batch errors-rate-limit-batch-" in item.error


def _faults_for_first_round(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Fail every request of the first round; return the `on_round` hook that ends the faults."""
    monkeypatch.setenv(FAULTS, "request_fail_rate=1")

    def faults_off(number: int, calls: int, done: int) -> None:
        monkeypatch.delenv(FAULTS, raising=False)

    return faults_off


WRAPPERS = {
    # What LangChain's wrappers catch by default, every Exception, takes in the suspension too.
    "with_fallbacks": lambda: batched(batch_model("openai")).with_fallbacks(
        [batched(batch_model("anthropic"))]
    ),
    # A user's own choice of what to fall back on: the SDK's classes, or any failed call.
    "with_fallbacks(sdk-classes)": lambda: batched(batch_model("openai")).with_fallbacks(
        [batched(batch_model("anthropic"))],
        exceptions_to_handle=(openai.RateLimitError, openai.InternalServerError),
    ),
    "with_fallbacks(BatchCallError)": lambda: batched(batch_model("openai")).with_fallbacks(
        [batched(batch_model("anthropic"))], exceptions_to_handle=(BatchCallError,)
    ),
    "with_retry": lambda: batched(batch_model("openai")).with_retry(
        stop_after_attempt=3, wait_exponential_jitter=False
    ),
    "batched(with_retry)": lambda: batched(
        batch_model("openai").with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
    ),
    "batched(with_fallbacks)": lambda: batched(
        batched(batch_model("openai")).with_fallbacks([batched(batch_model("anthropic"))])
    ),
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_a_default_wrapper_sends_one_call_and_passes_the_suspension(wrapper: str) -> None:
    # Caught by the wrapper, the suspension would call the fallback (or retry) in the same
    # round: two or three calls sent and paid for, and answers resuming the wrong call.
    items = map_graph(
        _guarded_graph(WRAPPERS[wrapper](), (), []),
        [{"text": "Classify: my invoice is wrong"}],
        **FAST_POLLING,
    )
    (item,) = items
    assert item.status == "completed", item.error
    assert item.state["fact"] == "Emulated reply to: Classify: my invoice is wrong"
    assert [r.calls for r in items.rounds] == [1] and item.calls == 1
    # The primary answered: its provider ran the one job.
    assert [job["provider"] for job in list_jobs()] == ["openai"]


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_a_default_wrapper_falls_back_or_retries_on_a_failed_call(
    wrapper: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = map_graph(
        _guarded_graph(WRAPPERS[wrapper](), (), []),
        [{"text": "Classify: my invoice is wrong"}],
        max_attempts=1,
        on_round=_faults_for_first_round(monkeypatch),
        **FAST_POLLING,
    )
    (item,) = items
    assert item.status == "completed", item.error
    assert item.state["fact"] == "Emulated reply to: Classify: my invoice is wrong"
    # The failed call, then one more (the fallback's, or the retry), one round later.
    assert [r.calls for r in items.rounds] == [1, 1] and item.calls == 2
    second = "anthropic" if "fallbacks" in wrapper else "openai"
    assert [job["provider"] for job in list_jobs()] == ["openai", second]


# Result codes and what each provider's realtime call raises for them (its class's name).
CODES: list[tuple[str, str, str]] = [
    ("openai", "rate_limit_exceeded", "OpenAIRateLimitError"),
    ("openai", "batch_expired", "OpenAIAPIError"),
    ("openai", "no_result", "OpenAIAPIError"),
    ("openai", "context_length_exceeded", "OpenAIContextOverflowError"),
    ("openai", "http_404", "OpenAIModelNotFoundError"),
    ("openai", "http_409", "ConflictError"),
    ("mistral", "1300", "HTTPStatusError"),
    ("anthropic", "overloaded_error", "AnthropicOverloadedError"),
    ("anthropic", "expired", "AnthropicAPIError"),
    ("anthropic", "authentication_error", "AnthropicAuthenticationError"),
    ("gemini", "RESOURCE_EXHAUSTED", "GoogleRateLimitError"),
    ("gemini", "grpc_14", "GoogleAPIError"),
    ("gemini", "http_404", "GoogleModelNotFoundError"),
]


@pytest.mark.parametrize(("provider", "code", "realtime"), CODES)
def test_each_result_code_raises_its_realtime_class(
    provider: str, code: str, realtime: str
) -> None:
    exc = provider_class(provider).realtime_exception(
        {"code": code, "message": "it failed"}, key="call-1", model="m", batch="b-1"
    )
    assert type(exc).__name__ == realtime and isinstance(exc, BatchCallError)
    assert exc.key == "call-1" and exc.batch == "b-1"
    assert f"batched model call failed in batch b-1 ({code}): it failed" in str(exc)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("code", ["invalid_response", "bad_result_line"])
def test_a_failure_realtime_meets_no_http_error_for_is_a_batch_call_error(
    provider: str, code: str
) -> None:
    exc = provider_class(provider).realtime_exception(
        {"code": code, "message": "unusable"}, key="call-1"
    )
    assert type(exc) is BatchCallError and exc.code == code and exc.key == "call-1"


def test_the_classes_are_built_once_per_realtime_class() -> None:
    error = {"code": "rate_limit_exceeded", "message": "slow down"}
    first, second = (provider_class("openai").realtime_exception(error, key="k") for _ in "ab")
    assert type(first) is type(second) and isinstance(first, openai.RateLimitError)
    assert first.code == "rate_limit_exceeded" and first.key == "k"


def _outcome(runnable: Any, prompt: str) -> tuple[str, str]:
    """What `runnable.invoke(prompt)` gives: ("value", repr) or (exception class name, text)."""
    try:
        return "value", repr(runnable.invoke(prompt))
    except (OutputParserException, ModelRefusalError) as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("marker", ["[emulator:invalid_json]", "[emulator:refusal]"])
def test_an_answer_the_structured_check_rejects_is_parsed_as_realtime_parses_it(
    marker: str,
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompt = f"Classify: my invoice is wrong {marker}"
    llm = realtime_model("openai", isolated_env, emulator_clock, monkeypatch, max_retries=0)
    realtime = _outcome(llm.with_structured_output(LABEL_SCHEMA), prompt)
    model = batched(batch_model("openai")).with_structured_output(LABEL_SCHEMA)

    def node(state: Doc) -> dict[str, Any]:
        return {"fact": json.dumps(_outcome(model, state["text"]))}

    builder = StateGraph(Doc)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    (item,) = map_graph(builder, [{"text": prompt}], **FAST_POLLING)
    # The message came back, and the parser above the model made of it what realtime's did.
    assert item.status == "completed", item.error
    assert tuple(json.loads(item.state["fact"])) == realtime
    if marker == "[emulator:refusal]":
        assert realtime[0] == "OpenAIRefusalError"
