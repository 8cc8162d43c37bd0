"""Langfuse usage of Pipecat's LLM usage reports: disjoint buckets, so no token is counted twice.

Langfuse adds up the usage keys it is sent, and prices each key on its own. Pipecat's
``LLMTokenUsage`` is gross and nested (the prompt includes the cache; a realtime model's prompt
includes its audio, which includes the cached audio), so each report is split once here.
"""

from __future__ import annotations

from pipecat.metrics.metrics import LLMTokenUsage

from pipecat_langfuse import pricing
from pipecat_langfuse.pricing import ModelPrice


def add_usage(a: LLMTokenUsage, b: LLMTokenUsage) -> LLMTokenUsage:
    """Two reports of one call as one: every count summed, those neither report left unset.

    All of Pipecat's fields, so none is lost (audio and cached-audio tokens too, whichever of them
    the installed Pipecat has).
    """
    summed: dict[str, int | None] = {}
    for name in type(a).model_fields:
        x, y = getattr(a, name), getattr(b, name, None)
        if isinstance(x, int | None) and isinstance(y, int | None):
            summed[name] = None if x is None and y is None else (x or 0) + (y or 0)
    return LLMTokenUsage.model_validate(summed)


def llm_usage_details(usage: LLMTokenUsage) -> dict[str, int]:
    """Langfuse usage of one LLM report, the same for services that count the cache net or gross.

    ``total_tokens`` is gross of the prompt cache for every Pipecat service, so the
    uncached input is ``total - completion - cache_read - cache_creation``.
    """
    cache_read = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    gross_input = usage.total_tokens - usage.completion_tokens
    if gross_input < usage.prompt_tokens:  # a service that left total_tokens out
        gross_input = usage.prompt_tokens
    reasoning = min(usage.reasoning_tokens or 0, max(0, usage.completion_tokens))
    details = {
        pricing.USAGE_INPUT: max(0, gross_input - cache_read - cache_write),
        pricing.USAGE_OUTPUT: max(0, usage.completion_tokens) - reasoning,
    }
    if cache_read:
        details[pricing.USAGE_INPUT_CACHED_TOKENS] = cache_read
    if cache_write:
        details[pricing.USAGE_INPUT_CACHE_CREATION_TOKENS] = cache_write
    if reasoning:
        details[pricing.USAGE_OUTPUT_REASONING_TOKENS] = reasoning
    details[pricing.USAGE_TOTAL] = max(0, gross_input + usage.completion_tokens)
    return details


AUDIO_USAGE_FIELDS = ("input_audio_tokens", "output_audio_tokens", "cache_read_input_audio_tokens")
"""``LLMTokenUsage`` fields only a speech-to-speech model reports (absent on older Pipecat)."""


def s2s_usage_details(usage: LLMTokenUsage, scheme: str = "openai") -> dict[str, int]:
    """Langfuse usage of a speech-to-speech response: disjoint buckets that add up to what is billed.

    Pipecat's counts are gross and nested (OpenAI Realtime, Gemini Live): ``prompt_tokens`` holds
    text and audio, cached included; ``input_audio_tokens`` holds the cached audio;
    ``cache_read_input_tokens`` holds all cached tokens; ``completion_tokens`` holds the audio out.
    Each is split once, so no token is priced twice. Text, audio, in and out are always sent;
    the cached buckets when there are any. ``scheme`` names the keys (:data:`pricing.S2S_USAGE_KEYS`).
    """
    keys = pricing.S2S_USAGE_KEYS[scheme]
    prompt, completion = max(0, usage.prompt_tokens), max(0, usage.completion_tokens)
    audio_in = getattr(usage, "input_audio_tokens", None) or 0
    cached = usage.cache_read_input_tokens or 0
    cached_audio = min(getattr(usage, "cache_read_input_audio_tokens", None) or 0, cached, audio_in)
    buckets = {
        "input_text": max(0, prompt - audio_in - (cached - cached_audio)),
        "input_cached_text": cached - cached_audio,
        "input_audio": audio_in - cached_audio,
        "input_cached_audio": cached_audio,
        "output_text": completion - min(getattr(usage, "output_audio_tokens", None) or 0, completion),
        "output_audio": min(getattr(usage, "output_audio_tokens", None) or 0, completion),
    }
    details = {
        keys[b]: n for b, n in buckets.items() if n or b in ("input_text", "input_audio", "output_text", "output_audio")
    }
    details[pricing.USAGE_TOTAL] = sum(buckets.values())
    return details


def s2s_scheme(model: str, price: ModelPrice | None) -> str:
    """The usage-key scheme of a speech-to-speech model: its price entry's, else Gemini's for Gemini models."""
    if price is not None:
        for scheme, keys in pricing.S2S_USAGE_KEYS.items():
            if set(keys.values()) & set(price.unit_prices):
                return scheme
    return "gemini" if "gemini" in model.casefold() else "openai"
