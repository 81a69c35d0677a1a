"""Parity: a batch line is the body the realtime LangChain call sends, a result is its AIMessage.

The realtime side is the real `ChatOpenAI` / `ChatMistralAI` `.invoke()` with its HTTP client
swapped for a recording mock transport. The batch side is our provider's `prepare` (the JSONL we
upload) and `results` (reading an output file served through the real SDK).
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

from agent.context import Context
from agent.planning import intents_for, new_intent, plan_requests, spool_path
from agent.providers import provider_class
from agent.providers.base import BatchProvider, job_chat_model, job_line_builder
from agent.providers.mistral import MistralProvider
from agent.providers.openai import OpenAIProvider
from agent.requests import BatchRequest, InputError
from tests.realtime import (
    ANTHROPIC_RESPONSE,
    GEMINI_RESPONSE,
    MESSAGE_SETS,
    MISTRAL_RESPONSE,
    OPENAI_RESPONSE,
    invoke_recorded,
    recording_anthropic,
    recording_gemini,
    recording_mistral,
    recording_openai,
)
from tests.support import built_lines

# (constructor parameters from the run context, per-call parameters from the request record)
PARAM_SETS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({"temperature": 0.2, "max_tokens": 64}, {}),
    ({"top_p": 0.5}, {"temperature": 0.9, "stop": ["\n\n"]}),
]


def _realtime_openai(
    messages: list[dict[str, Any]],
    ctor: dict[str, Any],
    call: dict[str, Any],
    model: str = "gpt-4o-mini",
) -> tuple[dict[str, Any], AIMessage]:
    return invoke_recorded(recording_openai(OPENAI_RESPONSE, ctor, model), messages, call)


def _realtime_mistral(
    messages: list[dict[str, Any]],
    ctor: dict[str, Any],
    call: dict[str, Any],
    model: str = "mistral-small-latest",
) -> tuple[dict[str, Any], AIMessage]:
    return invoke_recorded(recording_mistral(MISTRAL_RESPONSE, ctor, model), messages, call)


def _files_server(content: bytes) -> httpx2.Client:
    """An httpx2 client whose every GET returns `content` (the provider's output file)."""
    return httpx2.Client(
        transport=httpx2.MockTransport(lambda request: httpx2.Response(200, content=content))
    )


def _batch_message(provider: BatchProvider, model: str, chat_model: str | None = None) -> AIMessage:
    job = new_intent(
        provider,
        key="k",
        attempt=1,
        model=model,
        params={},
        request_count=1,
        chat_model=chat_model,
    )
    job.update(job_id="batch_1", status="done", output_file_id="file-out")
    (outcome,) = list(provider.results(job))
    assert outcome.custom_id == "r1" and outcome.error is None and outcome.message is not None
    return outcome.message


def _mistral_batch_message(model: str, chat_model: str | None = None) -> AIMessage:
    """Our message for a Mistral job of `model` whose output file answers `MISTRAL_RESPONSE`."""
    line = {
        "id": "batch-1",
        "custom_id": "r1",
        "response": {"status_code": 200, "body": MISTRAL_RESPONSE},
        "error": None,
    }
    provider = MistralProvider(
        emulated=False,
        base_url="http://files.invalid",
        http_client=_files_server(json.dumps(line).encode() + b"\n"),
    )
    return _batch_message(provider, model, chat_model)


def _comparable(message: AIMessage) -> dict[str, Any]:
    # `invoke()` ids embed a random run id; everything else must match exactly.
    dumped = message.model_dump()
    dumped.pop("id")
    return dumped


# A batch line is its body in the provider's envelope: these keys and nothing else. (A Gemini
# line's body is its `request`, without the model its job names in its URL.)
ENVELOPES: dict[str, dict[str, Any]] = {
    "openai": {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions"},
    "mistral": {"custom_id": "r1"},
    "gemini": {"key": "r1"},
}
BODY_KEYS = {"openai": "body", "mistral": "body", "gemini": "request"}


@pytest.mark.parametrize("provider", list(ENVELOPES))
@pytest.mark.parametrize("messages", MESSAGE_SETS, ids=["user", "system+user", "multi-turn-parts"])
@pytest.mark.parametrize(
    ("ctor", "call"), PARAM_SETS, ids=["defaults", "ctx-params", "request-params"]
)
def test_batch_body_equals_realtime_body(
    provider: str, messages: list[dict[str, Any]], ctor: dict[str, Any], call: dict[str, Any]
) -> None:
    if provider == "openai":
        realtime_body, _ = _realtime_openai(messages, ctor, call)
        batch_provider: BatchProvider = OpenAIProvider(
            emulated=False, base_url="http://unused.invalid/v1"
        )
        model = "gpt-4o-mini"
    elif provider == "mistral":
        realtime_body, _ = _realtime_mistral(messages, ctor, call)
        batch_provider = MistralProvider(emulated=False, base_url="http://unused.invalid")
        model = "mistral-small-latest"
    else:
        model = "gemini-2.5-flash"
        recorded = recording_gemini(GEMINI_RESPONSE, ctor, model)
        realtime_body, _ = invoke_recorded(recorded, messages, call)
        assert realtime_body.pop("_model") == model  # in the URL: a Gemini job names it once
        batch_provider = provider_class("gemini")(emulated=False, base_url="http://unused.invalid")
    batch = built_lines(batch_provider, [BatchRequest("r1", messages, call)], model, ctor)
    (line,) = [json.loads(raw) for raw in batch.splitlines()]
    body_key = BODY_KEYS[provider]
    assert {key: value for key, value in line.items() if key != body_key} == ENVELOPES[provider]
    # OpenAI and Mistral send `stream: false` in realtime, which a batch line does not carry.
    assert realtime_body.pop("stream", None) is (None if provider == "gemini" else False)
    assert line[body_key] == realtime_body


def test_openai_result_equals_realtime_message() -> None:
    _, realtime = _realtime_openai(MESSAGE_SETS[0], {}, {})
    line = {
        "id": "batch_req_1",
        "custom_id": "r1",
        "response": {"status_code": 200, "request_id": "req_1", "body": OPENAI_RESPONSE},
        "error": None,
    }
    provider = OpenAIProvider(
        emulated=False,
        base_url="http://files.invalid/v1",
        http_client=_files_server(json.dumps(line).encode() + b"\n"),
    )
    ours = _batch_message(provider, "gpt-4o-mini")
    assert _comparable(ours) == _comparable(realtime)
    assert ours.usage_metadata == realtime.usage_metadata and ours.usage_metadata is not None
    assert ours.response_metadata["finish_reason"] == "stop"
    assert ours.response_metadata["model_name"] == "gpt-4o-mini-2024-07-18"
    assert ours.id and ours.id.startswith("lc_run-")


def test_mistral_result_equals_realtime_message() -> None:
    _, realtime = _realtime_mistral(MESSAGE_SETS[0], {}, {})
    ours = _mistral_batch_message("mistral-small-latest")
    assert _comparable(ours) == _comparable(realtime)
    assert ours.usage_metadata == {"input_tokens": 17, "output_tokens": 3, "total_tokens": 20}
    assert ours.response_metadata["finish_reason"] == "length"
    assert ours.response_metadata["model_name"] == "mistral-small-latest"


# ----------------------------------------------------------------------------- request options
# What the OpenAI SDK does with `create(**payload)` before the wire: `extra_body` is merged into
# the JSON body, `extra_headers` / `extra_query` / `timeout` go elsewhere, and int `logit_bias`
# keys are written as JSON strings. The batch line's body must be that same JSON.

BODY_EXTRAS = st.dictionaries(
    st.sampled_from(["top_k", "repetition_penalty", "temperature", "seed", "guided_json"]),
    st.one_of(st.integers(0, 5), st.text(max_size=3)),
    max_size=3,
)
INT_BIAS = st.dictionaries(st.sampled_from([50256, 198, 7]), st.integers(-100, 100), min_size=1)
OPENAI_OPTION_CTOR: dict[str, st.SearchStrategy[Any]] = {
    "extra_body": BODY_EXTRAS,
    "logit_bias": INT_BIAS,
    "temperature": st.sampled_from([0.0, 0.5]),
    "seed": st.integers(0, 9),
}
OPENAI_OPTION_CALL: dict[str, st.SearchStrategy[Any]] = {
    "extra_body": BODY_EXTRAS,
    "timeout": st.sampled_from([5, 30.0]),
    "logit_bias": st.one_of(
        INT_BIAS, st.dictionaries(st.sampled_from(["50256", "13"]), st.integers(-9, 9))
    ),
    "temperature": st.sampled_from([0.2, 1.0]),
    "stop": st.sampled_from([["\n"], None]),
    "max_tokens": st.integers(1, 50),
}


@st.composite
def _some(draw: st.DrawFn, options: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(options)), unique=True))
    return {key: draw(options[key]) for key in keys}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.sampled_from(MESSAGE_SETS),
    ctor=_some(OPENAI_OPTION_CTOR),
    call=_some(OPENAI_OPTION_CALL),
)
def test_openai_request_options_reach_the_body_as_the_sdk_sends_them(
    messages: list[dict[str, Any]], ctor: dict[str, Any], call: dict[str, Any]
) -> None:
    realtime_body, _ = _realtime_openai(messages, ctor, call)
    assert realtime_body.pop("stream") is False
    provider = OpenAIProvider(emulated=False, base_url="http://unused.invalid/v1")
    batch = built_lines(provider, [BatchRequest("r1", messages, call)], "gpt-4o-mini", ctor)
    (line,) = [json.loads(raw) for raw in batch.splitlines()]
    assert line["body"] == realtime_body
    assert not {"extra_body", "timeout"} & line["body"].keys()


