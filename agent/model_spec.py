"""Describe a LangChain chat model, possibly wrapped by `bind_tools` / `with_structured_output`.

`spec_from_chat_model(runnable)` turns what a caller would `.invoke()` in realtime, e.g.
`ChatOpenAI(model="gpt-4o-mini", temperature=0).with_structured_output(Ticket)`, into the plain
JSON the batch graph takes: provider, model and run-context parameters (the graph's context),
per-request parameters, and the request set's tools / response schema (the graph's input).

Exactness is checked, not assumed: the batch body built from the returned spec (through
`bind_tools` / `with_structured_output` again, `agent.structured`) is compared with the body the
given runnable would send for a probe message, and a model whose requests the batch path cannot
reproduce is refused with the keys that differ. A `ChatOpenAI` routed to the Responses API is
batched there (its settings pin `use_responses_api`, `agent.providers.openai.responses`).
API keys and HTTP clients are never read into the spec.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableParallel, RunnableSequence
from langchain_core.utils.function_calling import convert_to_openai_tool

from agent.providers.settings import SettingRules, endpoint_setting, set_fields, setting_json
from agent.requests import BatchRequest
from agent.structured import OutputSpec, bind_kwargs

# Model parameters the run context carries (`agent.planning.context_params`).
CONTEXT_PARAMS: Final = ("temperature", "max_tokens", "top_p")
_TRACING_KEY: Final = "ls_structured_output_format"
_MODEL_FIELDS: Final = frozenset({"model", "model_name"})
_PROBE: Final = BatchRequest("probe", [{"role": "user", "content": "probe"}], {})


def spec_from_chat_model(runnable: Runnable[Any, Any]) -> dict[str, Any]:
    """Return the batch description of a chat model as a realtime caller would invoke it.

    Every field of the chat model that changes a request or its answer is carried: temperature,
    max_tokens and top_p in `params`, every other model setting (stop sequences, `logit_bias`,
    `output_version`, `top_k`, thinking, reasoning effort, `model_kwargs`, ...) in `settings`,
    and the endpoint in `base_url` / `organization`; a field that only configures the client
    (key, retries, timeouts, tracing) is not. What a batch cannot reproduce is refused by name.

    Args:
        runnable: A `ChatOpenAI` / `ChatMistralAI` / `ChatAnthropic` / `ChatGoogleGenerativeAI`, or one wrapped by `.bind_tools(...)`,
            `.with_structured_output(...)` (also with `include_raw=True` or `tools=`) or `.bind(...)`.

    Returns:
        `{"provider", "model", "params", "settings", "request_params"}`, plus `base_url` and
        `organization` when the model names them, plus whichever of `tools`, `tool_choice`,
        `response_schema`, `schema_method`, `strict` apply. `provider`, `model`, `params`,
        `settings` (as `model_settings`), `base_url` and `organization` go to the graph's
        context; `request_params` (what `.bind(...)` adds) into every request's `params`; the
        rest into the graph input. All of it is plain JSON.

    Raises:
        TypeError: The runnable holds no chat model of a supported provider.
        ValueError: The batch path cannot reproduce this model's requests or answers exactly
            (naming the setting: response headers, streaming, HTTP headers, Anthropic
            betas, ...).
    """
    binding, llm = _find_model(runnable)
    provider, module = _provider_of(llm)
    model = str(getattr(llm, "model_name", None) or getattr(llm, "model", ""))
    kwargs = dict(binding.kwargs) if binding is not None else {}
    params, settings, endpoint = _model_settings(module, llm, model)
    settings.update(_endpoint_settings(module, llm, kwargs))
    reference = module.chat_model(model, {**settings, **params})
    pydantic_format = isinstance(kwargs.get("response_format"), type)
    if pydantic_format and provider == "openai":
        # What the SDK sends for a Pydantic class (`openai.request_body`): the spec keeps JSON.
        kwargs["response_format"] = module.type_to_response_format_param(kwargs["response_format"])
    spec = _output_spec(kwargs, runnable)
    bound = bind_kwargs(reference, spec)
    request_params = {
        key: setting_json(key, value)
        for key, value in kwargs.items()
        if key != _TRACING_KEY and (key not in bound or bound[key] != value)
    }
    _check_same_body(module, llm, kwargs, reference, bound, request_params)
    result: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "params": params,
        "settings": settings,
        "request_params": request_params,
        **endpoint,
    }
    if spec is not None:
        result.update(spec.to_state())
    return result


def _model_settings(
    module: Any, llm: BaseChatModel, model: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Split the fields `llm` sets into context params, model settings and its endpoint.

    A field counts as set when it differs from the same class's defaults for `model` (built the
    way the batch builds its reference chat model, so defaults read from the environment or
    derived from the model compare equal). Each is sorted by the provider's `SETTING_RULES`.
    """
    rules: SettingRules = module.SETTING_RULES
    default = module.chat_model(model, {})
    params: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    endpoint: dict[str, str] = {}
    for name, field, value in set_fields(llm, default, rules, _MODEL_FIELDS):
        if name in rules.endpoint:
            endpoint.update(endpoint_setting(rules, name, value))
        elif name in CONTEXT_PARAMS:
            params[name] = value
        elif field.alias in CONTEXT_PARAMS:
            # ChatGoogleGenerativeAI's `max_output_tokens` is the context's `max_tokens` (its
            # alias): carried as such, the cost estimate and budget see the output cap.
            params[field.alias] = value
        else:
            settings[name] = setting_json(name, value)
    return params, settings, endpoint


