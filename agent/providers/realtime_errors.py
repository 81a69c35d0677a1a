"""What a failed batched call raises: the exception the realtime call would raise for it.

A batched call (`agent.batched`) whose stored result is an error raises, in its node, what the
chat model's realtime `.invoke()` raises for that kind of failure, so the user's own
`except openai.RateLimitError`, retry policy or `with_fallbacks` works unchanged. A result's
error is a code and a message: `agent.providers.base.error_status` reads the HTTP status realtime
would have met from the code, and each provider's `realtime_errors` module builds its chat
model's exception for that status (its SDK's class, as its LangChain integration re-raises it)
on a synthetic HTTP exchange, with `reraised` from here. `BatchProvider.realtime_exception` puts
the two together and makes the exception a `BatchCallError` as well.

A failure with no HTTP error to stand for (an answer realtime's parsing raised for, a result
line that could not be read) has no status: it raises `BatchCallError` alone.
"""

from __future__ import annotations

from collections.abc import Callable


def reraised(error: Exception, classify: Callable[[Exception], object]) -> Exception:
    """Return what `classify` raises when it is called while `error` is being handled.

    That is how the LangChain integrations turn an SDK error into their own class (an `except`
    clause calling a handler that raises `X(...) from e`, or re-raises `e` with a bare
    `raise`), so the exception returned is realtime's, with its cause chained as realtime's is.
    `error` itself when `classify` raises nothing.
    """
    try:
        try:
            raise error
        except Exception as caught:  # noqa: BLE001 (the handler decides, as realtime's does)
            classify(caught)
    except Exception as classified:  # noqa: BLE001 (whatever realtime raises is the answer)
        return classified
    return error
