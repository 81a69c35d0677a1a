"""Fast, exact equivalents of the Gemini request building and result parsing.

Why this module exists: `agent.providers.gemini.reference` builds every request through
`ChatGoogleGenerativeAI._prepare_request` (message conversion into google-genai `Content`
models, a validated `GenerateContentConfig`) and google-genai's batch converter, which walks
every pydantic field (about 1,000-3,000 requests/s), and parses every answer through the SDK's
response model and `_response_to_result`. That dominates preparing or collecting a job of
50,000 requests.

The classes here reproduce the *result* of those reference paths directly, for the shapes that
make up nearly all traffic, and leave everything else to the reference (same design as the other
providers' `fast.py`, on the shared kit `agent.providers.fast`):

- requests: everything but `contents` and the system instruction depends only on the run's
  configuration (model settings, tools, response schema) and the request's parameters, so the
  reference builds it once per distinct parameters (other than the sampling ones, temperature,
  top_p, top_k, max_output_tokens and seed, which are validated and set into its cached
  `generationConfig` per request) and caches it; only the contents and system instruction are
  converted per request, for messages that are plain `{role, content}` dicts
  with role `system` (leading only), `user` or `assistant` and string or text-part contents,
  the last one a user turn.
- results: `{"key", "response"}` lines whose response has one candidate of plain text parts
  with finish reason STOP or MAX_TOKENS, no safety ratings or prompt feedback, and usage made of
  counts (and per-modality token details).

Everything else (tool calls and results, images, thoughts, signatures, blocked prompts, error
lines, unknown fields, `output_version="v1"`, ...) takes the reference path.

How exactness is kept: the request cache is filled by the reference itself (a probe request with
the same parameters and one user turn; its `contents` dropped), so a cached part is the
reference's by construction; the contents and system conversion replays `_parse_chat_history`
for plain text (system parts joined, empty user turns dropped, an empty assistant turn sent as
one empty text part).
The parser replays `_parse_response_candidate` for text parts (trailing newlines stripped,
empty parts skipped, list content for Gemini 3 and later), `_response_to_result`'s usage
arithmetic and `finish_message`'s metadata merge, and installs the AIMessage with
`agent.providers.fast.ai_message`. Both run probes through the fast and reference paths when
created and disable their fast path (with a warning) on any difference;
`tests/unit_tests/test_gemini_fastpath.py` holds the property tests that are the real guarantee.

Usage, one object per job:

    builder = GeminiBodyBuilder(model, ctx_params, spec)
    request = builder.build(request)    # == gemini.reference.request_body(llm, request, bound)
    line = builder.line(request)        # its JSONL line {"key": id, "request": ...}

    parser = GeminiMessageParser(job_chat_model(job), job["params"], spec)
    custom_id, message, error, retryable = parser.parse_line(raw, job["job_id"])
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Final

import orjson
from google.genai import types
from langchain_core.messages import AIMessage
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai.chat_models import _is_gemini_3_or_later

from agent.providers.fast import (
    MISSING,
    BodyBuilder,
    MessageParser,
    OutputLine,
    ai_message,
    fast_parsing_enabled,
    fast_path_agrees,
    same_json,
)
from agent.providers.gemini.reference import (
    PROBE_RESPONSE,
    GeminiLineParser,
    batch_line,
    chat_model,
    parse_response,
    request_body,
)
from agent.requests import BatchRequest
from agent.state import Usage
from agent.structured import OutputSpec, bind_kwargs

__all__ = ["GeminiBodyBuilder", "GeminiMessageParser"]

# Distinct request parameters whose configuration part is kept; past this, new ones are built
# by the reference (a run has a handful).
MAX_CACHED_CONFIGS: Final = 4096
# Distinct sets of sampling values whose validated form is kept.
MAX_CACHED_SCALARS: Final = 65536
# Per-request parameters that reach the contents (`http_options.extra_body` is merged over the
# whole request), so a cached request part would not be exact.
_CONTENT_PARAMS: Final = frozenset({"http_options"})
_ROLES: Final = {"user": "user", "assistant": "model"}
# Per-request sampling parameters set into the cached `generationConfig` rather than keyed on
# (requests often vary them one by one), with their REST names ...
_SCALARS: Final = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "max_output_tokens": "maxOutputTokens",
    "seed": "seed",
}
# ... and the order google-genai's config converter writes `generationConfig` keys in
# (`_GenerateContentConfig_to_mldev`); a cached config with any other key is not patched.
_GENERATION_ORDER: Final = (
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "responseLogprobs",
    "logprobs",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "mediaResolution",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
)
_GENERATION_KEYS: Final = frozenset(_GENERATION_ORDER)
_PROBE_TURN: Final = {"role": "user", "content": "probe"}

# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def _text_parts(content: Any) -> list[dict[str, str]] | None:
    """Return the Gemini parts of a string or text-part content, or None if it is neither."""
    if type(content) is str:
        return [{"text": content}]
    if type(content) is not list or not content:
        return None
    parts = []
    for part in content:
        if type(part) is not dict or len(part) != 2 or part.get("type") != "text":
            return None
        text = part.get("text")
        if type(text) is not str:
            return None
        parts.append({"text": text})
    return parts


def _split(messages: Any) -> tuple[list[dict[str, str]] | None, list[dict[str, Any]]] | None:
    """Return `(system instruction parts, Gemini contents)`, or None if not handled.

    Replays `_filter_messages` and `_parse_chat_history` for plain text: leading system
    messages become the system instruction's parts, a user turn with empty content is dropped,
    an assistant turn's empty string is one empty text part.
    """
    if type(messages) is not list or not messages:
        return None
    system: list[dict[str, str]] | None = None
    contents: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if type(message) is not dict or len(message) != 2 or "content" not in message:
            return None
        role = message.get("role")
        content = message["content"]
        if role == "system":
            # Only a leading run: a later one joins or is dropped by rules left to the reference.
            if contents or (index and system is None):
                return None
            parts = _text_parts(content)
            if parts is None:
                return None
            system = parts if system is None else system + parts
            continue
        wire_role = _ROLES.get(role) if type(role) is str else None
        if wire_role is None:
            return None
        if wire_role == "user" and (content == "" or content == []):
            continue  # `_filter_messages` drops empty human turns
        parts = _text_parts(content)
        if parts is None:
            return None
        contents.append({"parts": parts, "role": wire_role})
    # A last model turn (prefill) is refused by some models; the reference decides.
    if not contents or contents[-1]["role"] != "user":
        return None
    return system, contents


class GeminiBodyBuilder(BodyBuilder):
    """Build Gemini batch requests equal to `gemini.reference.request_body`.

    Construct once per job (model, run-context parameters, output spec); `build` is then safe to
    call for every request.

    Attributes:
        llm: The reference `ChatGoogleGenerativeAI` (also used by the fallback and the cache).
        fast_enabled: False when the model's settings need the reference path or the
            construction-time self-check found a difference.
    """

    def __init__(
        self, model: str, ctx_params: dict[str, Any], spec: OutputSpec | None = None
    ) -> None:
        """Build the reference model, bind the spec and self-check the fast path.

        Args:
            model: The run's model.
            ctx_params: Model parameters from the run context (`agent.planning.context_params`).
            spec: The request set's tools / response schema (bound as `bind_tools` /
                `with_structured_output` bind them; part of every cached request).
        """
        self.llm: ChatGoogleGenerativeAI = chat_model(model, ctx_params)
        self._bound: dict[str, Any] = bind_kwargs(self.llm, spec)
        self._cache: dict[bytes, dict[str, Any] | None] = {}
        self._scalar_values: dict[bytes, Any] = {}
        self.fast_enabled = (
            type(self.llm) is ChatGoogleGenerativeAI
            and not self.llm.convert_system_message_to_human
        )
        if self.fast_enabled:
            with warnings.catch_warnings():
                # The probes hold an empty user turn on purpose (a rule to check), and
                # ChatGoogleGenerativeAI warns when it drops one: the user would see a warning
                # about a request they never wrote at every Gemini run. Their own empty turns
                # still warn, as realtime.
                warnings.filterwarnings(
                    "ignore", "HumanMessage with empty content was removed", UserWarning
                )
                self.fast_enabled = fast_path_agrees(
                    f"fast body building for {type(self).__name__}",
                    _probe_requests(),
                    self.build_fast,
                    self.build_reference,
                    same_json,
                )

    def line(self, request: BatchRequest) -> bytes:
        """Return the batch input line `{"key": request id, "request": ...}` of `request`.

        Raises:
            InputError: The reference path refuses the request.
        """
        return batch_line(request.id, self.build(request))

    def build_reference(self, request: BatchRequest) -> dict[str, Any]:
        """Build the request through `ChatGoogleGenerativeAI` and google-genai (the reference)."""
        return request_body(self.llm, request, self._bound)

    def build_fast(self, request: BatchRequest) -> dict[str, Any] | None:
        """Build the request from its cached configuration part, or None for the reference.

        The configuration part's values are shared by every request built with it: the
        request is for serialising, not for editing.
        """
        params = request.params
        if params and not _CONTENT_PARAMS.isdisjoint(params):
            return None
        split = _split(request.messages)
        if split is None:
            return None
        system, contents = split
        scalars: dict[str, Any] | None = None
        if params and "generation_config" not in params:
            # (`generation_config` overrides the sampling arguments: all of it is keyed.)
            keyed: dict[str, Any] = {}
            for key, value in params.items():
                if key in _SCALARS:
                    if scalars is None:
                        scalars = {}
                    scalars[key] = value
                else:
                    keyed[key] = value
            params = keyed
        rest = self._configured(params)
        if rest is None:
            return None
        if scalars is not None:
            rest = self._with_scalars(rest, scalars)
            if rest is None:
                return None
        # The reference request starts with `contents`, then the system instruction (the first
        # thing the config converter lifts to the request), then the rest of the configuration.
        if system is None:
            return {"contents": contents, **rest}
        if "systemInstruction" in rest:
            return None
        return {"contents": contents, "systemInstruction": {"parts": system}, **rest}

    def _configured(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """Return the reference request minus `contents` for a request's parameters."""
        try:
            # Exact bytes as the key: 1 and 1.0, or True and 1, are not the same setting.
            key = orjson.dumps(params) if params else b""
        except TypeError:
            return None
        if key in self._cache:
            return self._cache[key]
        if len(self._cache) >= MAX_CACHED_CONFIGS:
            return None
        try:
            probe = self.build_reference(BatchRequest("probe", [_PROBE_TURN], params))
        except Exception:  # noqa: BLE001 (the request's own build raises it, by its id)
            rest = None
        else:
            probe.pop("contents", None)
            rest = probe
        self._cache[key] = rest
        return rest

    def _with_scalars(self, rest: dict[str, Any], scalars: dict[str, Any]) -> dict[str, Any] | None:
        """Return `rest` with the request's sampling parameters in its `generationConfig`.

        As `_prepare_request` has them: a value given (None too) replaces the model's, None
        removes it; values are validated by `GenerationConfig` and then `GenerateContentConfig`
        (ints become floats where the field is a float), once per distinct set of values. None
        if not handled (an invalid value is refused by the reference, for the request's own id).
        """
        generation = rest.get("generationConfig")
        if type(generation) is not dict or not generation.keys() <= _GENERATION_KEYS:
            return None
        try:
            key = orjson.dumps(scalars)
        except TypeError:
            return None
        values = self._scalar_values.get(key, MISSING)
        if values is MISSING:
            values = _validated(scalars)
            if len(self._scalar_values) < MAX_CACHED_SCALARS:
                self._scalar_values[key] = values
        if values is None:
            return None
        merged = dict(generation)
        for name, value in values.items():
            if value is None:
                merged.pop(_SCALARS[name], None)
            else:
                merged[_SCALARS[name]] = value
        return {
            **rest,
            "generationConfig": {k: merged[k] for k in _GENERATION_ORDER if k in merged},
        }


