"""Keep API keys and URL passwords out of everything we store or print.

Keys are only ever read from the environment when an SDK client is built. Provider error texts can
still echo a key (or a masked fragment of one), so every error message that goes into graph state,
logs or CLI output passes through `redact` first. `key_problem` describes a key with a stray
character (a trailing carriage return from a Windows `.env` file), without quoting it.

URLs (a `--db` PostgreSQL URL, a `--base-url` through an authenticating proxy) may carry a
password in their user info or query: `redact_url` is the one place that masks it, for messages
and for what is stored (a job keeps its endpoint's redacted form).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

# The environment variables that may hold each provider's API key, in the order its SDK reads
# them: the first one set is used (the one place these names are written). google-genai reads
# GOOGLE_API_KEY before GEMINI_API_KEY (`_api_client.get_env_api_key`, which warns when both are
# set).
API_KEY_ENV: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "openai": ("OPENAI_API_KEY",),
        "mistral": ("MISTRAL_API_KEY",),
        "anthropic": ("ANTHROPIC_API_KEY",),
        "gemini": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    }
)
# Every key variable whose value is redacted from texts (Azure's too: the OpenAI SDK reads it).
KEY_ENV_VARS = (*(name for names in API_KEY_ENV.values() for name in names), "AZURE_OPENAI_API_KEY")
# Key-looking tokens, including masked echoes such as "sk-abc***xyz", and Google API keys
# ("AIza" and 35 more characters).
_KEY_PATTERN = re.compile(r"\b((sk|rk|pk)-[A-Za-z0-9_\-*]{6,}|AIza[0-9A-Za-z_\-]{35})")
_BEARER_PATTERN = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")
REDACTED = "[redacted]"
# What stands for a URL's password, in messages and stored endpoints.
URL_SECRET = "***"
# Query parameters that carry a secret: PostgreSQL's, and the usual ones of HTTP endpoints.
SECRET_QUERY_KEYS = frozenset(
    {"password", "passfile", "sslpassword", "api_key", "api-key", "apikey", "key", "token"}
    | {"access_token", "secret"}
)
# `scheme://user:password@` anywhere in a text (an SDK message quoting the URL it called).
_URL_PASSWORD_PATTERN = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")


def key_variable(provider: str) -> str | None:
    """Return the first of `provider`'s key variables that is set (non-empty), else None.

    The order is the SDK's own (`API_KEY_ENV`), so we and the SDK agree on which key is used.
    """
    return next((name for name in API_KEY_ENV[provider] if os.environ.get(name)), None)


def key_variables_text(provider: str) -> str:
    """Return `provider`'s key variables for a message: 'GOOGLE_API_KEY or GEMINI_API_KEY'."""
    return " or ".join(API_KEY_ENV[provider])


def redact(text: str) -> str:
    """Return `text` with API key values, key-looking tokens and bearer tokens removed."""
    for name in KEY_ENV_VARS:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, REDACTED)
    text = _KEY_PATTERN.sub(REDACTED, text)
    text = _URL_PASSWORD_PATTERN.sub(lambda m: m.group(1) + URL_SECRET + "@", text)
    return _BEARER_PATTERN.sub(lambda m: m.group(1) + REDACTED, text)


def redact_url(url: str) -> str:
    """Return `url` with its password (user info, or a secret query parameter) as `***`.

    A text that is not a URL, or a URL without secrets, comes back unchanged; one that does not
    parse comes back as its scheme and `://***`, since any part of it may be the password.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{url.partition(':')[0]}://{URL_SECRET}"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.partition(":")[0] + ":" + URL_SECRET
        netloc = f"{userinfo}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode(
                [(k, URL_SECRET if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs],
                safe="*",
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_has_secret(url: str) -> bool:
    """Tell whether `url` has a password (or a secret query parameter) that `redact_url` masks.

    True for a redacted URL too: its `***` stands for a secret that must be supplied again.
    """
    if "://" not in url:
        return False
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return True
    return parts.password is not None or any(k.lower() in SECRET_QUERY_KEYS for k, _ in query)


def scrub_url(message: str, url: str) -> str:
    """Remove every secret of `url` from `message` (a driver's error text quoting it)."""
    secrets: set[str] = set()
    try:
        parts = urlsplit(url)
        if parts.password:
            secrets.update({parts.password, unquote(parts.password)})
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() in SECRET_QUERY_KEYS and value:
                secrets.add(value)
    except ValueError:
        return "(details withheld: the URL does not parse)"
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, URL_SECRET)
    return message.replace(url, redact_url(url))


# What a character at the edge of a key most likely is, in words a user can act on.
_CHARACTER_NAMES = {
    "\r": "a carriage return (a Windows line end, as a .env file saved on Windows leaves)",
    "\n": "a newline",
    "\t": "a tab",
    " ": "a space",
}


def key_problem(name: str, value: str) -> str | None:
    """Return a sentence about a stray character in API key `value`, or None if it has none.

    Keys are printable ASCII without spaces. httpx refuses a header with a trailing carriage
    return, tab or control character (or anything non-ASCII), and the SDKs take that refusal for
    a network error and retry it for half a minute; a stray leading space is sent and refused as
    a wrong key. The sentence names the variable `name` and the problem, never the key or any
    part of it.
    """
    if all("!" <= char <= "~" for char in value):
        return None
    if not value.strip():
        problem = "holds only whitespace"
    elif value[-1] != value.rstrip()[-1]:
        problem = f"ends with {_name(value[len(value.rstrip())])}"
    elif value[0] != value.lstrip()[0]:
        problem = f"starts with {_name(value[0])}"
    else:
        odd = next(char for char in value if not "!" <= char <= "~")
        problem = f"contains {_name(odd)}"
    return f"{name} {problem}; an API key holds no such character: set it again without it"


def _name(char: str) -> str:
    if char in _CHARACTER_NAMES:
        return _CHARACTER_NAMES[char]
    if char.isspace() or not char.isprintable():
        return f"an invisible character (U+{ord(char):04X})"
    return f"a character outside printable ASCII (U+{ord(char):04X}, e.g. a typographic quote)"
