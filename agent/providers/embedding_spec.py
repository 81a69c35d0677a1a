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

from types import ModuleType
from typing import Any

from agent.providers.settings import SettingRules, endpoint_setting, set_fields, setting_json


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
    for name, field, value in set_fields(embeddings, default, rules, frozenset({"model"})):
        if field.exclude:
            continue
        if name in rules.endpoint:
            endpoint.update(endpoint_setting(rules, name, value))
        elif name not in module.CARRIED:
            raise ValueError(
                f"cannot batch this {type(embeddings).__name__}'s requests: batch-agent does "
                f"not carry its {name} setting"
            )
        else:
            params[name] = setting_json(name, value)
    # The same settings must rebuild the same object (what builds every line and vector).
    module.embeddings_model(model, params)
    return {"provider": provider, "model": model, "params": params, **endpoint}