def realtime_output(
    runnable: Runnable[Any, Any],
) -> Callable[[AIMessage], tuple[AIMessage, Any]] | None:
    """Return what turns an answer into `runnable`'s realtime message and output.

    `with_structured_output(Schema)` is the chat model followed by an output parser, and its
    `.invoke()` returns what that parser makes of the `AIMessage` (a `Schema` instance for a
    Pydantic class, partial JSON, None) or raises what it raises. The batch has the same message,
    with one gap: the graph keeps the schema as JSON, so for a class the OpenAI SDK's `parsed`
    (which `chat.completions.parse` fills from the class in realtime, raising where the answer
    does not validate) is missing; it is filled here the SDK's way. Then the runnable's own
    parser runs. With `include_raw=True` the output is the `{"raw", "parsed", "parsing_error"}`
    dict `.invoke()` returns, a parser error included; only what happens before the parser (the
    SDK's `parse`) is raised, as realtime raises it.

    Args:
        runnable: What `spec_from_chat_model` was given.

    Returns:
        A function of the answer message that returns `(message, output)` and raises what the
        realtime call would raise; None when `runnable` has no parser after the model (a bare
        or `bind_tools` chat model: the message is the output).
    """
    if not isinstance(runnable, RunnableSequence):
        return None
    binding, llm = _find_model(runnable)
    response_format = binding.kwargs.get("response_format") if binding is not None else None
    # OpenAI's `parsed` comes from a class only (a JSON schema leaves it None in realtime too).
    openai_class = isinstance(response_format, type) and _provider_of(llm)[0] == "openai"
    sdk_format = response_format if openai_class else None
    rest = RunnableSequence(*runnable.steps[1:]) if len(runnable.steps) > 2 else runnable.last
    with_raw = isinstance(runnable.first, RunnableParallel)

    def output(message: AIMessage) -> tuple[AIMessage, Any]:
        if sdk_format is not None and message.additional_kwargs.get("parsed") is None:
            message = _with_sdk_parsed(message, sdk_format)
        if not with_raw:
            return message, rest.invoke(message)
        # `include_raw=True`: {"raw": model} | assign(parsed=..., parsing_error=...), whose
        # fallback turns a parser error into `parsing_error` (returned, not raised).
        return message, rest.invoke({"raw": message})

    return output


def realtime_message(
    llm: BaseChatModel, kwargs: Mapping[str, Any], message: AIMessage
) -> AIMessage:
    """Return the message `llm`'s realtime call with these call kwargs returns for an answer.

    The batch's message is the realtime one but for OpenAI's `parsed`, which the SDK fills from
    a Pydantic `response_format` class (`with_structured_output(Schema)`): filled here, raising
    where realtime raises (`_with_sdk_parsed`).
    """
    response_format = kwargs.get("response_format")
    if isinstance(response_format, type) and _provider_of(llm)[0] == "openai":
        if message.additional_kwargs.get("parsed") is None:
            return _with_sdk_parsed(message, response_format)
    return message


def _with_sdk_parsed(message: AIMessage, response_format: type) -> AIMessage:
    """Add the `parsed` that `chat.completions.parse(response_format=cls)` puts on the message."""
    from openai.lib._parsing._completions import maybe_parse_content
    from openai.types.chat import ChatCompletionMessage

    refusal = message.additional_kwargs.get("refusal")
    # An OpenAI chat completion's content is a string (or null).
    content = message.content if isinstance(message.content, str) else None
    sdk_message = ChatCompletionMessage(role="assistant", content=content or None, refusal=refusal)
    # Raises as realtime `.parse()` does when the answer does not validate against the class.
    parsed = maybe_parse_content(response_format=response_format, message=sdk_message)
    kwargs = {**message.additional_kwargs, "parsed": parsed}
    return message.model_copy(update={"additional_kwargs": kwargs})


def _find_model(
    runnable: Runnable[Any, Any],
) -> tuple[RunnableBinding[Any, Any] | None, BaseChatModel]:
    """Return the chat model inside `runnable` and the binding that wraps it, if any."""
    if isinstance(runnable, BaseChatModel):
        return None, runnable
    if isinstance(runnable, RunnableBinding):
        if isinstance(runnable.bound, BaseChatModel):
            return runnable, runnable.bound
        return _find_model(runnable.bound)
    if isinstance(runnable, RunnableSequence):
        return _find_model(runnable.first)
    if isinstance(runnable, RunnableParallel):
        for step in runnable.steps__.values():
            try:
                return _find_model(step)
            except TypeError:
                continue
    raise TypeError(f"no chat model found in {type(runnable).__name__}")