@pytest.mark.parametrize(
    "option", [{"extra_headers": {"OpenAI-Beta": "x"}}, {"extra_query": {"api-version": "1"}}]
)
def test_openai_headers_and_query_a_batch_line_cannot_carry_are_refused(
    option: dict[str, Any],
) -> None:
    sent: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json=OPENAI_RESPONSE)

    llm = ChatOpenAI(
        model="gpt-4o-mini",
        api_key="sk-test",
        use_responses_api=False,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    llm.invoke(MESSAGE_SETS[0], **option)
    # Realtime sends them outside the body, where a batch line has no place for them.
    assert "openai-beta" in sent[0].headers or "api-version" in sent[0].url.params
    assert not option.keys() & json.loads(sent[0].content).keys()
    provider = OpenAIProvider(emulated=False, base_url="http://unused.invalid/v1")
    (name,) = option
    with pytest.raises(InputError, match=rf"{name} travel as HTTP headers.*request id 'r7'"):
        built_lines(provider, [BatchRequest("r7", MESSAGE_SETS[0], option)], "gpt-4o-mini", {})


STOPS = st.one_of(st.none(), st.lists(st.sampled_from(["\n", "END", "###"]), max_size=2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.sampled_from(MESSAGE_SETS),
    ctor_stop=STOPS,
    call=st.fixed_dictionaries({}, optional={"stop": STOPS, "temperature": st.just(0.1)}),
)
def test_mistral_stop_is_sent_as_realtime_sends_it(
    messages: list[dict[str, Any]], ctor_stop: list[str] | None, call: dict[str, Any]
) -> None:
    # `stop=None` falls back to the model's own stop, `stop=[]` sends none: never a literal key.
    ctor = {} if ctor_stop is None else {"stop": ctor_stop}
    realtime_body, _ = _realtime_mistral(messages, ctor, call)
    assert realtime_body.pop("stream") is False
    provider = MistralProvider(emulated=False, base_url="http://unused.invalid")
    batch = built_lines(
        provider, [BatchRequest("r1", messages, call)], "mistral-small-latest", ctor
    )
    (line,) = [json.loads(raw) for raw in batch.splitlines()]
    assert line["body"] == realtime_body


# ----------------------------------------------------------------------------- per-request model
# `llm.invoke(messages, model=X)` sends X but keeps `llm`'s rules (role names, default
# max_tokens) and parses the answer with `llm`. A request naming its own model under the run's
# model must do the same, while its job still runs (and bills) X.

SYSTEM_AND_USER = MESSAGE_SETS[1]
REQUEST_MODELS = [
    # (provider, the run's model, the request's own model)
    ("openai", "gpt-4o-mini", "o3-mini"),  # the run's roles: `system` stays `system`
    ("openai", "o3-mini", "gpt-4o-mini"),  # ... and o-series `developer` stays
    ("mistral", "mistral-small-latest", "mistral-large-latest"),
    ("anthropic", "claude-haiku-4-5", "claude-opus-4-6"),  # haiku's 64000 max_tokens, not 128000
    # Realtime `ChatGoogleGenerativeAI.invoke(messages, model=X)` is refused (its config has no
    # `model`): the line is what the run's model sends, and the job is created for X (a Gemini
    # line names no model). gemini-3's default temperature is not the run's model's rule.
    ("gemini", "gemini-2.5-flash", "gemini-3-pro-preview"),
]


def _realtime_with_model(
    provider: str, run_model: str, request_model: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], AIMessage]:
    call = {"model": request_model}
    if provider == "openai":
        return _realtime_openai(SYSTEM_AND_USER, {}, call, model=run_model)
    if provider == "mistral":
        return _realtime_mistral(SYSTEM_AND_USER, {}, call, model=run_model)
    if provider == "gemini":
        llm, sent = recording_gemini(GEMINI_RESPONSE, {}, model=run_model)
        answer = llm.invoke(SYSTEM_AND_USER)
        (body,) = sent
        assert body.pop("_model") == run_model
        return body, answer
    recorded = recording_anthropic(ANTHROPIC_RESPONSE, {}, monkeypatch, model=run_model)
    return invoke_recorded(recorded, SYSTEM_AND_USER, call)


@pytest.mark.parametrize(("provider", "run_model", "request_model"), REQUEST_MODELS)
def test_a_request_naming_its_model_keeps_the_run_models_rules(
    provider: str, run_model: str, request_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    realtime_body, _ = _realtime_with_model(provider, run_model, request_model, monkeypatch)
    realtime_body.pop("stream", None)
    batch_provider = provider_class(provider)(emulated=False, base_url="http://unused.invalid")
    context = Context(provider=provider, model=run_model)  # type: ignore[arg-type]
    requests = [
        BatchRequest("own", SYSTEM_AND_USER, {"model": request_model}),
        BatchRequest("run", SYSTEM_AND_USER, {}),
    ]
    plan = plan_requests(requests, provider=batch_provider, context=context, exact_tokens=False)
    try:
        by_model = {job.model: job for job in plan.jobs}
        assert sorted(by_model) == sorted({run_model, request_model})
        own = by_model[request_model]
        assert own.path is not None and list(own.iter_request_ids()) == ["own"]
        (line,) = [json.loads(raw) for raw in own.path.read_bytes().splitlines()]
        assert line.get("body", line.get("params", line.get("request"))) == realtime_body
        assert realtime_body.get("model", request_model) == request_model

        # The job runs X, remembers which model object built it, and a resumed submit that
        # rebuilds its input (another process, no spool file) writes the very same bytes.
        (job,) = [
            j
            for j in intents_for(plan, batch_provider, context, "t")
            if j["model"] == request_model
        ]
        assert job["chat_model"] == run_model and job_chat_model(job) == run_model
        build = job_line_builder(batch_provider, job, None)
        assert build(requests[0]) == (spool_path(job["job_key"])).read_bytes()
    finally:
        plan.discard()


def test_a_request_naming_its_model_is_parsed_by_the_run_model() -> None:
    # ChatMistralAI names its own model in every answer's metadata, whatever model was sent.
    _, realtime = _realtime_mistral(
        MESSAGE_SETS[0], {}, {"model": "mistral-large-latest"}, model="mistral-small-latest"
    )
    ours = _mistral_batch_message("mistral-large-latest", chat_model="mistral-small-latest")
    assert _comparable(ours) == _comparable(realtime)
    assert ours.response_metadata["model_name"] == "mistral-small-latest"
