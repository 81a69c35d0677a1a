"""The emulator's model lookup, `GET /models/{model_id}`, in each protocol's shape.

Batch-agent asks a provider whether it serves a model before planning a job for it
(`BatchProvider.model_served`; the in-process emulator is answered by `emulator_serves`
without a call). The emulator serves every model name except those containing
`NO_SUCH_MODEL` (e.g. `gpt-no-such-model`), which answer 404 in the protocol's error shape, so
tests can reach both answers without a real key.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.emulator.web import HttpError, Request, Response, Router, json_response

NO_SUCH_MODEL = "no-such-model"
# When every emulated model says it was created (2025-01-01T00:00:00Z).
_CREATED = 1735689600


def emulator_serves(model: str) -> bool:
    """Tell whether the emulator serves `model`: every name without `NO_SUCH_MODEL` in it."""
    return NO_SUCH_MODEL not in model


def add_model_routes(router: Router, protocol: str) -> None:
    """Register `GET /models/{model_id}` for `protocol` ('openai', 'mistral', 'anthropic', 'gemini')."""
    router.add("GET", "/models/{model_id}", _retrieve(protocol))


def _retrieve(protocol: str) -> Callable[[Request], Response]:
    def retrieve(request: Request) -> Response:
        model = request.params["model_id"]
        if not emulator_serves(model):
            if protocol == "gemini":
                raise HttpError(
                    404,
                    f"models/{model} is not found for API version, or is not supported.",
                    error_type="NOT_FOUND",
                )
            raise HttpError(
                404, f"The model '{model}' does not exist", code="model_not_found", param="model"
            )
        return json_response(_card(protocol, model))

    return retrieve


def _card(protocol: str, model: str) -> dict[str, object]:
    if protocol == "gemini":
        # google-genai's `models.get` reads these (types.Model); limits are Gemini 2.5's.
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model,
            "description": "Emulated model (batch-agent emulator).",
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": [
                "generateContent",
                "countTokens",
                "batchGenerateContent",
            ],
        }
    if protocol == "anthropic":
        return {
            "id": model,
            "type": "model",
            "display_name": model,
            "created_at": "2025-01-01T00:00:00Z",
        }
    card: dict[str, object] = {
        "id": model,
        "object": "model",
        "created": _CREATED,
        "owned_by": "batch-agent-emulator",
    }
    if protocol == "mistral":
        card.update(type="base", capabilities={"completion_chat": True})
    return card
