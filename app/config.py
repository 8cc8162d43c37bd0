"""Bot configuration (live providers, their keys, models and endpoints), resolved once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

DEEPGRAM_API_KEY = "DEEPGRAM_API_KEY"
OPENAI_API_KEY = "OPENAI_API_KEY"
ANTHROPIC_API_KEY = "ANTHROPIC_API_KEY"
CARTESIA_API_KEY = "CARTESIA_API_KEY"
ELEVENLABS_API_KEY = "ELEVENLABS_API_KEY"
LLM_PROVIDER = "LLM_PROVIDER"
"""``openai`` (default) or ``anthropic``."""
TTS_PROVIDER = "TTS_PROVIDER"
"""``cartesia`` (default) or ``elevenlabs``."""
OPENAI_MODEL = "OPENAI_MODEL"
ANTHROPIC_MODEL = "ANTHROPIC_MODEL"
CARTESIA_VOICE_ID = "CARTESIA_VOICE_ID"
ELEVENLABS_VOICE_ID = "ELEVENLABS_VOICE_ID"
DEEPGRAM_BASE_URL = "DEEPGRAM_BASE_URL"
"""Deepgram API host, e.g. ``https://api.eu.deepgram.com`` for EU processing. Default: Deepgram's own."""
OPENAI_BASE_URL = "OPENAI_BASE_URL"
"""OpenAI-compatible API base URL (a proxy or gateway). Default: OpenAI's own."""
ANTHROPIC_BASE_URL = "ANTHROPIC_BASE_URL"
"""Anthropic API base URL (a proxy or gateway). Default: Anthropic's own."""
CARTESIA_URL = "CARTESIA_URL"
"""Cartesia TTS websocket URL. Default: ``wss://api.cartesia.ai/tts/websocket``."""
ELEVENLABS_URL = "ELEVENLABS_URL"
"""ElevenLabs websocket host, e.g. ``wss://api.eu.residency.elevenlabs.io``. Default: ``wss://api.elevenlabs.io``."""

LLMProvider = Literal["openai", "anthropic"]
TTSProvider = Literal["cartesia", "elevenlabs"]
LLM_PROVIDERS: tuple[LLMProvider, ...] = ("openai", "anthropic")
TTS_PROVIDERS: tuple[TTSProvider, ...] = ("cartesia", "elevenlabs")

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
DEFAULT_ANTHROPIC_MODEL = "claude-haiku-4-5"
DEFAULT_CARTESIA_VOICE_ID = "71a7ad14-091c-4e8e-a314-022ece01c121"  # "British Reading Lady", Pipecat's examples
DEFAULT_ELEVENLABS_VOICE_ID = "21m00Tcm4TlvDq8ikWAM"  # "Rachel", ElevenLabs' premade voice
SYSTEM_PROMPT = (
    "You are a friendly voice assistant on a phone call. Your replies are spoken aloud, "
    "so answer in one or two short sentences, without lists, markdown or emojis."
)


class BotConfigError(ValueError):
    """A bot setting has a value the bot cannot use; the message names the variable and the fix."""


@dataclass(frozen=True)
class BotSettings:
    """Providers, keys, models and endpoints of the live bot; any missing key means the bot runs offline.

    An endpoint left as None is the provider's own; the ``*_BASE_URL``/``*_URL`` variables point a
    service at a regional endpoint, a proxy, or a local stand-in.
    """

    llm_provider: LLMProvider = "openai"
    tts_provider: TTSProvider = "cartesia"
    deepgram_api_key: str | None = field(default=None, repr=False)
    openai_api_key: str | None = field(default=None, repr=False)
    anthropic_api_key: str | None = field(default=None, repr=False)
    cartesia_api_key: str | None = field(default=None, repr=False)
    elevenlabs_api_key: str | None = field(default=None, repr=False)
    openai_model: str = DEFAULT_OPENAI_MODEL
    anthropic_model: str = DEFAULT_ANTHROPIC_MODEL
    cartesia_voice_id: str = DEFAULT_CARTESIA_VOICE_ID
    elevenlabs_voice_id: str = DEFAULT_ELEVENLABS_VOICE_ID
    deepgram_base_url: str | None = None
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    cartesia_url: str | None = None
    elevenlabs_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        """Read the settings from ``env`` (default: ``os.environ``); blank values count as unset.

        Raises:
            BotConfigError: ``LLM_PROVIDER`` or ``TTS_PROVIDER`` names no supported provider.
        """
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(name, "").strip() or None

        return cls(
            llm_provider=_choice(LLM_PROVIDER, get(LLM_PROVIDER), LLM_PROVIDERS),
            tts_provider=_choice(TTS_PROVIDER, get(TTS_PROVIDER), TTS_PROVIDERS),
            deepgram_api_key=get(DEEPGRAM_API_KEY),
            openai_api_key=get(OPENAI_API_KEY),
            anthropic_api_key=get(ANTHROPIC_API_KEY),
            cartesia_api_key=get(CARTESIA_API_KEY),
            elevenlabs_api_key=get(ELEVENLABS_API_KEY),
            openai_model=get(OPENAI_MODEL) or DEFAULT_OPENAI_MODEL,
            anthropic_model=get(ANTHROPIC_MODEL) or DEFAULT_ANTHROPIC_MODEL,
            cartesia_voice_id=get(CARTESIA_VOICE_ID) or DEFAULT_CARTESIA_VOICE_ID,
            elevenlabs_voice_id=get(ELEVENLABS_VOICE_ID) or DEFAULT_ELEVENLABS_VOICE_ID,
            deepgram_base_url=get(DEEPGRAM_BASE_URL),
            openai_base_url=get(OPENAI_BASE_URL),
            anthropic_base_url=get(ANTHROPIC_BASE_URL),
            cartesia_url=get(CARTESIA_URL),
            elevenlabs_url=get(ELEVENLABS_URL),
        )

    @property
    def missing_keys(self) -> tuple[str, ...]:
        """Names of the keys the chosen providers need that are not set, in pipeline order."""
        llm = (
            (OPENAI_API_KEY, self.openai_api_key)
            if self.llm_provider == "openai"
            else (
                ANTHROPIC_API_KEY,
                self.anthropic_api_key,
            )
        )
        tts = (
            (CARTESIA_API_KEY, self.cartesia_api_key)
            if self.tts_provider == "cartesia"
            else (
                ELEVENLABS_API_KEY,
                self.elevenlabs_api_key,
            )
        )
        return tuple(name for name, value in ((DEEPGRAM_API_KEY, self.deepgram_api_key), llm, tts) if not value)


_T = TypeVar("_T", bound=str)


def _choice(name: str, value: str | None, allowed: tuple[_T, ...]) -> _T:
    if value is None:
        return allowed[0]
    for option in allowed:
        if value.casefold() == option:
            return option
    raise BotConfigError(f"{name}={value!r} is not supported. Set {name} to one of: {', '.join(allowed)}.")
