"""A request goes to the API realtime would send it to, or is refused before upload, on every path.

`ChatOpenAI` routes some calls to OpenAI's Responses API: `use_responses_api=True`,
Responses-only parameters (`reasoning`, `text`, `include`, `truncation`, ...), built-in tools,
models served by the Responses API only. A job's endpoint is its reference model's routing
(`BatchProvider.choose_endpoint`): a model routed to the Responses API makes `/v1/responses`
lines with the body realtime sends; a request whose own parameters would go to the other API than
its job's is refused, naming the request and the cause, before anything reaches the provider.
The realtime side is the real `ChatOpenAI` (routing left at its default) on a recording mock
transport, so both follow ChatOpenAI's own decision.
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
from agent.planning import run_params
from agent.providers.openai import OpenAIProvider
from agent.requests import BatchRequest, InputError
from tests.realtime import MESSAGE_SETS, OPENAI_RESPONSE

PROVIDER = OpenAIProvider(emulated=False, base_url="http://unused.invalid/v1")


def _lines(request: BatchRequest, model: str, ctor: dict[str, Any]) -> list[dict[str, Any]]:
    """The lines planning builds: on the endpoint `choose_endpoint` picks for the run's model."""
    endpoint, params = PROVIDER.choose_endpoint(model, dict(ctor), None)
    build = PROVIDER.check_ready(model, params, None, endpoint)
    line = json.loads(build(request))
    assert line["url"] == {"chat": "/v1/chat/completions", "responses": "/v1/responses"}[endpoint]
    return [line]


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
def test_a_request_goes_where_realtime_sends_it_or_is_refused(
    model: str, ctor: dict[str, Any], call: dict[str, Any]
) -> None:
    realtime = _realtime(model, ctor, call)
    request = BatchRequest("r9", MESSAGE_SETS[1], call)
    endpoint, _ = PROVIDER.choose_endpoint(model, dict(ctor), None)
    event("refused by the SDK" if realtime is None else f"{realtime.url.path} in a {endpoint} job")
    if realtime is None:
        # What realtime refuses outright is refused too, before anything is uploaded.
        with pytest.raises(InputError, match=r"(Responses API|takes no parameter).*'r9'"):
            _lines(request, model, ctor)
        return
    api = "responses" if realtime.url.path.endswith("/responses") else "chat"
    if api != endpoint:
        # Only a request's own parameters can route it elsewhere than its job's model.
        with pytest.raises(InputError, match=r"(Responses API|chat completions).*'r9'"):
            _lines(request, model, ctor)
        return
    (line,) = _lines(request, model, ctor)
    body = json.loads(realtime.content)
    body.pop("stream")
    assert line["body"] == body


def test_a_request_naming_a_responses_only_model_is_refused() -> None:
    # Realtime would send it to chat completions under the run model's routing, which the API
    # refuses for this model: refused here first, unless the run pins chat completions.
    request = BatchRequest("pro", MESSAGE_SETS[0], {"model": "gpt-5.4-pro"})
    with pytest.raises(
        InputError, match=r"model 'gpt-5.4-pro' \(served by the Responses API.*'pro'"
    ):
        _lines(request, "gpt-4o-mini", {})
    (pinned,) = _lines(request, "gpt-4o-mini", {"use_responses_api": False})
    assert pinned["body"]["model"] == "gpt-5.4-pro"
    # In a Responses-API job it is sent there, as realtime sends it.
    (responses,) = _lines(request, "gpt-4o-mini", {"use_responses_api": True})
    assert responses["url"] == "/v1/responses" and responses["body"]["model"] == "gpt-5.4-pro"


# ----------------------------------------------------------------------------- every path


def _graph_run(inputs: dict[str, Any], **context: Any) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    graph.invoke(
        inputs,
        {"configurable": {"thread_id": "t"}},
        context=Context(**{"provider": "emulator", **context}),
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
    "chat pinned by the run, a request with a Responses-only parameter": (
        [
            PROMPT,
            {"id": "deep", "prompt": "Hi", "params": {"include": ["file_search_call.results"]}},
        ],
        {"endpoint": "chat"},
        # Pinned, realtime sends it to chat completions, whose SDK call refuses `include`.
        r"chat completions API takes no parameter include.*\(request id 'deep'\)",
    ),
}


@pytest.mark.parametrize("path", sorted(GRAPH_PATHS))
def test_every_input_path_refuses_before_upload(path: str) -> None:
    records, context, message = GRAPH_PATHS[path]
    with pytest.raises(InputError, match=message):
        _graph_run({"requests": records}, **context)
    _assert_nothing_sent()


def test_a_request_file_is_refused_before_upload(tmp_path: Path) -> None:
    source = tmp_path / "requests.jsonl"
    lines = [PROMPT, {"id": "verbose", "prompt": "Hi", "params": {"text": {"verbosity": "low"}}}]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(InputError, match=r"parameter text .*\(request id 'verbose'\)"):
        _graph_run({"input_path": str(source)})
    _assert_nothing_sent()


def test_another_provider_refuses_the_responses_endpoint() -> None:
    with pytest.raises(InputError, match=r"mistral does not batch the responses endpoint"):
        _graph_run({"requests": [PROMPT]}, provider="mistral", endpoint="responses")
    with pytest.raises(
        InputError, match=r"endpoint 'completions' is not one a chat run can choose"
    ):
        _graph_run({"requests": [PROMPT]}, endpoint="completions")
    with pytest.raises(InputError, match=r"embeddings: an 'embed' input"):
        _graph_run({"requests": [PROMPT]}, endpoint="embeddings")
    _assert_nothing_sent()


@pytest.mark.parametrize(
    "ctor",
    [
        {"use_responses_api": True},
        {"reasoning": {"effort": "low"}},
        {"output_version": "responses/v1"},
        {"model": "gpt-5.2-pro"},
    ],
)
def test_run_batch_batches_a_model_object_set_for_the_responses_api_there(
    ctor: dict[str, Any],
) -> None:
    llm = ChatOpenAI(**{"model": "gpt-4o-mini", "api_key": "sk-unused", **ctor})
    for runnable in (llm, llm.bind_tools([FUNCTION_TOOL], tool_choice="none")):
        results = run_batch(["Hello"], model=runnable, poll_interval_seconds=0.1)
        assert [job["endpoint"] for job in results.jobs] == ["responses"]
        assert [result.ok for result in results] == [True]


def test_an_embeddings_run_takes_no_endpoint_choice() -> None:
    # The settings an embeddings run's jobs would record: refused, as sampling is.
    with pytest.raises(InputError, match=r"embeddings run takes no endpoint choice"):
        run_params(Context(provider="openai", endpoint="responses"), "embeddings")
