"""The providers' realtime chat endpoints, answered by the rule their batch lines follow.

A test can run a LangChain chat model in realtime against the emulator and get the answer a batch
would have given for the same request body:

- ``POST /openai/v1/chat/completions`` (``ChatOpenAI``) answers the ``body`` of the batch output
  line (`agent.emulator.openai_routes.completion_body`), ``created`` being the call's time;
- ``POST /openai/v1/responses`` (``ChatOpenAI(use_responses_api=True)``) answers the ``Response``
  of a ``/v1/responses`` batch line (`agent.emulator.responses_answers.response_body`), the
  body read without its ``stream: false`` (a batch line has none: same body, same ids);
- ``POST /mistral/v1/chat/completions`` (``ChatMistralAI``) likewise
  (`agent.emulator.mistral_routes.completion_body`);
- ``POST /anthropic/v1/messages`` (``ChatAnthropic``) answers the ``message`` of a
  ``succeeded`` batch result (`agent.emulator.anthropic_routes.answer_message`) with
  ``usage.service_tier: "standard"``;
- ``POST /gemini/{v1,v1beta}/models/{model}:generateContent`` (``ChatGoogleGenerativeAI``)
  answers the ``response`` of the responses-file line
  (`agent.emulator.gemini_answers.render_response`), ``modelVersion`` from the path's model;
- embeddings: ``POST /openai/v1/embeddings`` (``OpenAIEmbeddings``) and ``POST
  /mistral/v1/embeddings`` (``MistralAIEmbeddings``) answer the ``body`` of the batch output
  line for the same body, ``POST /gemini/{ver}/models/{model}:batchEmbedContents``
  (``GoogleGenerativeAIEmbeddings``) the ``embedding`` of each request's responses-file line
  (`agent.emulator.embedding_answers`).

Ids come from the body digest alone (a batch line's also hash its ``custom_id`` or ``key``), so
the same body gets the same ids on every call. Auth, the ``anthropic-version`` header, the
access log and ``http_error_rate`` are the app's, as for the batch routes. A body the batch would
fail (an invalid body, ``[emulator:reject]``, ``[emulator:content_policy]``) is answered with
that error as an HTTP error in the provider's shape; a model the emulator does not serve
(`agent.emulator.model_routes.emulator_serves`) is a 404. Non-streaming only: ``stream: true``
(and Gemini's ``:streamGenerateContent``) answers 400. The knob ``realtime_429_rate=F``
(`agent.emulator.faults`) answers a call 429 with probability F, before the body is read.

The flex tier (OpenAI's body ``service_tier: "flex"``, Gemini's ``serviceTier: "flex"``) is answered like any other
but says ``service_tier: "flex"``; the knobs ``flex_429_rate=F`` (capacity refusals, 429
``resource_unavailable``) and ``flex_delay_seconds=S`` (slow answers, on the emulator's clock)
make it behave as flex does.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.emulator import (
    anthropic_routes,
    gemini_routes,
    mistral_routes,
    openai_routes,
    responses_answers,
)
from agent.emulator.answers import InvalidRequest, compute_reply
from agent.emulator.clock import Clock
from agent.emulator.embedding_answers import (
    body_texts,
    gemini_answer,
    gemini_marker_body,
    marker_body,
    mistral_answer,
    openai_answer,
)
from agent.emulator.faults import ERROR_SHAPES, Faults, marker_fault
from agent.emulator.gemini_answers import render_response, thinking_budget
from agent.emulator.model_routes import emulator_serves
from agent.emulator.web import HttpError, Request, Response, Router, json_response

# Protocol -> how it renders an error (the realtime 429 is rendered here, to carry headers).
RENDER: dict[str, Callable[[HttpError], Response]] = {
    "openai": openai_routes.render_error,
    "mistral": mistral_routes.render_error,
    "anthropic": anthropic_routes.render_error,
    "gemini": gemini_routes.render_error,
}
# The retry-after header each provider's 429 carries: OpenAI and Anthropic send one (seconds);
# Mistral sends none, and Gemini says when to retry in a RetryInfo detail, not a header.
RETRY_HEADERS: dict[str, list[tuple[str, str]]] = {
    "openai": [("retry-after", "1")],
    "mistral": [],
    "anthropic": [("retry-after", "1")],
    "gemini": [],
}
# OpenAI's flex capacity refusal (a 429 that is not billed; retry later or use another tier).
FLEX_CODE = "resource_unavailable"
FLEX_UNAVAILABLE = (
    "Resource Unavailable: flex processing has no capacity for this request right now. "
    "Please retry later, or use the default service tier."
)
# Gemini's (a RESOURCE_EXHAUSTED 429; its wording is not published).
GEMINI_FLEX_UNAVAILABLE = (
    "The flex service tier has no capacity for this request right now. Please retry later, "
    "or use the standard service tier. (emulated)"
)
STREAM_REFUSED = (
    "stream: true is not supported by the emulator: it answers realtime calls non-streaming only."
)


class RealtimeRoutes:
    """Handlers of the four realtime chat endpoints, registered on each protocol's router.

    Args:
        clock: The emulator's time source (the ``created`` of a chat completion).
    """

    def __init__(self, clock: Clock) -> None:
        """Start with no `realtime_429_rate` generator drawn yet."""
        self.clock = clock
        # One seeded generator per seed, apart from `http_error_rate`'s, so turning this knob
        # on leaves that knob's draws as they were.
        self._rng_lock = threading.Lock()
        self._rngs: dict[int, random.Random] = {}

    def register(self, router: Router, protocol: str) -> None:
        """Add `protocol`'s realtime endpoint to its router (paths inside the protocol prefix).

        Args:
            router: The protocol's router.
            protocol: ``openai``, ``mistral``, ``anthropic`` or ``gemini``.
        """
        if protocol == "openai":
            router.add("POST", "/chat/completions", self._guarded(protocol, self.openai_chat))
            router.add("POST", "/responses", self._guarded(protocol, self.openai_responses))
            router.add("POST", "/embeddings", self._guarded(protocol, self.openai_embeddings))
        elif protocol == "mistral":
            router.add("POST", "/chat/completions", self._guarded(protocol, self.mistral_chat))
            router.add("POST", "/embeddings", self._guarded(protocol, self.mistral_embeddings))
        elif protocol == "anthropic":
            router.add("POST", "/messages", self._guarded(protocol, self.anthropic_message))
        elif protocol == "gemini":
            router.add(
                "POST",
                "/models/{model}:generateContent",
                self._guarded(protocol, self.gemini_generate),
            )
            router.add("POST", "/models/{model}:streamGenerateContent", _refuse_gemini_stream)
            router.add(
                "POST",
                "/models/{model}:batchEmbedContents",
                self._guarded(protocol, self.gemini_embed),
            )
        else:
            raise ValueError(f"unknown protocol {protocol!r}")

    def _guarded(
        self, protocol: str, handler: Callable[[Request], Response]
    ) -> Callable[[Request], Response]:
        """Wrap a handler with the `realtime_429_rate` draw."""

        def guarded(request: Request) -> Response:
            if self._rate_limited(request.faults):
                _, message, error_type, code = ERROR_SHAPES[protocol]["rate_limit"]
                response = RENDER[protocol](
                    HttpError(429, message, error_type=error_type, code=code)
                )
                response.headers.extend(RETRY_HEADERS[protocol])
                return response
            return handler(request)

        return guarded

    def _rate_limited(self, faults: Faults) -> bool:
        """Draw whether `realtime_429_rate` turns this call into a 429."""
        if faults.realtime_429_rate <= 0:
            return False
        with self._rng_lock:
            rng = self._rngs.setdefault(faults.seed, random.Random(faults.seed))
            return rng.random() < faults.realtime_429_rate

    def openai_chat(self, request: Request) -> Response:
        """``POST /openai/v1/chat/completions``: the batch line's ``body`` for this body."""
        flex = self._flex(request)
        if isinstance(flex, Response):
            return flex
        response = self._chat_completion(
            "openai", request, openai_routes.request_error, openai_routes.completion_body
        )
        return _flex_tier(response) if flex else response

    def _flex(self, request: Request, protocol: str = "openai") -> bool | Response:
        """For a flex call: the capacity refusal `flex_429_rate` draws, else wait and say True.

        OpenAI asks in the body's ``service_tier``, Gemini in the request's ``serviceTier``.
        The delay is spent on the emulator's clock: a `ManualClock` is advanced (a test's
        virtual time), the wall clock slept.
        """
        try:
            tier = request.json().get("serviceTier" if protocol == "gemini" else "service_tier")
        except Exception:  # noqa: BLE001 (a bad body is the handler's 400)
            return False
        if str(tier).lower() != "flex":
            return False
        faults = request.faults
        if faults.flex_429_rate > 0:
            with self._rng_lock:
                rng = self._rngs.setdefault(faults.seed, random.Random(faults.seed))
                refused = rng.random() < faults.flex_429_rate
            if refused:
                if protocol == "gemini":
                    # UNCONFIRMED: Google documents flex's capacity 429s, not their wording.
                    error = HttpError(429, GEMINI_FLEX_UNAVAILABLE, error_type="RESOURCE_EXHAUSTED")
                else:
                    error = HttpError(429, FLEX_UNAVAILABLE, error_type="requests", code=FLEX_CODE)
                response = RENDER[protocol](error)
                response.headers.extend([("retry-after-ms", "10"), ("retry-after", "0")])
                return response
        if faults.flex_delay_seconds > 0:
            advance = getattr(self.clock, "advance", None)
            if callable(advance):
                advance(faults.flex_delay_seconds)
            else:
                time.sleep(faults.flex_delay_seconds)
        return True

    def openai_responses(self, request: Request) -> Response:
        """``POST /openai/v1/responses``: the ``/v1/responses`` batch line's ``Response``."""
        flex = self._flex(request)
        if isinstance(flex, Response):
            return flex
        response = self._openai_responses(request)
        return _flex_tier(response) if flex else response

    def _openai_responses(self, request: Request) -> Response:
        body = _chat_request(request)
        body.pop("stream", None)
        problem = responses_answers.request_error(body)
        if problem is not None:
            raise HttpError(400, problem.message, param=problem.param)
        _check_markers("openai", responses_answers.chat_view(body))
        _check_model("openai", body.get("model"))
        response, _ = responses_answers.response_body(body, int(self.clock.now()))
        return json_response(response)

    def mistral_chat(self, request: Request) -> Response:
        """``POST /mistral/v1/chat/completions``: the batch line's ``body`` for this body."""
        return self._chat_completion(
            "mistral", request, mistral_routes.body_error, mistral_routes.completion_body
        )

    def _chat_completion(
        self, provider: str, request: Request, error_of: Any, completion_of: Any
    ) -> Response:
        """Answer a chat-completions body as that protocol's batch line would (OpenAI, Mistral)."""
        body = _chat_request(request)
        problem = error_of(body)
        if problem is not None:
            raise HttpError(400, problem.message, param=problem.param)
        _check_markers(provider, body)
        _check_model(provider, body.get("model"))
        completion, _ = completion_of(body, int(self.clock.now()))
        return json_response(completion)

    def anthropic_message(self, request: Request) -> Response:
        """``POST /anthropic/v1/messages``: a ``succeeded`` batch result's message for these params."""
        params = _chat_request(request)
        problem = anthropic_routes.request_error(params)
        if problem is not None:
            raise HttpError(400, problem)
        _check_markers("anthropic", params)
        _check_model("anthropic", params.get("model"))
        # No custom_id in realtime: the id comes from the body digest alone.
        message, _ = anthropic_routes.answer_message(params, None, "standard")
        return json_response(message)

    def gemini_generate(self, request: Request) -> Response:
        """``POST /gemini/{ver}/models/{model}:generateContent``: the batch line's ``response``."""
        model = request.params["model"].removeprefix("models/")
        gemini_routes.require_served(request, model, "generateContent")
        flex = self._flex(request, "gemini")
        if isinstance(flex, Response):
            return flex
        payload = request.json()
        payload.pop("serviceTier", None)  # any tier is answered alike
        body, problem = gemini_routes.check_request(payload)
        if problem is not None:
            raise HttpError(400, problem, error_type="INVALID_ARGUMENT")
        _check_markers("gemini", body)
        reply = compute_reply(body)
        # No line key in realtime: the responseId comes from the body digest alone.
        return json_response(render_response(reply, model, None, thinking_budget(payload)))

    def openai_embeddings(self, request: Request) -> Response:
        """``POST /openai/v1/embeddings``: the batch line's ``body`` for this body."""
        return _embeddings_response("openai", request.json(), openai_answer)

    def mistral_embeddings(self, request: Request) -> Response:
        """``POST /mistral/v1/embeddings``: the batch line's ``body`` for this body."""
        return _embeddings_response(
            "mistral", request.json(), lambda body: mistral_answer(body, None)
        )

    def gemini_embed(self, request: Request) -> Response:
        """``POST /gemini/{ver}/models/{model}:batchEmbedContents``: one embedding per request."""
        model = request.params["model"].removeprefix("models/")
        gemini_routes.require_served(request, model, "embedContent")
        requests = request.json().get("requests")
        if not isinstance(requests, list) or not requests:
            raise HttpError(
                400, "* requests: requests must not be empty", error_type="INVALID_ARGUMENT"
            )
        embeddings = []
        for item in requests:
            _check_markers("gemini", gemini_marker_body(item))
            try:
                answer, _ = gemini_answer(item, model)
            except InvalidRequest as exc:
                raise HttpError(400, exc.message, error_type="INVALID_ARGUMENT") from None
            embeddings.append(answer["embedding"])
        return json_response({"embeddings": embeddings})


