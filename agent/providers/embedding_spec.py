"""Describe a LangChain embeddings object as the plain JSON an embeddings batch takes.

`embeddings_spec(OpenAIEmbeddings(model="text-embedding-3-small", dimensions=256))` returns
`{"provider": "openai", "model": "text-embedding-3-small", "params": {"dimensions": 256}}`:
the provider, the model, and every setting of the object that changes a request body or its
vector, under the class's own field names (what `embedding_line_builder(model, params)` and
`vector_parser(model, params)` take). A setting is carried when it differs from the class's
default for that model (built as the batch builds its reference object, so defaults read from
the environment compare equal); the endpoint (`base_url`, OpenAI's `organization`) comes as the
context fields of those names; what only configures the client (key, retries, timeouts, HTTP
clients) is not read at all, the API key least of all; what a batch cannot reproduce (proxies,
HTTP headers, Vertex AI, Azure) is refused by name.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

from agent.providers.settings import SettingRules


def _provider_of(embeddings: Any) -> tuple[str, ModuleType]:
    """Return the provider name and reference module of an embeddings object.

    Raises:
        TypeError: It is no embeddings object of a provider batch-agent batches.
    """
    from langchain_google_genai import GoogleGenerativeAIEmbeddings
    from langchain_mistralai import MistralAIEmbeddings
    from langchain_openai import AzureOpenAIEmbeddings, OpenAIEmbeddings

    if isinstance(embeddings, AzureOpenAIEmbeddings):
        raise TypeError("AzureOpenAIEmbeddings is not batched (only OpenAI's own API)")
    if isinstance(embeddings, OpenAIEmbeddings):
        from agent.providers.openai import embeddings as openai_module

        return "openai", openai_module
    if isinstance(embeddings, MistralAIEmbeddings):
        from agent.providers.mistral import embeddings as mistral_module

        return "mistral", mistral_module
    if isinstance(embeddings, GoogleGenerativeAIEmbeddings):
        from agent.providers.gemini import embeddings as gemini_module

        return "gemini", gemini_module
    raise TypeError(
        f"{type(embeddings).__name__} is not an embeddings class batch-agent batches "
        "(OpenAIEmbeddings, MistralAIEmbeddings, GoogleGenerativeAIEmbeddings)"
    )


def _json(name: str, value: Any) -> Any:
    """Return `value` as JSON carries it (a set of special tokens becomes a sorted list)."""
    if isinstance(value, set | frozenset):
        value = sorted(value)
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise ValueError(
            f"setting {name} ({type(value).__name__}) is not JSON, so it cannot travel with a "
            "batch (run context and checkpoints are JSON)"
        ) from None


def embeddings_spec(embeddings: Any) -> dict[str, Any]:
    """Return the batch description of a LangChain embeddings object.

    Args:
        embeddings: An `OpenAIEmbeddings`, `MistralAIEmbeddings` or
            `GoogleGenerativeAIEmbeddings`.

    Returns:
        `{"provider", "model", "params"}`, plus `base_url` / `organization` when the object
        names an endpoint (they go to the run context as for chat models). `params` is plain
        JSON, the class's own field names.

    Raises:
        TypeError: The object is not of a class batch-agent batches.
        ValueError: The object has a setting a batch cannot reproduce (named, value not shown:
            headers and proxies may hold credentials), or one that is not JSON.
    """
    provider, module = _provider_of(embeddings)
    model = str(embeddings.model)
    rules: SettingRules = module.SETTING_RULES
    default = module.embeddings_model(model, {})
    params: dict[str, Any] = {}
    endpoint: dict[str, str] = {}
    for name, field in type(embeddings).model_fields.items():
        if name == "model" or name in rules.no_effect or field.exclude:
            continue
        value = getattr(embeddings, name, None)
        if value == getattr(default, name, None):
            continue
        if name in rules.refused:
            if value:
                raise ValueError(
                    f"cannot batch this {type(embeddings).__name__}'s requests: its {name} "
                    f"setting cannot be reproduced in a batch ({rules.refused[name]})"
                )
        elif name in rules.endpoint:
            target = rules.endpoint[name]
            url = rules.base_url(str(value)) if target == "base_url" else str(value)
            if url is None:
                raise ValueError(
                    f"the embeddings object's {name} is not an endpoint the batch client can "
                    "use; pass base_url= (the provider SDK's base URL) instead"
                )
            endpoint[target] = url
        elif name not in module.CARRIED:
            raise ValueError(
                f"cannot batch this {type(embeddings).__name__}'s requests: batch-agent does "
                f"not carry its {name} setting"
            )
        else:
            params[name] = _json(name, value)
    # The same settings must rebuild the same object (what builds every line and vector).
    module.embeddings_model(model, params)
    return {"provider": provider, "model": model, "params": params, **endpoint}
