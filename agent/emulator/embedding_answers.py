"""The deterministic embeddings rule of the emulator (OpenAI, Mistral, Gemini).

The emulator never runs a model. Each input is answered from the input alone, so the same text
(or token ids) always gets the same vector, in any process and on any day:

- **Vector**: a seeded numpy generator (`default_rng`, seeded by the SHA-256 of the input: the
  text, or the JSON of a token-id array) draws standard normal values, divided by their norm
  and stored as float32: unit length (to float32 precision), in the requested dimension.
- **Dimension**: the request's own (OpenAI `dimensions`, Mistral `output_dimension`, Gemini
  `outputDimensionality`), else the model's default (`DEFAULT_DIMENSIONS`; 1024 for a model
  not listed). OpenAI refuses `dimensions` for models before `text-embedding-3`, as it does.
- **Tokens**: a token-id array counts its ids; a text counts its whitespace-separated words
  (the chat rule, `agent.emulator.answers`). OpenAI and Mistral report them as
  `usage.prompt_tokens`; Gemini's batch lines as `tokenCount` (int64, a string).
- **Encoding** (OpenAI): `encoding_format` `float` (the API's default) gives float lists,
  `base64` the base64 of the float32 little-endian bytes, as OpenAI sends them.
- **Invalid inputs** (HTTP 400 / gRPC 3): no or empty input, an empty string (OpenAI: "cannot
  be an empty string"), mixed or non-text items, a dimension that is not a positive integer.
- **Faults**: the chat lines' knobs apply alike (`agent.emulator.faults`); prompt markers
  (``[emulator:reject]``, ``[emulator:delay=S]``, ...) are read from the texts (`marker_body`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from agent.emulator.answers import InvalidRequest

if TYPE_CHECKING:
    import numpy as np

DEFAULT_DIMENSIONS: Final[Mapping[str, int]] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "mistral-embed": 1024,
    "codestral-embed": 1536,
    "gemini-embedding-001": 3072,
    "text-embedding-004": 768,
}
FALLBACK_DIMENSIONS: Final = 1024
# The largest dimension asked for that is answered (the biggest real model's).
MAX_DIMENSIONS: Final = 4096
ENCODINGS: Final = frozenset({"float", "base64"})
GEMINI_TASKS: Final = frozenset(
    {
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)


def default_dimensions(model: str) -> int:
    """Return the dimension `model` answers in when a request names none."""
    return DEFAULT_DIMENSIONS.get(model.removeprefix("models/"), FALLBACK_DIMENSIONS)


def embedding_vector(item: str | list[int], dimensions: int) -> np.ndarray:
    """Return the input's vector: deterministic, unit length, float32, `dimensions` long."""
    import numpy as np  # here: only embeddings answers need it, not every emulator start

    seed = item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()
    values = np.random.default_rng(int.from_bytes(digest[:16], "little")).standard_normal(
        dimensions
    )
    return (values / np.linalg.norm(values)).astype("<f4")


def input_tokens(item: str | list[int]) -> int:
    """Return the tokens an input is billed: its token ids, or its words."""
    return len(item) if isinstance(item, list) else len(item.split())


def _dimensions(value: Any, model: str, name: str) -> int:
    if value is None:
        return default_dimensions(model)
    if type(value) is not int or not 1 <= value <= MAX_DIMENSIONS:
        raise InvalidRequest(f"'{name}' must be an integer from 1 to {MAX_DIMENSIONS}.", name)
    return value