def _validated(scalars: dict[str, Any]) -> dict[str, Any] | None:
    """Return the sampling values as `_prepare_request` validates them (None: refused)."""
    given = {key: value for key, value in scalars.items() if value is not None}
    try:
        dumped = types.GenerationConfig.model_validate(given).model_dump(exclude_unset=True)
        config = types.GenerateContentConfig.model_validate(dumped)
    except ValueError:
        return None
    return {key: None if value is None else getattr(config, key) for key, value in scalars.items()}


def _probe_requests() -> list[BatchRequest]:
    """Return requests covering every conversion rule the builder handles."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be terse."},
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Bonjour ?"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": [{"type": "text", "text": "Oui."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "é\u2028"}, {"type": "text", "text": ""}],
        },
    ]
    return [
        BatchRequest("probe-1", messages, {}),
        BatchRequest(
            "probe-2",
            messages[2:],
            {"stop": ["\n"], "temperature": 0.5, "max_output_tokens": 7, "top_k": 3, "seed": 1},
        ),
        BatchRequest("probe-3", messages[:1] + messages[6:], {"stop": None, "top_p": 0.5}),
        BatchRequest("probe-4", messages[2:3], {"temperature": None, "top_k": 2, "seed": None}),
        BatchRequest("probe-5", messages[2:3], {"temperature": 1, "max_output_tokens": 9}),
    ]


# --------------------------------------------------------------------------------------------
# Result parsing
# --------------------------------------------------------------------------------------------

_RESPONSE_KEYS: Final = frozenset({"candidates", "usageMetadata", "modelVersion", "responseId"})
_CANDIDATE_KEYS: Final = frozenset({"content", "finishReason", "index"})
_FINISH_REASONS: Final = frozenset({"STOP", "MAX_TOKENS"})
_USAGE_COUNTS: Final = frozenset(
    {
        "promptTokenCount",
        "candidatesTokenCount",
        "totalTokenCount",
        "thoughtsTokenCount",
        "cachedContentTokenCount",
        "toolUsePromptTokenCount",
    }
)
_USAGE_DETAILS: Final = frozenset(
    {
        "promptTokensDetails",
        "candidatesTokensDetails",
        "cacheTokensDetails",
        "toolUsePromptTokensDetails",
    }
)
_MODALITIES: Final = frozenset(m.value for m in types.MediaModality)
# What the parser assumes about the SDK models; a change sends everything to the reference.
_SHAPE_OK: Final = (
    {"candidates", "usage_metadata", "model_version", "response_id", "prompt_feedback"}
    <= set(types.GenerateContentResponse.model_fields)
    and {"content", "finish_reason", "index", "safety_ratings"} <= set(types.Candidate.model_fields)
    and {
        "prompt_token_count",
        "candidates_token_count",
        "total_token_count",
        "thoughts_token_count",
        "cached_content_token_count",
        "tool_use_prompt_token_count",
        "prompt_tokens_details",
        "candidates_tokens_details",
        "cache_tokens_details",
        "tool_use_prompt_tokens_details",
    }
    <= set(types.GenerateContentResponseUsageMetadata.model_fields)
    and tuple(types.ModalityTokenCount.model_fields) == ("modality", "token_count")
    and _FINISH_REASONS <= {m.value for m in types.FinishReason}
)
_FIELDS_SET: Final = frozenset(
    {
        "content",
        "additional_kwargs",
        "response_metadata",
        "tool_calls",
        "invalid_tool_calls",
        "usage_metadata",
        "id",
    }
)


def _details_ok(details: Any) -> bool:
    """Tell whether per-modality token details are ones the SDK reads without complaint."""
    if type(details) is not list:
        return False
    for item in details:
        if type(item) is not dict or not item.keys() <= {"modality", "tokenCount"}:
            return False
        if item.get("modality", "TEXT") not in _MODALITIES:
            return False
        count = item.get("tokenCount", 0)
        if type(count) is not int:
            return False
    return True


def _usage_metadata(usage: Any) -> dict[str, Any] | None | bool:
    """Return `_response_to_result`'s usage for `usageMetadata`; False if not handled."""
    if usage is None:
        return None
    if type(usage) is not dict:
        return False
    for key, value in usage.items():
        if key in _USAGE_COUNTS:
            if type(value) is not int:
                return False
        elif key not in _USAGE_DETAILS or not _details_ok(value):
            return False
    input_tokens = usage.get("promptTokenCount", 0) + usage.get("toolUsePromptTokenCount", 0)
    thoughts = usage.get("thoughtsTokenCount", 0)
    output_tokens = usage.get("candidatesTokenCount", 0) + thoughts
    total = usage.get("totalTokenCount", 0)
    cached = usage.get("cachedContentTokenCount", 0)
    if input_tokens + output_tokens + cached + total <= 0:
        return None
    metadata: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total,
        "input_token_details": {"cache_read": cached},
    }
    if thoughts > 0:
        metadata["output_token_details"] = {"reasoning": thoughts}
    return metadata


