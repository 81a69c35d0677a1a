"""Which constructor settings of a provider's chat model a batch carries, and how.

Every batch body is built, and every answer parsed, by a reference chat model
(`chat_model(model, params)` in each provider module) made from the run's settings: the
context's temperature / max_tokens / top_p and its `model_settings`, which `agent.model_spec`
fills from a chat model object (`run_batch(model=llm)`), so that the reference *is* that object
for everything a request or its answer shows. A field of the chat model class is one of:

- a model setting (sampling, stop sequences, `logit_bias`, `output_version`, thinking, ...):
  carried as it is, in `model_settings`;
- of no effect on a request body or its parsed answer (HTTP client, API key, retries,
  timeouts, tracing): not carried, and refused in `model_settings` (a key must never reach the
  run context or state);
- where the requests go (`base_url`, OpenAI's organization): carried by the context fields of
  the same name, so the batch goes to the same endpoint and organization;
- what a batch cannot reproduce (response headers, streaming, HTTP headers, proxies, Anthropic
  betas): refused by name, never dropped.

`SettingRules` lists the last three per provider.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from agent.requests import InputError

_Model = TypeVar("_Model")

# `BaseChatModel` fields that only concern the caller's side: caching, tracing, rate limiting.
COMMON_NO_EFFECT: Final = frozenset(
    {
        "name",
        "cache",
        "verbose",
        "callbacks",
        "tags",
        "metadata",
        "custom_get_token_ids",
        "rate_limiter",
        "disable_streaming",
    }
)
STREAMING: Final = "a batch answer is one message, not a stream of chunks"
HEADERS: Final = "a batch request cannot carry HTTP headers"
PROXY: Final = (
    "the batch client does not use the model's proxy (set HTTPS_PROXY in the environment, "
    "which the SDKs read)"
)


def _same_url(url: str) -> str | None:
    return url


@dataclass(frozen=True)
class SettingRules:
    """The fields of one provider's chat model that are not model settings a batch carries.

    Attributes:
        no_effect: Fields that change neither a request body nor the parsed answer.
        endpoint: Fields naming where requests go, mapped to the run-context field carrying them.
        refused: Fields a batch cannot reproduce (whenever set to something truthy), and why.
        base_url: Turns the model's endpoint setting into the context's `base_url` (the provider
            SDK's base URL), or None when it cannot.
    """

    no_effect: frozenset[str]
    endpoint: Mapping[str, str]
    refused: Mapping[str, str]
    base_url: Callable[[str], str | None] = field(default=_same_url)

    def check(self, params: Mapping[str, Any]) -> None:
        """Refuse run settings that are not model settings of this chat model.

        Raises:
            InputError: A key that configures the client (an API key, a timeout), names the
                endpoint (give the context's `base_url` / `organization` instead), or is a
                setting a batch cannot reproduce.
        """
        for key, value in params.items():
            if key in ("model", "model_name"):
                problem = "is the run's model: set the context's model instead"
            elif key in self.no_effect:
                problem = "configures the client, not the requests (keys come from the environment)"
            elif key in self.endpoint:
                problem = f"names the endpoint: set the context's {self.endpoint[key]} instead"
            elif key in self.refused and value:
                problem = f"cannot be reproduced in a batch: {self.refused[key]}"
            else:
                continue
            raise InputError(f"model setting {key!r} {problem}", source="context")


def set_fields(
    obj: Any, default: Any, rules: SettingRules, skip: frozenset[str] = frozenset()
) -> Iterator[tuple[str, Any, Any]]:
    """Yield `(name, field, value)` of each field `obj` sets to other than `default`'s value.

    The one reading of a LangChain object's settings (a chat model for `agent.model_spec`, an
    embeddings object for `agent.providers.embedding_spec`): fields of no effect and `skip` are
    passed over, and a refused field set to something truthy raises.

    Raises:
        ValueError: `obj` sets a field a batch cannot reproduce (its value is not shown:
            headers and proxies may hold credentials).
    """
    for name, field_info in type(obj).model_fields.items():
        if name in skip or name in rules.no_effect:
            continue
        value = getattr(obj, name, None)
        if value == getattr(default, name, None):
            continue
        if name in rules.refused:
            if value:
                raise ValueError(
                    f"cannot batch this {type(obj).__name__}'s requests: its {name} setting "
                    f"cannot be reproduced in a batch ({rules.refused[name]})"
                )
            continue
        yield name, field_info, value


def endpoint_setting(rules: SettingRules, name: str, value: Any) -> dict[str, str]:
    """Return the context field (`base_url` / `organization`) an endpoint setting gives.

    Raises:
        ValueError: The setting names an endpoint the batch client cannot use.
    """
    if not value:
        return {}
    target = rules.endpoint[name]
    url = rules.base_url(str(value)) if target == "base_url" else str(value)
    if url is None:
        raise ValueError(
            f"the object's {name} is not an endpoint the batch client can use; pass base_url= "
            "(the provider SDK's base URL) instead"
        )
    return {target: url}


def setting_json(name: str, value: Any) -> Any:
    """Return a setting as JSON carries it (int dict keys become strings, sets sorted lists).

    Raises:
        ValueError: The value is not JSON (run context and checkpoints are JSON).
    """
    if isinstance(value, set | frozenset):
        value = sorted(value)
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise ValueError(
            f"setting {name} ({type(value).__name__}) is not JSON, so it cannot travel with a "
            "batch (run context and checkpoints are JSON)"
        ) from None


def rules_for(
    cls: Any,
    *,
    no_effect: frozenset[str],
    endpoint: Mapping[str, str],
    refused: Mapping[str, str],
    base_url: Callable[[str], str | None] = _same_url,
) -> SettingRules:
    """Return the `SettingRules` of a chat model class, with its fields' aliases too.

    A run's `model_settings` may name a field by its alias (`api_key`, `base_url`, `timeout`),
    as the constructor takes it; the rules catch both names.
    """
    fields = cls.model_fields

    def aliases(names: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(names)
        for name, value in names.items():
            alias = fields[name].alias if name in fields else None
            if alias:
                out[alias] = value
        return out

    return SettingRules(
        no_effect=frozenset(aliases(dict.fromkeys(no_effect | COMMON_NO_EFFECT))),
        endpoint=aliases(endpoint),
        refused=aliases(refused),
        base_url=base_url,
    )


def build_chat_model(
    factory: Callable[..., _Model], params: Mapping[str, Any], rules: SettingRules
) -> _Model:
    """Build a reference chat model from run settings, unset (None) ones left to its defaults.

    Raises:
        InputError: A setting is not one this model carries (`SettingRules.check`), or the chat
            model rejects its value.
    """
    rules.check(params)
    try:
        return factory(**{key: value for key, value in params.items() if value is not None})
    except ValidationError as exc:
        # Locations and messages only: the offending values could be anything.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise InputError(f"model settings: {problems}", source="context") from None