def _items(inputs: Any, *, tokens: bool, empty_text: bool) -> list[str | list[int]]:
    """Return a request's inputs as a list of texts (or token-id arrays, when `tokens`).

    Raises:
        InvalidRequest: What the provider answers 400 for (see the module docstring).
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    elif tokens and isinstance(inputs, list) and inputs and all(type(i) is int for i in inputs):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest("'input' must be a non-empty string or array.", "input")
    texts = all(isinstance(item, str) for item in inputs)
    arrays = tokens and all(
        isinstance(item, list) and item and all(type(i) is int and i >= 0 for i in item)
        for item in inputs
    )
    if not texts and not arrays:
        raise InvalidRequest(
            "'input' must be strings"
            + (" or arrays of token ids" if tokens else "")
            + ", not a mix.",
            "input",
        )
    if not empty_text and texts and any(item == "" for item in inputs):
        raise InvalidRequest("'input' cannot contain an empty string.", "input")
    return inputs  # type: ignore[no-any-return]


def _openai_request(body: Any) -> tuple[str, list[str | list[int]], int, str]:
    """Read an OpenAI `/v1/embeddings` body: model, inputs, dimension, encoding.

    Raises:
        InvalidRequest: The body is one OpenAI answers 400 for.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", "model")
    items = _items(body.get("input"), tokens=True, empty_text=False)
    if body.get("dimensions") is not None and not model.startswith("text-embedding-3"):
        raise InvalidRequest(
            f"This model does not support specifying dimensions: {model}.", "dimensions"
        )
    dimensions = _dimensions(body.get("dimensions"), model, "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ENCODINGS:
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    return model, items, dimensions, encoding


def openai_error(body: Any) -> InvalidRequest | None:
    """Return why an OpenAI embeddings body fails on its own (a 400), or None."""
    try:
        _openai_request(body)
    except InvalidRequest as exc:
        return exc
    return None


def openai_answer(body: Any) -> tuple[dict[str, Any], int]:
    """Answer an OpenAI `/v1/embeddings` body: the response body and its prompt tokens.

    Raises:
        InvalidRequest: The body is one OpenAI answers 400 for.
    """
    model, items, dimensions, encoding = _openai_request(body)
    data = []
    for index, item in enumerate(items):
        vector = embedding_vector(item, dimensions)
        encoded: Any = (
            base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(input_tokens(item) for item in items)
    answer = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return answer, tokens


def _mistral_request(body: Any, job_model: str | None) -> tuple[str, list[str | list[int]], int]:
    """Read a Mistral `/v1/embeddings` body: model, texts, dimension.

    Raises:
        InvalidRequest: The body is one Mistral answers 400 for.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = job_model or body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("A model is required: set it on the job or in the body.", "model")
    items = _items(body.get("input"), tokens=False, empty_text=True)
    return model, items, _dimensions(body.get("output_dimension"), model, "output_dimension")


def mistral_error(body: Any, job_model: str | None) -> InvalidRequest | None:
    """Return why a Mistral embeddings body fails on its own (a 400), or None."""
    try:
        _mistral_request(body, job_model)
    except InvalidRequest as exc:
        return exc
    return None


def mistral_answer(body: Any, job_model: str | None) -> tuple[dict[str, Any], int]:
    """Answer a Mistral `/v1/embeddings` body: the response body and its prompt tokens.

    Raises:
        InvalidRequest: The body is one Mistral answers 400 for.
    """
    model, items, dimensions = _mistral_request(body, job_model)
    data = [
        {
            "object": "embedding",
            "embedding": embedding_vector(item, dimensions).tolist(),
            "index": i,
        }
        for i, item in enumerate(items)
    ]
    tokens = sum(input_tokens(item) for item in items)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    answer = {
        "id": digest[:32],
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
    }
    return answer, tokens


def _field(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    """Read a proto field by either JSON name (the API takes both)."""
    return obj.get(camel, obj.get(snake))


def gemini_text(request: Any) -> str:
    """Return the text of an `EmbedContentRequest` (its content's text parts, joined).

    Raises:
        InvalidRequest: The request has no content with text parts.
    """
    if not isinstance(request, dict):
        raise InvalidRequest("* EmbedContentRequest: the request must be an object")
    content = request.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise InvalidRequest("* EmbedContentRequest.content: content is required")
    if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts):
        raise InvalidRequest("* EmbedContentRequest.content.parts: only text parts are embedded")
    return "".join(p["text"] for p in parts)


def _gemini_request(request: Any, model: str) -> tuple[str, int]:
    """Read an `EmbedContentRequest`: its text and dimension.

    Raises:
        InvalidRequest: The request is one Gemini answers INVALID_ARGUMENT for.
    """
    text = gemini_text(request)
    task = _field(request, "taskType", "task_type")
    if task is not None and task not in GEMINI_TASKS:
        raise InvalidRequest(f"* EmbedContentRequest.task_type: unknown task type {task!r}")
    dimensions = _dimensions(
        _field(request, "outputDimensionality", "output_dimensionality"),
        model,
        "outputDimensionality",
    )
    return text, dimensions


def gemini_error(request: Any, model: str) -> str | None:
    """Return why an `EmbedContentRequest` fails on its own (INVALID_ARGUMENT), or None."""
    try:
        _gemini_request(request, model)
    except InvalidRequest as exc:
        return exc.message
    return None


def gemini_answer(request: Any, model: str) -> tuple[dict[str, Any], int]:
    """Answer one `EmbedContentRequest` of a batch: its `SingleEmbedContentResponse` and tokens.

    Raises:
        InvalidRequest: The request is one Gemini answers INVALID_ARGUMENT for.
    """
    text, dimensions = _gemini_request(request, model)
    tokens = input_tokens(text)
    answer = {
        "embedding": {"values": embedding_vector(text, dimensions).tolist()},
        "tokenCount": str(tokens),
    }
    return answer, tokens


def gemini_marker_body(request: Any) -> dict[str, Any]:
    """Return a chat-shaped body holding a request's text, for the fault rules' markers."""
    try:
        return marker_body([gemini_text(request)])
    except InvalidRequest:
        return marker_body([])


def marker_body(texts: list[str]) -> dict[str, Any]:
    """Return a chat-shaped body holding `texts`, where the fault rules read prompt markers."""
    return {"messages": [{"role": "user", "content": " ".join(texts)}]}


def body_texts(body: Any) -> list[str]:
    """Return the texts of an OpenAI or Mistral embeddings body.

    Token ids are decoded with `cl100k_base` (every OpenAI embeddings model's encoding, shipped
    by quicktok), the chunks of one text joined, so markers reach the fault rules from them too.
    """
    inputs = body.get("input") if isinstance(body, dict) else None
    if isinstance(inputs, str):
        return [inputs]
    if not isinstance(inputs, list):
        return []
    texts = [item for item in inputs if isinstance(item, str)]
    ids = [i for item in inputs if isinstance(item, list) for i in item if type(i) is int]
    ids += [i for i in inputs if type(i) is int]
    if ids:
        import quicktok

        try:
            texts.append(quicktok.get_encoding("cl100k_base").decode(ids))
        except (ValueError, OverflowError, KeyError):
            pass  # ids outside the vocabulary carry no marker
    return texts
