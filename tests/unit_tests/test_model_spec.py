"""`spec_from_chat_model`: a wrapped LangChain chat model becomes the batch graph's JSON input.

The check that matters: a batch built from the returned spec sends, for every request, exactly
the body the given runnable sends when `.invoke()`d (recorded through a mock transport).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage
from pydantic import BaseModel, Field

from agent import run_batch
from agent.context import Context
from agent.emulator import list_jobs
from agent.model_spec import spec_from_chat_model
from agent.planning import intents_for, plan_requests, spool_path
from agent.requests import BatchRequest, InputError
from agent.structured import OutputSpec
from tests.support import built_lines
from tests.unit_tests.test_structured_parity import CASES, MESSAGES, SCHEMA, TOOLS, sent_body


class Ticket(BaseModel):
    """A classified support ticket."""

    category: str = Field(description="billing, bug or other")
    urgent: bool
    tags: list[str] = Field(default_factory=list)


STRICT_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

WRAPPERS: dict[str, Any] = {
    "plain": lambda llm: llm,
    "bind_tools": lambda llm: llm.bind_tools(TOOLS, tool_choice="get_weather"),
    "bind_tools+bind": lambda llm: llm.bind_tools(TOOLS).bind(stop=["END"]),
    "schema_dict": lambda llm: llm.with_structured_output(SCHEMA),
    "schema_pydantic": lambda llm: llm.with_structured_output(Ticket),
    "schema_pydantic_raw": lambda llm: llm.with_structured_output(Ticket, include_raw=True),
    "schema_json_schema": lambda llm: llm.with_structured_output(Ticket, method="json_schema"),
    "schema_function_calling": lambda llm: llm.with_structured_output(
        Ticket, method="function_calling"
    ),
    "schema_json_mode": lambda llm: llm.with_structured_output(Ticket, method="json_mode"),
}
OPENAI_ONLY: dict[str, Any] = {
    "schema_strict": lambda llm: llm.with_structured_output(SCHEMA, strict=True),
    "schema+tools": lambda llm: llm.with_structured_output(
        Ticket, tools=[STRICT_TOOL], strict=True, include_raw=True
    ),
}
CTOR = {"temperature": 0.3, "max_tokens": 50}


def _realtime_body(provider: str, wrap: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    case = CASES[provider]
    llm, sent = case.realtime(case.structured_answer({}), {**CTOR, "top_p": 0.9}, monkeypatch)
    try:
        wrap(llm).invoke(MESSAGES)
    except Exception:
        pass  # only the request matters
    return sent_body(sent[0])


@pytest.mark.parametrize("provider", list(CASES))
@pytest.mark.parametrize("wrapper", [*WRAPPERS, *OPENAI_ONLY])
def test_batch_from_spec_sends_the_realtime_body(
    provider: str, wrapper: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if wrapper in OPENAI_ONLY and provider != "openai":
        pytest.skip("OpenAI-only wrapper")
    if wrapper == "schema_json_mode" and provider == "anthropic":
        pytest.skip("ChatAnthropic has no json_mode")
    # (The OpenAI-only wrappers are `strict=True` and `with_structured_output(tools=...)`, which
    # ChatMistralAI, ChatAnthropic and ChatGoogleGenerativeAI do not take.)
    wrap = WRAPPERS.get(wrapper) or OPENAI_ONLY[wrapper]
    case = CASES[provider]
    llm, _ = case.realtime({}, {**CTOR, "top_p": 0.9}, monkeypatch)
    spec = spec_from_chat_model(wrap(llm))
    # Plain JSON, no key or client: it can go into graph input, context and checkpoints.
    assert json.loads(json.dumps(spec)) == spec
    assert "sk-test" not in json.dumps(spec) and "api_key" not in json.dumps(spec)
    assert spec["provider"] == provider and spec["model"] == case.model
    assert spec["params"]["temperature"] == 0.3 and spec["params"]["max_tokens"] == 50
    assert (wrapper == "plain") == (OutputSpec.from_values(spec) is None)

    batch = built_lines(
        case.provider(None),
        [BatchRequest("r1", MESSAGES, spec["request_params"])],
        spec["model"],
        {**spec["settings"], **spec["params"]},
        OutputSpec.from_values(spec),
    )
    (line,) = [json.loads(raw) for raw in batch.splitlines()]
    assert case.body_of(line) == _realtime_body(provider, wrap, monkeypatch)


def test_a_model_routed_to_the_responses_api_is_carried_with_its_routing() -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="gpt-5-mini",
        api_key="sk-test",
        use_responses_api=True,
        reasoning={"effort": "low", "summary": "auto"},
        output_version="v0",
    )
    spec = spec_from_chat_model(llm)
    assert spec["settings"]["use_responses_api"] is True
    assert spec["settings"]["reasoning"] == {"effort": "low", "summary": "auto"}
    # Routed there only by what `.bind(...)` passes: the batch's settings pin the same API.
    bound = spec_from_chat_model(
        ChatOpenAI(model="gpt-5-mini", api_key="sk-test").bind(
            include=["reasoning.encrypted_content"]
        )
    )
    assert bound["settings"] == {"use_responses_api": True}
    assert bound["request_params"] == {"include": ["reasoning.encrypted_content"]}
    schema = spec_from_chat_model(llm.with_structured_output(Ticket, method="json_schema"))
    assert schema["schema_method"] == "json_schema" and schema["settings"]["use_responses_api"]


def test_a_model_the_batch_path_cannot_reproduce_is_refused() -> None:
    with pytest.raises(TypeError, match="no chat model"):
        spec_from_chat_model(Ticket)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- model settings
# Every setting of the model object that changes the request or the answer is carried: the
# batch built and parsed from the spec (through the run context, the plan and the job record,
# as the graph does) sends the body and returns the message `llm.invoke()` does. Settings come
# in random combinations, per provider.

unit = st.sampled_from([0.0, 0.4, 1.0])
stops = st.lists(st.sampled_from(["END", "\n\n", "###"]), min_size=1, max_size=2)
SETTINGS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "openai": {
        "output_version": st.sampled_from(["v0", "v1"]),
        "logit_bias": st.dictionaries(
            st.sampled_from([50256, 198]), st.integers(-100, 100), min_size=1
        ),
        "stop": stops,
        "seed": st.integers(0, 9),
        "frequency_penalty": unit,
        "reasoning_effort": st.sampled_from(["low", "high"]),
        "extra_body": st.just({"top_k": 3}),
        "model_kwargs": st.just({"user": "u-1"}),
        "service_tier": st.just("flex"),
        "temperature": unit,
        "max_tokens": st.integers(1, 99),
    },
    "mistral": {
        "output_version": st.sampled_from(["v0", "v1"]),
        "stop": stops,
        "random_seed": st.integers(0, 9),
        "safe_mode": st.booleans(),
        "top_p": unit,
        "max_tokens": st.integers(1, 99),
    },
    "anthropic": {
        "output_version": st.sampled_from(["v0", "v1"]),
        "stop_sequences": stops,
        "top_k": st.integers(1, 9),
        "thinking": st.just({"type": "enabled", "budget_tokens": 1024}),
        "reasoning_effort": st.sampled_from(["low", "high"]),
        "inference_geo": st.just("us"),
        "max_tokens": st.integers(2048, 4096),
    },
    "gemini": {
        "output_version": st.sampled_from(["v0", "v1"]),
        "stop": stops,
        "top_k": st.integers(1, 9),
        "seed": st.integers(0, 9),
        "thinking_budget": st.integers(0, 1024),
        "include_thoughts": st.booleans(),
        "safety_settings": st.just({"HARM_CATEGORY_HARASSMENT": "BLOCK_NONE"}),
        "response_mime_type": st.just("text/plain"),
        "labels": st.just({"team": "support"}),
        "max_output_tokens": st.integers(1, 99),
    },
}


@st.composite
def model_settings(draw: st.DrawFn, provider: str) -> dict[str, Any]:
    options = SETTINGS[provider]
    keys = draw(st.lists(st.sampled_from(sorted(options)), unique=True, min_size=1, max_size=4))
    return {key: draw(options[key]) for key in keys}


def _batch_of_spec(
    case: Any, spec: dict[str, Any], answer: dict[str, Any]
) -> tuple[dict[str, Any], AIMessage]:
    """Run the spec through what the graph does: context, plan, job record, results."""
    context = Context(
        provider=spec["provider"],
        model=spec["model"],
        model_settings=spec["settings"],
        **spec["params"],
    )
    provider = case.provider(None)
    plan = plan_requests(
        [BatchRequest("r1", MESSAGES, {})], provider=provider, context=context, exact_tokens=False
    )
    try:
        (job,) = intents_for(plan, provider, context, "t")
        line = json.loads(spool_path(job["job_key"]).read_bytes())
    finally:
        plan.discard()
    served = case.provider(case.files_client(json.dumps(case.result_line(answer)).encode() + b"\n"))
    job.update(job_id="batch_01", status="done", output_file_id=case.output_file_id)
    (outcome,) = list(served.results(job))
    assert outcome.message is not None
    return case.body_of(line), outcome.message


@pytest.mark.parametrize("provider", list(CASES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_model_setting_is_carried(provider: str, data: st.DataObject) -> None:
    case = CASES[provider]
    ctor = data.draw(model_settings(provider))
    answer = case.text("Billing issue.", False)
    with pytest.MonkeyPatch.context() as monkeypatch:
        llm, sent = case.realtime(answer, ctor, monkeypatch)
        realtime = llm.invoke(MESSAGES)
    spec = spec_from_chat_model(llm)
    assert json.loads(json.dumps(spec)) == spec and spec["request_params"] == {}
    body, message = _batch_of_spec(case, spec, answer)
    assert body == sent_body(sent[0])
    assert message.model_dump(exclude={"id"}) == realtime.model_dump(exclude={"id"})


REFUSED: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "openai": [
        ("include_response_headers", {"include_response_headers": True}),
        ("streaming", {"streaming": True}),
        ("default_headers", {"default_headers": {"Authorization": "Bearer sk-secret"}}),
        ("default_query", {"default_query": {"api-version": "2024-10-21"}}),
        ("openai_proxy", {"openai_proxy": "http://user:pw@proxy.invalid:3128"}),
    ],
    "mistral": [("streaming", {"streaming": True})],
    "anthropic": [
        ("betas", {"betas": ["context-1m-2025-08-07"]}),
        ("streaming", {"streaming": True}),
        ("default_headers", {"default_headers": {"X-Api-Key": "sk-ant-secret"}}),
    ],
    "gemini": [
        ("streaming", {"streaming": True}),
        ("additional_headers", {"additional_headers": {"x-goog-api-key": "AIza-secret"}}),
        ("vertexai", {"vertexai": True}),
        ("project", {"project": "my-project"}),
    ],
}


@pytest.mark.parametrize(
    ("provider", "setting", "ctor"),
    [(provider, setting, ctor) for provider, cases in REFUSED.items() for setting, ctor in cases],
)
def test_a_setting_a_batch_cannot_reproduce_is_refused_by_name(
    provider: str, setting: str, ctor: dict[str, Any]
) -> None:
    llm = _chat_model_class(provider)(model=CASES[provider].model, api_key="sk-test", **ctor)
    with pytest.raises(ValueError, match=rf"its {setting} setting cannot be reproduced") as info:
        spec_from_chat_model(llm)
    assert "secret" not in str(info.value) and "pw@" not in str(info.value)
    with pytest.raises(ValueError, match=setting):
        run_batch(["Hello"], model=llm)
    # The same setting given to the run directly is refused too, before anything is sent.
    name = next(iter(ctor))
    with pytest.raises(InputError, match=rf"model setting '{name}' cannot be reproduced"):
        run_batch(["Hello"], provider=provider, model_settings=ctor)
    assert list_jobs() == []


def test_client_settings_are_not_model_settings() -> None:
    # Keys, timeouts and endpoints are no model settings: they never enter the run's settings.
    for settings_ in ({"api_key": "sk-secret"}, {"timeout": 5}, {"base_url": "http://x.invalid"}):
        with pytest.raises(InputError, match="model setting") as info:
            run_batch(["Hello"], provider="openai", model_settings=settings_)
        assert "sk-secret" not in str(info.value)
    assert list_jobs() == []


def _chat_model_class(provider: str) -> Any:
    if provider == "openai":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI
    if provider == "mistral":
        from langchain_mistralai import ChatMistralAI

        return ChatMistralAI
    if provider == "gemini":
        from langchain_google_genai import ChatGoogleGenerativeAI

        return ChatGoogleGenerativeAI
    from langchain_anthropic import ChatAnthropic

    return ChatAnthropic
