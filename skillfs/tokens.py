"""How many tokens a text is, as the learner's usage figures and the Acontext API count them.

With tiktoken's o200k encoding when tiktoken is installed and its BPE file is already in
tiktoken's cache (it would otherwise download it, blocking the event loop, and offline it
cannot), else estimated at four characters a token. Kept apart from the learner: the API
counts tokens with the learner off, and importing the learner costs a daemon's start-up.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from typing import Any

log = logging.getLogger("skillfs.tokens")

_BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def count_tokens(text: str) -> int:
    enc = encoding()
    if enc is None:
        return (len(text) + 3) // 4
    return len(enc.encode(text, disallowed_special=()))


def counted_by() -> str:
    """What count_tokens rests on: "tiktoken" or "estimate"."""
    return "tiktoken" if encoding() is not None else "estimate"


@functools.cache
def encoding() -> Any:
    # where tiktoken keeps a downloaded BPE file (its own cache rule)
    cache = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
             or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    if not os.path.exists(os.path.join(cache, hashlib.sha1(_BPE_URL.encode()).hexdigest())):
        log.info("no tiktoken BPE file in %s; estimating tokens as characters / 4", cache)
        return None
    try:
        import tiktoken
        return tiktoken.get_encoding("o200k_base")
    except (ImportError, OSError, ValueError) as e:
        log.info("tiktoken unavailable (%s); estimating tokens as characters / 4", e)
        return None
