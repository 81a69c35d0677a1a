"""`batched(model)`: a chat model whose calls, run under batch-agent, go through a batch API.

`batched(ChatOpenAI(...))` (also of a runnable made by `bind_tools` / `with_structured_output`,
and `batched(llm).bind_tools(...)` / `.with_structured_output(...)`) is used in a node exactly like
the model it wraps. Under batch-agent (`agent.batched.bridge.map_graph`) a call does not reach
the provider: the request is described as the batch graph will send it (`agent.model_spec`, the
very body the realtime call would send), the node suspends with `interrupt()`, and when it is
resumed the call returns the `AIMessage` the realtime call would have returned, or raises what
it would have raised: for a rate limit, a server error or a rejected request, the provider SDK's
exception as the LangChain model raises it (its rate-limit class, ...), which is also a
`BatchCallError` (`agent.providers.realtime_errors`). An answer the batch's structured-output
check rejected is returned, for the model's own output parser to raise as realtime does.
Several calls made at once by `.batch([...])` suspend together.

Outside batch-agent (a plain `.invoke()` in a notebook, a graph run by itself) the wrapped model
is called in realtime: same answers, full price.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.config import get_config
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, PrivateAttr

from agent.batched.calls import (
    ANSWERS,
    CALLS,
    MAP_MARKER,
    Call,
    call_key,
    next_position,
)
from agent.batched.suspension import suspension_safe


class BatchedChatModel(BaseChatModel):
    """A chat model whose calls are batched under batch-agent (see the module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    wrapped: BaseChatModel
    """The chat model whose realtime calls the batched ones reproduce."""

    # The batch description per distinct call kwargs: building one builds chat models (about
    # 8 ms), and a node calls with the same kwargs for every item.
    _specs: dict[bytes, dict[str, Any]] = PrivateAttr(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return f"batched-{self.wrapped._llm_type}"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if not under_batch_agent():
            return self.wrapped._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        (message,) = self._ask([(messages, stop, kwargs)])
        return ChatResult(generations=[ChatGeneration(message=message)])

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:  # type: ignore[override]
        """Answer several inputs; under batch-agent they suspend together, in one interrupt.

        (The default would invoke each from a thread pool, and interrupts from parallel threads
        of one task would race.)
        """
        if not under_batch_agent():
            return super().batch(  # type: ignore[return-value]
                inputs, config, return_exceptions=return_exceptions, **kwargs
            )
        stop = kwargs.pop("stop", None)
        prompts = [self._convert_input(item).to_messages() for item in inputs]
        if not return_exceptions:
            return self._ask([(messages, stop, kwargs) for messages in prompts])
        out: list[Any] = []
        for item in self._ask([(m, stop, kwargs) for m in prompts], raise_errors=False):
            out.append(item)
        return out

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, Any]:
        """Bind tools as the wrapped model does; its calls stay batched."""
        return batched(self.wrapped.bind_tools(tools, **kwargs), self.wrapped)

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Runnable[Any, Any]:  # type: ignore[override]
        """Structure the output as the wrapped model does; its calls stay batched."""
        return batched(self.wrapped.with_structured_output(schema, **kwargs), self.wrapped)

    def with_fallbacks(self, fallbacks: Sequence[Runnable[Any, Any]], **kwargs: Any) -> Any:  # type: ignore[override]
        """Fall back as LangChain does on a failed call, never on the call's suspension."""
        return suspension_safe(super().with_fallbacks(fallbacks, **kwargs), BatchedChatModel)

    def with_retry(self, **kwargs: Any) -> Any:  # type: ignore[override]
        """Retry as LangChain does a failed call, never the call's suspension (a second call)."""
        return suspension_safe(super().with_retry(**kwargs), BatchedChatModel)

    def _ask(
        self,
        prompts: list[tuple[list[BaseMessage], list[str] | None, dict[str, Any]]],
        *,
        raise_errors: bool = True,
    ) -> list[Any]:
        """Suspend on these calls; return their answers (or errors) once resumed."""
        from agent.model_spec import realtime_message, spec_from_chat_model
        from agent.providers import provider_class
        from agent.structured import CHECKED_CODES

        configurable = get_config().get("configurable", {})
        thread_id = str(configurable.get("thread_id", ""))
        namespace = str(configurable.get("checkpoint_ns", ""))
        calls: list[Call] = []
        call_kwargs: list[dict[str, Any]] = []
        for messages, stop, kwargs in prompts:
            bound = {**kwargs, **({"stop": stop} if stop else {})}
            call_kwargs.append(bound)
            spec = self._spec(bound, spec_from_chat_model)
            dicts = convert_to_openai_messages(messages)
            assert isinstance(dicts, list)
            key = call_key(thread_id, namespace, next_position(namespace), spec, dicts)
            calls.append(Call(key=key, spec=spec, messages=dicts))
        if not configurable.get(MAP_MARKER):
            # Served: the bridge finds the calls in the store (`agent.batched.served`).
            from langgraph.config import get_store

            from agent.batched.served import record_calls, server_assistant

            record_calls(get_store(), calls, thread_id, server_assistant() or ("", ""))
        resumed = interrupt({CALLS: [call.to_json() for call in calls]})
        answers = resumed[ANSWERS]
        out: list[Any] = []
        for call, kwargs in zip(calls, call_kwargs, strict=True):
            answer = answers.get(call.key)
            if answer is None:
                raise RuntimeError(f"batch-agent resumed the node without an answer for {call.key}")
            error = answer["error"]
            if answer["message"] is not None and (
                error is None or error.get("code") in CHECKED_CODES
            ):
                # What the wrapped model's realtime call returns (an SDK's `parsed` filled in);
                # an answer the batch's check rejected goes to realtime's own parser above this
                # model, which raises for it (or not) as it would have in realtime.
                out.append(realtime_message(self.wrapped, kwargs, AIMessage(**answer["message"])))
                continue
            failure = provider_class(call.spec["provider"]).realtime_exception(
                error or {"code": "no_result", "message": "no answer"},
                key=call.key,
                model=str(call.spec.get("model") or ""),
                batch=str(answer.get("batch") or ""),
            )
            if raise_errors:
                raise failure
            out.append(failure)
        return out

    def _spec(self, bound: dict[str, Any], describe: Any) -> dict[str, Any]:
        """Return the batch description of the wrapped model bound with `bound` (cached)."""
        try:
            # A class (a response_format schema) is keyed by its qualified name and identity.
            key = orjson.dumps(
                bound, default=lambda v: f"{v!r}@{id(v)}", option=orjson.OPT_SORT_KEYS
            )
        except TypeError:
            key = None
        if key is not None and key in self._specs:
            return self._specs[key]
        spec: dict[str, Any] = describe(self.wrapped.bind(**bound) if bound else self.wrapped)
        if key is not None and len(self._specs) < 256:
            self._specs[key] = spec
        return spec


def under_batch_agent() -> bool:
    """Tell whether the running graph is run by batch-agent (its batched calls suspend)."""
    try:
        configurable = get_config().get("configurable", {})
    except RuntimeError:  # not inside a runnable context: a plain call
        return False
    if configurable.get(MAP_MARKER):
        return True
    from agent.batched.served import served_mode

    return served_mode()


def batched(runnable: Runnable[Any, Any], model: BaseChatModel | None = None) -> Any:
    """Return `runnable` with its chat model batched under batch-agent.

    Args:
        runnable: A chat model (`ChatOpenAI`, `ChatMistralAI`, `ChatAnthropic`,
            `ChatGoogleGenerativeAI`), or a runnable made from one by `bind_tools`,
            `with_structured_output` or `bind`.
        model: The chat model inside `runnable` to batch (default: the first one found).

    Returns:
        The same runnable, with that chat model replaced by a `BatchedChatModel` of it.

    Raises:
        TypeError: `runnable` holds no chat model.
    """
    if isinstance(runnable, BatchedChatModel):
        return runnable
    if isinstance(runnable, BaseChatModel):
        return BatchedChatModel(wrapped=runnable)
    found = list(chat_models_in(runnable))
    target = model or next((m for m in found if not isinstance(m, BatchedChatModel)), None)
    if target is None:
        if found:  # every model in it is batched already
            return suspension_safe(runnable, BatchedChatModel)
        raise TypeError(f"batched() needs a chat model, or a runnable holding one: {runnable!r}")
    # A fallbacks or retry wrapper in it would catch the batched call's suspension.
    return suspension_safe(
        _replaced(runnable, target, BatchedChatModel(wrapped=target)), BatchedChatModel
    )


def chat_models_in(value: Any) -> Iterator[BaseChatModel]:
    """Yield the chat models inside a runnable (its pydantic fields, depth first)."""
    if isinstance(value, BaseChatModel):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from chat_models_in(getattr(value, name, None))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from chat_models_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from chat_models_in(item)


def _replaced(value: Any, old: BaseChatModel, new: BaseChatModel) -> Any:
    """Return `value` with `old` replaced by `new` wherever it occurs (copies, never edits)."""
    if value is old:
        return new
    if isinstance(value, BaseChatModel):
        return value
    if isinstance(value, BaseModel):
        update = {}
        for name in type(value).model_fields:
            field = getattr(value, name, None)
            swapped = _replaced(field, old, new)
            if swapped is not field:
                update[name] = swapped
        return value.model_copy(update=update) if update else value
    if isinstance(value, list | tuple):
        items = [_replaced(item, old, new) for item in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return type(value)(items)
        return value
    if isinstance(value, dict):
        swapped_items = {k: _replaced(v, old, new) for k, v in value.items()}
        if any(swapped_items[k] is not v for k, v in value.items()):
            return swapped_items
        return value
    return value