def _provider_of(llm: BaseChatModel) -> tuple[str, Any]:
    """Return the batch provider name and its reference-path module for a chat model."""
    from langchain_openai import ChatOpenAI

    if type(llm) is ChatOpenAI:
        from agent.providers.openai import reference as openai_reference

        return "openai", openai_reference
    # Only a module already imported can have made `llm`: no import cost for the others.
    mistral = sys.modules.get("langchain_mistralai")
    if mistral is not None and isinstance(llm, mistral.ChatMistralAI):
        from agent.providers.mistral import reference as mistral_reference

        return "mistral", mistral_reference
    anthropic = sys.modules.get("langchain_anthropic")
    if anthropic is not None and isinstance(llm, anthropic.ChatAnthropic):
        from agent.providers.anthropic import reference as anthropic_reference

        return "anthropic", anthropic_reference
    google = sys.modules.get("langchain_google_genai")
    if google is not None and isinstance(llm, google.ChatGoogleGenerativeAI):
        from agent.providers.gemini import reference as gemini_reference

        return "gemini", gemini_reference
    raise TypeError(
        f"{type(llm).__name__} has no batch provider here (ChatOpenAI, ChatMistralAI, "
        "ChatAnthropic, ChatGoogleGenerativeAI)"
    )


def _output_spec(kwargs: dict[str, Any], runnable: Runnable[Any, Any]) -> OutputSpec | None:
    """Recover the tools / response schema the wrapper was built with."""
    structured = kwargs.get(_TRACING_KEY)
    tools = kwargs.get("tools")
    if isinstance(structured, dict) and structured.get("schema") is not None:
        options = structured.get("kwargs") or {}
        method = options.get("method")
        strict = options.get("strict")
        bound_schema = _bound_json_schema(kwargs) if method == "json_schema" else None
        if bound_schema is not None:
            # The schema as bound (strictness and SDK conversion included) is sent unchanged
            # when bound again, so the body stays exact.
            schema: dict[str, Any] = bound_schema
            strict = None
        else:
            # `with_structured_output` records its schema as given (OpenAI json_schema: as a tool).
            schema = convert_to_openai_tool(structured["schema"])["function"]
        return OutputSpec(
            tools=None if method == "function_calling" else tools,
            response_schema=schema,
            schema_method=method,
            strict=strict,
        )
    if tools and not isinstance(runnable, RunnableSequence):
        return OutputSpec(tools=tools, tool_choice=kwargs.get("tool_choice"))
    return None


def _bound_json_schema(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Return the JSON schema a `json_schema` structured output bound, in a re-bindable form.

    OpenAI / Mistral bind `response_format={"type": "json_schema", "json_schema": {...}}`, whose
    inner object `with_structured_output` takes back as is; Anthropic binds
    `output_config={"format": {"type": "json_schema", "schema": {...}}}`, a titled JSON schema.
    """
    response_format = kwargs.get("response_format")
    if isinstance(response_format, dict) and isinstance(response_format.get("json_schema"), dict):
        return dict(response_format["json_schema"])
    output_format = (kwargs.get("output_config") or {}).get("format")
    if isinstance(output_format, dict) and isinstance(output_format.get("schema"), dict):
        return dict(output_format["schema"])
    return None


def _endpoint_settings(module: Any, llm: BaseChatModel, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return the setting that sends the batch to the API the runnable's realtime calls go to.

    A `ChatOpenAI` whose own settings route it to the Responses API is carried by them. One
    that goes there only through what its wrapper passes on every call (`.bind(reasoning=...)`)
    gets `use_responses_api=True`: the same bodies, and the job's endpoint is then the
    Responses API (`agent.providers.openai.responses.openai_endpoint`).
    """
    routes = getattr(module, "routes_to_responses", None)
    if routes is None or getattr(llm, "use_responses_api", None) is not None:
        return {}
    call = {k: v for k, v in kwargs.items() if k != _TRACING_KEY}
    if routes(llm, call) and not routes(llm, {}):
        return {"use_responses_api": True}
    return {}


def _realtime_body(module: Any) -> Any:
    """Return the provider's "body realtime would send" (Anthropic: the Messages params).

    OpenAI's goes to chat completions or the Responses API, as the model routes the call.
    """
    if getattr(module, "routes_to_responses", None) is not None:
        from agent.providers.openai.responses import realtime_body

        return realtime_body
    return getattr(module, "request_body", None) or module.request_params


def _check_same_body(
    module: Any,
    llm: BaseChatModel,
    kwargs: dict[str, Any],
    reference: BaseChatModel,
    bound: dict[str, Any],
    request_params: dict[str, Any],
) -> None:
    """Refuse the spec unless it rebuilds the body the given runnable would send."""
    user_kwargs = {k: v for k, v in kwargs.items() if k != _TRACING_KEY}
    body = _realtime_body(module)
    theirs = body(llm, _PROBE, user_kwargs)
    probe = BatchRequest(_PROBE.id, _PROBE.messages, request_params)
    ours = body(reference, probe, bound)
    if theirs != ours:
        differ = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
        raise ValueError(
            f"cannot reproduce this {type(llm).__name__}'s requests in a batch exactly "
            f"(body keys that differ: {', '.join(differ)})"
        )
