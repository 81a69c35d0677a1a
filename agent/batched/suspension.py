"""Keep a batched call's suspension out of LangChain's catch-all wrappers: fallbacks, retries.

A batched call suspends its node by raising LangGraph's `GraphInterrupt` (an `Exception`). Two
LangChain wrappers catch every `Exception` by default: `with_fallbacks` would call the fallback
at once (another batched call, whose interrupt then answers the wrong call on resume), and
`with_retry` would try again (a second and third call in the same round: paid for twice). A
Python `except` clause cannot leave one subclass out, so the suspension is carried past them
instead: inside the wrapper, `_Carry` turns the interrupt into `_Suspension` (a `BaseException`,
which neither wrapper catches), and `_Shield` around the wrapper turns it back. What the
wrappers do for a failed call (a `BatchCallError`, the SDK's exception) is unchanged.

`batched(...)` applies this to every fallbacks or retry wrapper in the runnable it batches, and
`BatchedChatModel.with_fallbacks` / `.with_retry` return shielded wrappers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.fallbacks import RunnableWithFallbacks
from langchain_core.runnables.retry import RunnableRetry
from langgraph.errors import GraphBubbleUp
from pydantic import BaseModel, ConfigDict


class _Suspension(BaseException):  # noqa: N818 (not an error: a node suspending)
    """A batched call's `GraphInterrupt`, on its way past a catch-all wrapper."""

    def __init__(self, interrupt: GraphBubbleUp) -> None:
        super().__init__(interrupt)
        self.interrupt = interrupt


class _Relay(RunnableSerializable[Any, Any]):
    """Runs `bound`; an exception of class `catches` comes out as `relayed(exc)`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    bound: Runnable[Any, Any]
    catches: ClassVar[type[BaseException]] = BaseException

    def relayed(self, exc: Any) -> BaseException:
        """Return what to raise instead of `exc`."""
        raise NotImplementedError

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Invoke `bound`, relaying its suspension."""
        try:
            return self.bound.invoke(input, config, **kwargs)
        except self.catches as exc:
            raise self.relayed(exc) from None

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Invoke `bound` asynchronously, relaying its suspension."""
        try:
            return await self.bound.ainvoke(input, config, **kwargs)
        except self.catches as exc:
            raise self.relayed(exc) from None

    def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        """Answer several inputs with `bound` (together: one suspension), relaying it."""
        try:
            return self.bound.batch(inputs, config, **kwargs)
        except self.catches as exc:
            raise self.relayed(exc) from None

    async def abatch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        """Answer several inputs with `bound` asynchronously, relaying its suspension."""
        try:
            return await self.bound.abatch(inputs, config, **kwargs)
        except self.catches as exc:
            raise self.relayed(exc) from None

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Stream `bound`'s output, relaying its suspension."""
        try:
            yield from self.bound.stream(input, config, **kwargs)
        except self.catches as exc:
            raise self.relayed(exc) from None

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Stream `bound`'s output asynchronously, relaying its suspension."""
        try:
            async for chunk in self.bound.astream(input, config, **kwargs):
                yield chunk
        except self.catches as exc:
            raise self.relayed(exc) from None


class _Carry(_Relay):
    """Inside a wrapper: the suspension comes out as `_Suspension`, which the wrapper lets by."""

    catches: ClassVar[type[BaseException]] = GraphBubbleUp

    def relayed(self, exc: Any) -> BaseException:
        """Carry the interrupt."""
        return _Suspension(exc)


class _Shield(_Relay):
    """Around a fallbacks or retry wrapper: a carried suspension is the interrupt again."""

    catches: ClassVar[type[BaseException]] = _Suspension

    def relayed(self, exc: Any) -> BaseException:
        """Raise the carried interrupt."""
        return exc.interrupt  # type: ignore[no-any-return]


def suspension_safe(runnable: Any, batched: type[Runnable[Any, Any]]) -> Any:
    """Return `runnable` with each fallbacks / retry wrapper of a batched model shielded.

    Args:
        runnable: Any runnable (a chain, a bound model, a wrapper), as `batched` returns it.
        batched: The class of batched models (`agent.batched.model.BatchedChatModel`).

    Returns:
        The same runnable (a copy where something changed, never edited in place) in which every
        `RunnableWithFallbacks` and `RunnableRetry` holding a batched model lets the batched
        call's suspension through, and catches what it caught before.
    """
    if isinstance(runnable, _Shield | batched):
        return runnable
    if isinstance(runnable, RunnableWithFallbacks | RunnableRetry):
        if not _holds(runnable, batched):
            return runnable

        def carried(inner: Runnable[Any, Any]) -> Runnable[Any, Any]:
            return _Carry(bound=suspension_safe(inner, batched))

        if isinstance(runnable, RunnableWithFallbacks):
            wrapper: Runnable[Any, Any] = runnable.model_copy(
                update={
                    "runnable": carried(runnable.runnable),
                    "fallbacks": [carried(f) for f in runnable.fallbacks],
                }
            )
        else:
            wrapper = runnable.model_copy(update={"bound": carried(runnable.bound)})
        return _Shield(bound=wrapper)
    if isinstance(runnable, BaseModel):
        update = {}
        for name in type(runnable).model_fields:
            field = getattr(runnable, name, None)
            safe = _walk(field, batched)
            if safe is not field:
                update[name] = safe
        return runnable.model_copy(update=update) if update else runnable
    return runnable


def _walk(value: Any, batched: type[Runnable[Any, Any]]) -> Any:
    """Return a field's value (a runnable, or a list or dict of them) made suspension-safe."""
    if isinstance(value, list | tuple):
        items = [_walk(item, batched) for item in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return type(value)(items)
        return value
    if isinstance(value, dict):
        swapped = {k: _walk(v, batched) for k, v in value.items()}
        return swapped if any(swapped[k] is not v for k, v in value.items()) else value
    return suspension_safe(value, batched) if isinstance(value, Runnable) else value


def _holds(value: Any, kind: type) -> bool:
    """Tell whether `value` (a runnable's fields, depth first) holds an instance of `kind`."""
    if isinstance(value, kind):
        return True
    if isinstance(value, BaseModel):
        return any(_holds(getattr(value, n, None), kind) for n in type(value).model_fields)
    if isinstance(value, list | tuple):
        return any(_holds(item, kind) for item in value)
    if isinstance(value, dict):
        return any(_holds(item, kind) for item in value.values())
    return False