def _flex_tier(response: Response) -> Response:
    """Return an answer that says it was served on the flex tier (`service_tier: "flex"`)."""
    body = json.loads(b"".join(response.body))
    if isinstance(body, dict) and "service_tier" in body:
        body["service_tier"] = "flex"
        return json_response(body, status=response.status)
    return response


def _chat_request(request: Request) -> dict[str, Any]:
    """Return the JSON body of a realtime call, refusing a streaming one.

    Raises:
        HttpError: 400 for a body that is not a JSON object or asks for ``stream: true``.
    """
    body = request.json()
    if body.get("stream") is True:
        raise HttpError(400, STREAM_REFUSED, param="stream")
    return body


def _refuse_gemini_stream(request: Request) -> Response:
    """``POST ...:streamGenerateContent``: Gemini's streaming call, which the emulator lacks."""
    raise HttpError(
        400,
        "streamGenerateContent is not supported by the emulator: it answers realtime calls "
        "non-streaming only (use generateContent).",
        error_type="INVALID_ARGUMENT",
    )


def _check_markers(protocol: str, body: dict[str, Any]) -> None:
    """Fail the call as the batch fails the request when a prompt marker asks for it.

    Raises:
        HttpError: 400 for ``[emulator:reject]`` / ``[emulator:content_policy]``.
    """
    kind = marker_fault(body)
    if kind is not None:
        status, message, error_type, code = ERROR_SHAPES[protocol][kind]
        raise HttpError(status, message, error_type=error_type, code=code)


def _check_model(protocol: str, model: Any) -> None:
    """Answer 404 for a model the emulator does not serve, as the provider does for a typo.

    Raises:
        HttpError: 404 ``model_not_found`` (``not_found_error`` for Anthropic).
    """
    if isinstance(model, str) and not emulator_serves(model):
        raise HttpError(
            404,
            f"The model '{model}' does not exist",
            error_type="not_found_error" if protocol == "anthropic" else "invalid_request_error",
            code="model_not_found",
            param="model",
        )


def _embeddings_response(
    protocol: str, body: Any, answer: Callable[[Any], tuple[dict[str, Any], int]]
) -> Response:
    """Answer a realtime ``/embeddings`` call of `protocol` as its batch line is answered."""
    _check_model(protocol, body.get("model"))
    _check_markers(protocol, marker_body(body_texts(body)))
    try:
        vectors, _ = answer(body)
    except InvalidRequest as exc:
        raise HttpError(400, exc.message, param=exc.param) from None
    return json_response(vectors)
