"""How an exception reads in a failed request's error: `exception_text`.

Realtime `.invoke()` raises; a batch records the exception as a request's error message instead
(an answer LangChain cannot use, an output parser's refusal), in the words a realtime caller
would have seen. Both the result-line reader (`agent.providers.base.read_outcome`) and the
structured-output check (`agent.structured`) write it this way.
"""

from __future__ import annotations

# Exception texts are kept whole up to this length (they can embed a whole answer).
MAX_ERROR_CHARS = 2000


def exception_text(exc: BaseException) -> str:
    """Return `"ExceptionType: text"`, as realtime would show the exception (bounded)."""
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > MAX_ERROR_CHARS:
        return text[: MAX_ERROR_CHARS - 1] + "…"
    return text
