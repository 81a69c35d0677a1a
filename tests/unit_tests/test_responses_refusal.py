"""Requests realtime would send to OpenAI's Responses API are refused before upload, on every path.

batch-agent batches `/v1/chat/completions` only (for now). `ChatOpenAI` routes some calls to the
Responses API instead: `use_responses_api=True`, Responses-only parameters (`reasoning`, `text`,
`include`, `truncation`, ...), built-in tools, models served by the Responses API only. Such a
request must never be batched as a chat completion: it is refused, naming the request and the
cause, before anything reaches the provider. The realtime side is the real `ChatOpenAI` (routing
left at its default) on a recording mock transport, so the refusal follows ChatOpenAI's own
decision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent import run_batch
from agent.context import Context
from agent.emulator import list_jobs, read_access_log
from agent.graph import build_graph
from agent.providers.openai import OpenAIProvider
from agent.requests import BatchRequest, InputError
from tests.realtime import MESSAGE_SETS, OPENAI_RESPONSE
from tests.support import built_lines

FUNCTION_TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}
CALL_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "reasoning": st.just({"effort": "low"}),
    "text": st.just({"verbosity": "low"}),
    "include": st.just(["reasoning.encrypted_content"]),
    "truncation": st.just("auto"),
    "tools": st.sampled_from([[{"type": "web_search_preview"}], [FUNCTION_TOOL]]),
    "reasoning_effort": st.just("low"),
    "temperature": st.just(0.2),
}
CTOR_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "reasoning": st.just({"effort": "medium"}),
    "output_version": st.sampled_from(["v0", "responses/v1"]),
    "use_responses_api": st.booleans(),
    "seed": st.just(3),
}
MODELS = ["gpt-4o-mini", "o3-mini", "gpt-5.4-pro"]


@st.composite
def _some(draw: st.DrawFn, options: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=3))
    return {key: draw(options[key]) for key in keys}


def _realtime(model: str, ctor: dict[str, Any], call: dict[str, Any]) -> httpx2.Request | None:
    """Return the HTTP request `ChatOpenAI(...).invoke()` sends (routing left to ChatOpenAI).

    None when the SDK itself refused the call before sending: a parameter its
    `responses.create` (or `chat.completions.create`) does not take.
    """
    sent: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json=OPENAI_RESPONSE)

    llm = ChatOpenAI(
        model=model,
        api_key="sk-test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        **ctor,
    )
    try:
        llm.invoke(MESSAGE_SETS[1], **call)
    except Exception as exc:  # a Responses call cannot parse this canned answer
        if not sent:
            assert isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc)
            return None
    (request,) = sent
    return request


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), ctor=_some(CTOR_PARAMS), call=_some(CALL_PARAMS))
def test_a_request_is_refused_exactly_when_realtime_would_use_the_responses_api(
    model: str, ctor: dict[str, Any], call: dict[str, Any]
) -> None:
    realtime = _realtime(model, ctor, call)
    provider = OpenAIProvider(emulated=False, base_url="http://unused.invalid/v1")
    request = BatchRequest("r9", MESSAGE_SETS[1], call)
    event("refused by the SDK" if realtime is None else realtime.url.path)
    if realtime is None:
        # What realtime refuses outright is refused too, before anything is uploaded.
        with pytest.raises(InputError, match=r"(Responses API|takes no parameter).*'r9'"):
            built_lines(provider, [request], model, ctor)
    elif realtime.url.path.endswith("/responses"):
        with pytest.raises(InputError, match=r"Responses API.*\(request id 'r9'\)"):
            built_lines(provider, [request], model, ctor)
    else:
        assert realtime.url.path.endswith("/chat/completions")
        (line,) = [
            json.loads(raw) for raw in built_lines(provider, [request], model, ctor).splitlines()
        ]
        body = json.loads(realtime.content)
        body.pop("stream")
        assert line["body"] == body


def test_a_request_naming_a_responses_only_model_is_refused() -> None:
    # Realtime would send it to chat completions under the run model's routing, which the API
    # refuses for this model: refused here first, unless the run pins chat completions.
    provider = OpenAIProvider(emulated=False, base_url="http://unused.invalid/v1")
    request = BatchRequest("pro", MESSAGE_SETS[0], {"model": "gpt-5.4-pro"})
    with pytest.raises(
        InputError, match=r"model 'gpt-5.4-pro' \(served by the Responses API.*'pro'"
    ):
        built_lines(provider, [request], "gpt-4o-mini", {})
    pinned = built_lines(provider, [request], "gpt-4o-mini", {"use_responses_api": False})
    assert json.loads(pinned)["body"]["model"] == "gpt-5.4-pro"


# ----------------------------------------------------------------------------- every path


def _graph_run(inputs: dict[str, Any], **context: Any) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    graph.invoke(
        inputs,
        {"configurable": {"thread_id": "t"}},
        context=Context(provider="emulator", **context),
    )


def _assert_nothing_sent() -> None:
    assert read_access_log() == [] and list_jobs() == []


PROMPT = {"id": "ok", "prompt": "Classify: my invoice is wrong"}
GRAPH_PATHS: dict[str, tuple[list[dict[str, Any]], dict[str, Any], str]] = {
    "record params": (
        [PROMPT, {"id": "deep", "prompt": "Think", "params": {"reasoning": {"effort": "high"}}}],
        {},
        r"parameter reasoning makes ChatOpenAI send .*Responses API.*\(request id 'deep'\)",
    ),
    "batch-line body, built-in tool": (
        [
            {
                "custom_id": "web",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "News?"}],
                    "tools": [{"type": "web_search_preview"}],
                },
            }
        ],
        {},
        r"built-in tool web_search_preview .*Responses API.*\(request id 'web'\)",
    ),
    "request's own model": (
        [PROMPT, {"id": "pro", "prompt": "Hi", "params": {"model": "gpt-5-pro"}}],
        {},
        r"model 'gpt-5-pro' \(served by the Responses API only\).*\(request id 'pro'\)",
    ),
    "context model": (
        [PROMPT],
        {"model": "gpt-5.4-pro"},
        r"model 'gpt-5.4-pro' \(served by the Responses API only\).*\(request id 'ok'\)",
    ),
}


@pytest.mark.parametrize("path", sorted(GRAPH_PATHS))
def test_every_input_path_refuses_before_upload(path: str) -> None:
    records, context, message = GRAPH_PATHS[path]
    with pytest.raises(InputError, match=message):
        _graph_run({"requests": records}, **context)
    _assert_nothing_sent()


def test_context_model_settings_are_refused_before_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    # As a deployment would set them: `BATCH_AGENT_MODEL_SETTINGS`, JSON.
    monkeypatch.setenv("BATCH_AGENT_MODEL_SETTINGS", '{"use_responses_api": true}')
    with pytest.raises(InputError, match=r"use_responses_api=True .*\(request id 'ok'\)"):
        _graph_run({"requests": [PROMPT]})
    monkeypatch.setenv("BATCH_AGENT_MODEL_SETTINGS", '{"reasoning": {"effort": "low"}}')
    with pytest.raises(InputError, match=r"parameter reasoning .*\(request id 'ok'\)"):
        _graph_run({"requests": [PROMPT]})
    _assert_nothing_sent()


def test_a_request_file_is_refused_before_upload(tmp_path: Path) -> None:
    source = tmp_path / "requests.jsonl"
    lines = [PROMPT, {"id": "verbose", "prompt": "Hi", "params": {"text": {"verbosity": "low"}}}]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(InputError, match=r"parameter text .*\(request id 'verbose'\)"):
        _graph_run({"input_path": str(source)})
    _assert_nothing_sent()


@pytest.mark.parametrize(
    ("ctor", "cause"),
    [
        ({"use_responses_api": True}, "use_responses_api=True"),
        ({"reasoning": {"effort": "low"}}, "parameter reasoning"),
        ({"output_version": "responses/v1"}, "output_version='responses/v1'"),
        ({"model": "gpt-5.2-pro"}, "model 'gpt-5.2-pro'"),
    ],
)
def test_run_batch_refuses_a_model_object_set_for_the_responses_api(
    ctor: dict[str, Any], cause: str
) -> None:
    llm = ChatOpenAI(**{"model": "gpt-4o-mini", "api_key": "sk-unused", **ctor})
    with pytest.raises(ValueError, match=rf"{cause}.*Responses API"):
        run_batch(["Hello"], model=llm)
    with pytest.raises(ValueError, match=rf"{cause}.*Responses API"):
        run_batch(["Hello"], model=llm.bind_tools([FUNCTION_TOOL]))
    _assert_nothing_sent()