class GeminiMessageParser(MessageParser):
    """Parse Gemini result lines into the outcomes `GeminiLineParser` returns.

    A response is parsed into what `gemini.reference.parse_response(llm, response, key)` returns
    (realtime `ChatGoogleGenerativeAI.invoke()`).

    Attributes:
        reference: The reference `GeminiLineParser` (every fallback goes through it).
        llm: Its `ChatGoogleGenerativeAI`.
        fast_enabled: False when the construction-time self-check found a difference.
    """

    def __init__(
        self, model: str, params: Mapping[str, Any] | None = None, spec: OutputSpec | None = None
    ) -> None:
        """Build the reference parser and self-check the fast path.

        Args:
            model: The model of the job's chat model object (`Job.chat_model`).
            params: That chat model's settings (`Job.params`; `output_version` changes the
                parsed message).
            spec: The request set's tools / response schema.
        """
        self.reference = GeminiLineParser(model, params, spec)
        self.llm: ChatGoogleGenerativeAI = self.reference.llm
        self.probes = _PROBES
        self._list_content: dict[str, bool] = {}
        self.fast_enabled = _SHAPE_OK and fast_parsing_enabled(
            self, self.llm, ChatGoogleGenerativeAI
        )

    def parse_reference(self, body: dict[str, Any], message_key: str) -> AIMessage:
        """Parse through google-genai's response model and `_response_to_result`."""
        return parse_response(self.llm, body, message_key)

    def parse_line(self, raw: bytes | str, job_id: str) -> OutputLine:
        """Parse one result line into `(custom_id, message, error, retryable)`.

        Same result as `GeminiLineParser.parse_line`; responses of the handled shape are parsed
        here, every other line (errors included) by the reference.
        """
        if self.fast_enabled:
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                line = None
            if type(line) is dict and line.get("error") is None:
                key = line.get("key")
                if type(key) is str:
                    parsed = self.parse_fast(line.get("response"), f"{job_id}/{key}")
                    if parsed is not None:
                        return key, parsed, None, False
        return self.reference.parse_line(raw, job_id)

    def billed_usage(self, line: Any) -> Usage | None:
        """Return the usage billed for a decoded result line (as the reference reads it)."""
        return self.reference.billed_usage(line)

    def parse_fast(self, body: Any, message_key: str) -> AIMessage | None:
        """Parse the common response shape directly, or return None for the reference path."""
        if type(body) is not dict or not body.keys() <= _RESPONSE_KEYS:
            return None
        model_version = body.get("modelVersion")
        candidates = body.get("candidates")
        response_id = body.get("responseId")
        if (
            type(model_version) is not str
            or type(candidates) is not list
            or len(candidates) != 1
            or (response_id is not None and type(response_id) is not str)
        ):
            return None
        candidate = candidates[0]
        if type(candidate) is not dict or not candidate.keys() <= _CANDIDATE_KEYS:
            return None
        finish_reason = candidate.get("finishReason")
        index = candidate.get("index")
        content = candidate.get("content")
        if (
            finish_reason not in _FINISH_REASONS
            or (index is not None and type(index) is not int)
            or type(content) is not dict
            or content.get("role") != "model"
            or not content.keys() <= {"role", "parts"}
        ):
            return None
        parts = content.get("parts")
        if type(parts) is not list or not parts:
            return None
        texts = []
        for part in parts:
            if type(part) is not dict or len(part) != 1:
                return None
            text = part.get("text")
            if type(text) is not str:
                return None
            text = text.rstrip("\n")
            if text:
                texts.append(text)
        usage = _usage_metadata(body.get("usageMetadata"))
        if usage is False:
            return None
        list_content = self._list_content.get(model_version)
        if list_content is None:
            list_content = self._list_content[model_version] = _is_gemini_3_or_later(model_version)
        message_content: str | list[Any]
        if list_content:
            message_content = [{"type": "text", "text": text} for text in texts]
        elif not texts:
            message_content = ""
        else:
            message_content = texts[0] if len(texts) == 1 else texts
        response_metadata = {
            "finish_reason": finish_reason,
            "model_name": model_version,
            "safety_ratings": [],
            "model_provider": "google_genai",
        }
        return ai_message(
            message_content,
            {},
            response_metadata,
            message_key,
            usage if type(usage) is dict else None,
            set(_FIELDS_SET),
        )


_PROBES: Final[list[dict[str, Any]]] = [
    PROBE_RESPONSE,
    {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "A\n"}, {"text": ""}, {"text": "B"}],
                },
                "finishReason": "MAX_TOKENS",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 8,
            "candidatesTokenCount": 2,
            "totalTokenCount": 10,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
        },
        "modelVersion": "gemini-2.5-flash",
    },
    {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "C"}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": 0, "totalTokenCount": 0},
        "modelVersion": "gemini-3-flash-preview",
        "responseId": "r",
    },
]
