"""tiktoken's vocabularies without a download: written into tiktoken's own cache from quicktok.

`OpenAIEmbeddings` splits a text into token chunks with `tiktoken.encoding_for_model`, which
downloads the vocabulary file on first use. The `quicktok` package ships the `cl100k_base` and
`o200k_base` vocabularies byte-identical to tiktoken's (`agent.estimate` counts with them), so
the file tiktoken would download is written, once, where tiktoken's `read_file_cached` looks
for it (`TIKTOKEN_CACHE_DIR`, `DATA_GYM_CACHE_DIR`, else `<tmp>/data-gym-cache`). tiktoken
checks the file's SHA-256 against the one it expects, so a wrong file is never used.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import threading
import uuid
from typing import Final

import tiktoken
import tiktoken.model

# The vocabularies quicktok ships, and the URL tiktoken downloads each from (its cache key).
_URLS: Final = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
# How many ranks each file has (its mergeable tokens; the special tokens come after).
_RANKS: Final = {"cl100k_base": 100_256, "o200k_base": 199_998}
_done: set[str] = set()
_lock = threading.Lock()


def encoding_name(model: str) -> str:
    """Return the encoding `OpenAIEmbeddings` tokenizes `model` with (cl100k_base if unknown)."""
    try:
        return tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return "cl100k_base"


def _cache_dir() -> str:
    """Return the directory tiktoken's `read_file_cached` caches downloads in ('' for none)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _vocabulary(name: str) -> bytes:
    """Return the `.tiktoken` file of `name` (base64 token bytes and rank, one a line)."""
    import quicktok

    encoding = quicktok.get_encoding(name)
    return b"".join(
        base64.b64encode(encoding.decode_single_token_bytes(rank)) + b" %d\n" % rank
        for rank in range(_RANKS[name])
    )


def ensure_offline(model: str) -> None:
    """Make `tiktoken.encoding_for_model(model)` work without a download, where quicktok can.

    Does nothing for an encoding quicktok does not ship, when tiktoken's cache is disabled,
    or once the file is cached; a cache that cannot be written is left to tiktoken.
    """
    name = encoding_name(model)
    url = _URLS.get(name)
    if url is None or name in _done:
        return
    with _lock:
        cache_dir = _cache_dir()
        if not cache_dir:
            return
        path = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
        if not os.path.exists(path):
            try:
                os.makedirs(cache_dir, exist_ok=True)
                temporary = f"{path}.{uuid.uuid4()}.tmp"
                with open(temporary, "wb") as fh:
                    fh.write(_vocabulary(name))
                os.replace(temporary, path)
            except OSError:
                return
        _done.add(name)


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """Return the tiktoken encoding `OpenAIEmbeddings` uses for `model`, offline where possible."""
    ensure_offline(model)
    return tiktoken.get_encoding(encoding_name(model))
