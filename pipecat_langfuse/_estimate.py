"""Token counts of work a provider billed but never reported.

A streamed LLM response cut by a barge-in never gets its usage chunk, yet the provider bills the
prompt and the tokens it generated before the cancel. Token-billed speech models (e.g.
``gpt-4o-transcribe``, ``gpt-4o-mini-tts``) bill text tokens Pipecat does not report either.
Such usage is counted here, and the generation says so (``usage_estimated`` in its metadata).

The counts use OpenAI's BPE encodings from ``bpe-openai`` (the ``tokenizer`` extra: bundled, so
nothing is downloaded at run time): the model's own encoding for OpenAI models, ``o200k_base`` as
an approximation for others. Without it, a text counts one token per 4 characters. Chat prompts
are counted as OpenAI documents it: 3 tokens per message, plus its values, plus 3 for the reply;
tool definitions are not counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from loguru import logger

TOKENS_PER_MESSAGE = 3
"""Tokens OpenAI adds around each chat message."""
TOKENS_PER_NAME = 1
"""Tokens OpenAI adds for a message's ``name``."""
REPLY_PRIMING_TOKENS = 3
"""Tokens OpenAI adds to prime the assistant's reply."""
CHARACTERS_PER_TOKEN = 4
"""The fallback without a tokenizer: one token per this many characters (rounded up)."""

FALLBACK_METHOD = "characters/4"
"""The ``usage_estimate_method`` of counts made without a tokenizer."""

_DEFAULT_ENCODING = "o200k_base"
# OpenAI model families by name prefix, for the names (dated snapshots, newer models) the
# tokenizer's own map does not know; the first match wins.
_OPENAI_ENCODINGS = (
    (
        ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-realtime", "gpt-oss", "o1", "o3", "o4", "chatgpt-4o"),
        "o200k_base",
    ),
    (("gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada"), "cl100k_base"),
)


@dataclass(frozen=True)
class Counter:
    """Counts tokens of one model's texts.

    Attributes:
        method: How: the encoding's name (``"o200k_base"``, ``"o200k_base (approximation)"`` for a
            model of another vendor) or :data:`FALLBACK_METHOD`.
        count: Tokens of one text.
    """

    method: str
    count: Callable[[str], int]

    def chat_prompt(self, messages: Iterable[Any]) -> int:
        """Tokens of a chat prompt, counted like OpenAI's chat format."""
        total = REPLY_PRIMING_TOKENS
        for message in messages:
            total += TOKENS_PER_MESSAGE
            fields = message if isinstance(message, dict) else {"content": getattr(message, "message", message)}
            for key, value in fields.items():
                total += self.count(_text_of(value))
                if key == "name":
                    total += TOKENS_PER_NAME
        return total


def counter_for(model: str) -> Counter:
    """The token counter of ``model`` (cached per model)."""
    return _counter_for(model.strip().casefold().removeprefix("simulated/"))


@lru_cache(maxsize=64)
def _counter_for(model: str) -> Counter:
    try:
        import bpe_openai  # type: ignore[import-untyped]  # ships no type information
    except ImportError:
        _log_fallback_once()
        return Counter(FALLBACK_METHOD, _characters_over_four)
    encoding_name = _openai_encoding(model.rpartition("/")[2], bpe_openai.encoding_name_for_model)
    method = encoding_name or f"{_DEFAULT_ENCODING} (approximation)"
    encoding = bpe_openai.get_encoding(encoding_name or _DEFAULT_ENCODING)
    # Special-token text in a prompt ("<|endoftext|>") is billed as ordinary text.
    return Counter(method, lambda text: len(encoding.encode(text, disallowed_special=())) if text else 0)


def _openai_encoding(name: str, lookup: Callable[[str], str]) -> str | None:
    """The encoding of an OpenAI model, or None for a model of another vendor."""
    try:
        return lookup(name)
    except KeyError:
        pass
    return next((encoding for prefixes, encoding in _OPENAI_ENCODINGS if name.startswith(prefixes)), None)


@lru_cache(maxsize=1)
def _log_fallback_once() -> None:
    logger.info(
        "pipecat-langfuse: no tokenizer installed; usage a provider did not report is estimated at "
        f"{CHARACTERS_PER_TOKEN} characters per token. Install pipecat-langfuse[tokenizer] for token counts."
    )


def _characters_over_four(text: str) -> int:
    return math.ceil(len(text) / CHARACTERS_PER_TOKEN)


def _text_of(value: Any) -> str:
    """The text a message value stands for: a string, the text parts of a content list, else JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        texts = [part.get("text") for part in value]
        if all(isinstance(text, str) for text in texts):
            return "".join(str(text) for text in texts)
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
