"""Tools and structured output of a request set: bound the LangChain way, answers checked.

A request set may carry tool definitions and/or a JSON schema for the answer (graph input
`tools`, `tool_choice`, `response_schema`, `schema_method`, `strict`; CLI `--tools`/`--schema`).
They apply to every request of the set, so they are part of its fingerprint and its job keys.

Bodies: the chat model is wrapped exactly as a realtime caller would wrap it
(`llm.bind_tools(tools, ...)` or `llm.with_structured_output(schema, ...)`), and the keyword
arguments that wrapper hands the model on `.invoke()` are what the provider's body builder passes
to `_get_request_payload` / `_create_message_dicts`. So a batch body equals the realtime body by
construction, whatever the installed LangChain version does with tools and schemas.

Answers: `AnswerCheck` runs the output parser `with_structured_output` itself chains after the
model (`JsonOutputParser`, `JsonOutputKeyToolsParser`, OpenAI's refusal check), so `parsed` is what
realtime `.invoke()` returns for that answer (partial JSON and None included). An answer the
parser rejects fails that request with the parser's exception (code `refusal` for a refusal, else
`output_parsing`), never the batch. Validating the parsed object against the JSON schema
(`jsonschema`, code `schema`) is an option (`validate_schema`), off by default: realtime does not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import langchain_core.exceptions as langchain_exceptions
import orjson
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import Runnable, RunnableBinding, RunnableParallel, RunnableSequence
from langchain_core.utils.function_calling import convert_to_openai_tool

from agent.error_text import exception_text
from agent.requests import InputError
from agent.state import RequestError

SCHEMA_METHODS: Final = ("json_schema", "function_calling", "json_mode")
# The graph-input / state keys of a spec, in the order they are documented.
SPEC_KEYS: Final = ("tools", "tool_choice", "response_schema", "schema_method", "strict")
# LangChain's tracing hint: `BaseChatModel.generate` pops it, it never reaches the provider.
_TRACING_KWARGS: Final = ("ls_structured_output_format", "structured_output_format")
# Error codes of answers the output parser rejects (`answer_error`).
REFUSAL: Final = "refusal"
OUTPUT_PARSING: Final = "output_parsing"
PARSER_CODES: Final = frozenset({REFUSAL, OUTPUT_PARSING})
SCHEMA: Final = "schema"
# Codes of answers that were produced but rejected by the check above the model (the parser, or
# the schema): a batched call hands such a message back, and realtime's own parser decides.
CHECKED_CODES: Final = PARSER_CODES | {SCHEMA}
# What the parsers raise for a refusal (`ModelRefusalError`, langchain-core 1.7.5 and later;
# older versions raise none, and a refusal there is an `output_parsing` error).
_REFUSAL_ERRORS: Final[tuple[type[BaseException], ...]] = tuple(
    error
    for error in (getattr(langchain_exceptions, "ModelRefusalError", None),)
    if isinstance(error, type) and issubclass(error, BaseException)
)


@dataclass(frozen=True)
class OutputSpec:
    """Tools and/or an answer schema for every request of a request set.

    Attributes:
        tools: Tool definitions, in any dict form `bind_tools` takes (OpenAI function tools
            `{"type": "function", "function": {...}}`, `{"name", "description", "parameters"}`,
            or a JSON schema with a top-level `title`).
        tool_choice: `bind_tools`' `tool_choice` (a tool name, "auto", "any"/"required", "none").
        response_schema: The answer's JSON schema (with a top-level `title`, the name the model
            sees), an OpenAI function schema `{"name", "description", "parameters"}`, or an
            OpenAI structured-output schema `{"name", "description", "schema", "strict"}`.
        schema_method: `with_structured_output`'s `method`; None uses the provider's default
            (OpenAI: "json_schema", Mistral: "function_calling").
        strict: `strict` for `bind_tools` / `with_structured_output` (OpenAI); None omits it.
    """

    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | bool | None = None
    response_schema: dict[str, Any] | None = None
    schema_method: str | None = None
    strict: bool | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, source: str = "input") -> OutputSpec | None:
        """Read and check a spec from graph input / state values (None when there is none).

        Args:
            values: A mapping with some of `SPEC_KEYS`.
            source: Named in errors (`input`, or the file a value came from).

        Raises:
            InputError: A value has the wrong shape, or options are given without tools or a
                schema.
        """
        tools = values.get("tools")
        schema = values.get("response_schema")
        tool_choice = values.get("tool_choice")
        method = values.get("schema_method")
        strict = values.get("strict")
        if tools is not None:
            if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
                raise InputError("'tools' must be a JSON list of tool objects", source=source)
            tools = tools or None
        if schema is not None and (not isinstance(schema, dict) or not schema):
            raise InputError("'response_schema' must be a non-empty JSON object", source=source)
        if tool_choice is not None and not isinstance(tool_choice, str | dict | bool):
            raise InputError("'tool_choice' must be a string or an object", source=source)
        if method is not None and method not in SCHEMA_METHODS:
            raise InputError(
                f"'schema_method' must be one of {', '.join(SCHEMA_METHODS)}, got {method!r}",
                source=source,
            )
        if strict is not None and not isinstance(strict, bool):
            raise InputError("'strict' must be true or false", source=source)
        if tools is None and schema is None:
            given = [k for k in ("tool_choice", "schema_method", "strict") if values.get(k)]
            if given:
                raise InputError(
                    f"{', '.join(given)} given without 'tools' or 'response_schema'", source=source
                )
            return None
        for index, tool in enumerate(tools or []):
            _check_tool(index, tool, source)
        if schema is not None:
            _check_schema(schema, source)
        return cls(tools, tool_choice, schema, method, strict)

    @classmethod
    def from_state(cls, stored: Mapping[str, Any] | None) -> OutputSpec | None:
        """Rebuild the spec `to_state` stored (None when the request set has none)."""
        return cls(**{k: stored.get(k) for k in SPEC_KEYS}) if stored else None

    def to_state(self) -> dict[str, Any]:
        """Return the spec as a JSON object holding only the keys that are set."""
        return {k: getattr(self, k) for k in SPEC_KEYS if getattr(self, k) is not None}

    def digest_bytes(self) -> bytes:
        """Return canonical bytes of the spec, fed into the request-set fingerprint."""
        return b"output-spec:" + orjson.dumps(self.to_state(), option=orjson.OPT_SORT_KEYS)


def spec_fingerprint(spec: OutputSpec | None) -> str:
    """Return a short fingerprint of a spec ('' for none), to compare re-sent input."""
    return hashlib.sha256(spec.digest_bytes()).hexdigest()[:16] if spec else ""


def bound_runnable(llm: BaseChatModel, spec: OutputSpec) -> Runnable[Any, Any]:
    """Wrap `llm` the way a realtime caller with this spec would.

    Tools alone: `llm.bind_tools(tools, tool_choice=..., strict=...)`. A schema:
    `llm.with_structured_output(schema, method=..., strict=...)`, with `tools=` too when both
    are given (OpenAI; the model answers with a tool call or the structured answer).

    Raises:
        InputError: The model refuses the spec (LangChain's own message).
    """
    try:
        if spec.response_schema is not None:
            options: dict[str, Any] = {}
            if spec.schema_method is not None:
                options["method"] = spec.schema_method
            if spec.strict is not None:
                options["strict"] = spec.strict
            if spec.tools:
                options["tools"] = spec.tools
                options["include_raw"] = True
            if spec.tool_choice is not None:
                options["tool_choice"] = spec.tool_choice
            return llm.with_structured_output(spec.response_schema, **options)
        options = {}
        if spec.tool_choice is not None:
            options["tool_choice"] = spec.tool_choice
        if spec.strict is not None:
            options["strict"] = spec.strict
        return llm.bind_tools(spec.tools or [], **options)
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise InputError(
            f"{type(llm).__name__} cannot take these tools/response_schema: {_one_line(exc)}",
            source="input",
        ) from None


def bind_kwargs(llm: BaseChatModel, spec: OutputSpec | None) -> dict[str, Any]:
    """Return the keyword arguments the wrapped model passes to `llm` on every call.

    These are what realtime `.invoke()` hands to `_generate` (and so to the request payload),
    minus LangChain's tracing hint. Empty for no spec.
    """
    if spec is None:
        return {}
    binding = _model_binding(bound_runnable(llm, spec), llm)
    return {k: v for k, v in binding.kwargs.items() if k not in _TRACING_KWARGS}


def _model_binding(runnable: Runnable[Any, Any], llm: BaseChatModel) -> RunnableBinding[Any, Any]:
    """Find the `RunnableBinding` of `llm` inside a `bind_tools`/`with_structured_output` chain."""
    if isinstance(runnable, RunnableBinding) and runnable.bound is llm:
        return runnable
    if isinstance(runnable, RunnableSequence):
        return _model_binding(runnable.first, llm)
    if isinstance(runnable, RunnableParallel):
        for step in runnable.steps__.values():
            try:
                return _model_binding(step, llm)
            except LookupError:
                continue
    raise LookupError(f"no binding of the chat model in {type(runnable).__name__}")


class AnswerCheck:
    """Parse structured answers the way `with_structured_output` would (and validate, if asked).

    Build one per job (provider chat model + spec); `check` each request's message.
    """

    def __init__(self, llm: BaseChatModel, spec: OutputSpec, *, validate: bool = False) -> None:
        """Build the output parser and, with `validate`, the JSON-schema validator for `spec`.

        Args:
            llm: The job's chat model (same class and model as the bodies were built with).
            spec: The request set's spec; without a `response_schema` nothing is checked.
            validate: Also hold each parsed answer to the JSON schema (`jsonschema`); realtime
                `.invoke()` does not, so this is off unless the run asks (`validate_schema`).
        """
        self.enabled = spec.response_schema is not None
        self.tools_bound = bool(spec.tools)
        self._parser: Runnable[Any, Any] | None = None
        self._validator: Any = None
        self._name = ""
        if spec.response_schema is None:
            return
        # The parser is chained after the model regardless of tools; build it without them
        # (OpenAI only accepts `tools` together with `include_raw=True`).
        plain = OutputSpec(
            response_schema=spec.response_schema,
            schema_method=spec.schema_method,
            strict=spec.strict,
        )
        chain = bound_runnable(llm, plain)
        if not isinstance(chain, RunnableSequence):
            raise TypeError(f"unexpected structured-output chain {type(chain).__name__}")
        self._parser = RunnableSequence(*chain.steps[1:]) if len(chain.steps) > 2 else chain.last
        self._function_calling = (spec.schema_method or _default_method(llm)) == "function_calling"
        if not validate:
            return
        function = schema_function(spec.response_schema, spec.strict)
        self._name = str(function.get("name", ""))
        from jsonschema import Draft202012Validator
        from jsonschema.validators import validator_for

        # The schema as sent (strict adds `additionalProperties: false`); `json_mode` sends none,
        # but the answer is still held to it.
        schema = function.get("parameters") or {}
        self._validator = validator_for(schema, default=Draft202012Validator)(schema)

    def _parse(self, message: AIMessage) -> Any:
        """Run the output parser on one answer, as the chain's `parser.invoke(message)` does.

        A plain output parser is called directly (`parse_result`, what its `invoke` runs): the
        same result without a callback run per answer (no tracing of every batch answer).
        """
        parser = self._parser
        if isinstance(parser, BaseOutputParser):
            return parser.parse_result([ChatGeneration(message=message)])
        assert parser is not None
        return parser.invoke(message)

    def check(self, message: AIMessage, request_id: str) -> tuple[Any, RequestError | None]:
        """Return `(parsed answer, None)`, or `(parsed or None, error)` for a rejected answer.

        `parsed` is what the runnable's `.invoke()` returns for this answer (None included).
        Where `.invoke()` would raise, the error is `answer_error` of that exception; with
        validation on, a parsed answer that breaks the schema (or None) is code `schema`.
        An answer that is a call of one of the bound tools (not the schema's) is not a
        structured answer: it is returned as `(None, None)`, its calls are in `tool_calls`.
        """
        if self._parser is None:
            return None, None
        if self.tools_bound and message.tool_calls and not self._function_calling:
            return None, None
        try:
            parsed = self._parse(message)
        except Exception as exc:  # noqa: BLE001 (whatever the parser raises, realtime raises)
            return None, answer_error(exc)
        try:
            orjson.dumps(parsed, default=str)
        except TypeError as exc:
            # Results are stored as JSON, which cannot hold (say) an integer beyond 64 bits.
            problem = f"the parsed answer cannot be stored as JSON: {exc}"
            return None, RequestError(code=OUTPUT_PARSING, message=problem)
        if self._validator is None:
            return parsed, None
        where = f" (request id {request_id!r})"
        if parsed is None:
            problem = f"schema: the answer has no '{self._name}' tool call{where}"
            return None, RequestError(code=SCHEMA, message=problem)
        from jsonschema.exceptions import best_match

        error = best_match(self._validator.iter_errors(parsed))
        if error is not None:
            path = "/".join(str(p) for p in error.absolute_path) or "(root)"
            problem = f"schema: the answer does not match the schema at {path}: {error.message}"
            return parsed, RequestError(code=SCHEMA, message=problem + where)
        return parsed, None


def answer_error(exc: BaseException) -> RequestError:
    """Return the error of an answer whose output parser raised `exc` (what realtime raises).

    Code `refusal` for a refusal (`ModelRefusalError`, e.g. OpenAI's `OpenAIRefusalError`), else
    `output_parsing`; the message is `"ExceptionType: text"`.
    """
    code = REFUSAL if isinstance(exc, _REFUSAL_ERRORS) else OUTPUT_PARSING
    return RequestError(code=code, message=exception_text(exc))


def _default_method(llm: BaseChatModel) -> str:
    """Return the `method` default of `llm.with_structured_output`."""
    import inspect

    default = inspect.signature(llm.with_structured_output).parameters.get("method")
    return str(default.default) if default is not None else "function_calling"


def schema_function(schema: dict[str, Any], strict: bool | None = None) -> dict[str, Any]:
    """Return `{"name", "parameters", ...}` of a response schema in any accepted form.

    The forms: a JSON schema with a top-level `title`, an OpenAI function schema
    `{"name", "description", "parameters"}`, or an OpenAI structured-output schema
    `{"name", "description", "schema", "strict"}`, which `with_structured_output` sends as the
    response format unchanged (it is what `agent.model_spec` records, e.g. for a Pydantic class).
    """
    if "name" in schema and isinstance(schema.get("schema"), dict) and "parameters" not in schema:
        return {"name": schema["name"], "parameters": schema["schema"]}
    return dict(convert_to_openai_tool(schema, strict=strict)["function"])


def _one_line(exc: BaseException) -> str:
    """Return an exception's message on one line, bounded (LangChain's embed whole schemas)."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _check_tool(index: int, tool: dict[str, Any], source: str) -> None:
    """Refuse a tool definition `bind_tools` could not convert, naming its position."""
    try:
        converted = convert_to_openai_tool(tool)
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"tool {index} is neither an OpenAI function tool nor a JSON schema with a top-level 'title'",
            source=source,
        ) from None
    function = converted.get("function")
    if converted.get("type") == "function" and not (
        isinstance(function, dict) and isinstance(function.get("name"), str)
    ):
        raise InputError(f"tool {index} has no function name", source=source)


def _check_schema(schema: dict[str, Any], source: str) -> None:
    """Refuse a response schema LangChain cannot name or that is not a valid JSON schema."""
    # Imported here: only request sets with a schema pay for loading jsonschema.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        function = schema_function(schema)
    except (ValueError, KeyError, TypeError):
        raise InputError(
            "'response_schema' is neither a JSON schema with a top-level 'title' (the answer's name) nor an OpenAI function schema",
            source=source,
        ) from None
    if not function.get("name"):
        raise InputError(
            "'response_schema' needs a top-level 'title' (the name the model sees, e.g. \"Ticket\")",
            source=source,
        )
    # A plain JSON schema is checked whole (LangChain drops what it cannot convert).
    as_given = "name" not in schema and "parameters" not in function
    checked = schema if as_given else function.get("parameters") or {}
    try:
        validator_for(checked, default=Draft202012Validator).check_schema(checked)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InputError(
            f"'response_schema' is not a valid JSON schema at {path}: {exc.message}", source=source
        ) from None
    if "parameters" not in function:
        raise InputError(
            '\'response_schema\' must describe a JSON object ("type": "object" with "properties")',
            source=source,
        )


class ChatModelSource(Protocol):
    """What builds a job's reference chat model: a batch provider (`BatchProvider.chat_model`)."""

    def chat_model(self, model: str, params: dict[str, Any]) -> BaseChatModel:
        """Return the chat model whose realtime calls the job's lines reproduce."""
        ...


def answer_check(
    provider: ChatModelSource, model: str, spec: OutputSpec | None, *, validate: bool = False
) -> AnswerCheck | None:
    """Return the answer check of one job (None when the request set has no tools or schema)."""
    if spec is None:
        return None
    return AnswerCheck(provider.chat_model(model, {}), spec, validate=validate)


def checked_result(
    result: dict[str, Any], message: AIMessage, check: AnswerCheck | None, request_id: str
) -> dict[str, Any]:
    """Add `tool_calls` and `parsed` to a result with a message; a rejected answer fails it.

    A failed check keeps the message, content and usage (the answer was produced and billed)
    and is not retried: the same prompt would get the same answer. A result that already
    failed (the answer could not be used at all) gets `tool_calls` and a null `parsed` only.
    """
    if check is None:
        return result
    result["tool_calls"] = [dict(call) for call in message.tool_calls]
    if check.enabled:
        if result["status"] != "succeeded":
            result["parsed"] = None
            return result
        parsed, error = check.check(message, request_id)
        result["parsed"] = parsed
        if error is not None:
            result["status"] = "failed"
            result["error"] = dict(error)
    return result


def spec_from_files(
    tools_path: Path | None,
    schema_path: Path | None,
    **options: Any,
) -> OutputSpec | None:
    """Read `--tools` / `--schema` JSON files into a checked spec (CLI), before any upload.

    Args:
        tools_path: A JSON list of tool definitions (or one tool object).
        schema_path: A JSON object: the answer's schema.
        **options: `tool_choice`, `schema_method`, `strict` (None: not given).

    Raises:
        InputError: A file is missing, unreadable or not JSON of the right shape; the message
            starts with the file's path.
    """
    values: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if tools_path is not None:
        tools = _read_json(tools_path)
        if isinstance(tools, dict):
            # `{"tools": [...]}` (an API request's field) or a single tool.
            tools = tools["tools"] if isinstance(tools.get("tools"), list) else [tools]
        values["tools"] = tools
    if schema_path is not None:
        values["response_schema"] = _read_json(schema_path)
    try:
        return OutputSpec.from_values(values, source="options")
    except InputError as exc:
        problem = str(exc).removeprefix("options: ")
        # Name the file the bad value came from.
        if "response_schema" in problem and schema_path is not None:
            raise InputError(problem, source=str(schema_path)) from None
        if ("'tools'" in problem or problem.startswith("tool ")) and tools_path is not None:
            raise InputError(problem, source=str(tools_path)) from None
        raise


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading byte order mark is fine
    except FileNotFoundError:
        raise InputError("file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the file: {exc}", source=str(path)) from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", source=str(path)
        ) from None
