"""Bot configuration (live provider keys and models), resolved once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEEPGRAM_API_KEY = "DEEPGRAM_API_KEY"
OPENAI_API_KEY = "OPENAI_API_KEY"
CARTESIA_API_KEY = "CARTESIA_API_KEY"
OPENAI_MODEL = "OPENAI_MODEL"
CARTESIA_VOICE_ID = "CARTESIA_VOICE_ID"

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
DEFAULT_CARTESIA_VOICE_ID = "71a7ad14-091c-4e8e-a314-022ece01c121"  # "British Reading Lady", Pipecat's examples
SYSTEM_PROMPT = (
    "You are a friendly voice assistant on a phone call. Your replies are spoken aloud, "
    "so answer in one or two short sentences, without lists, markdown or emojis."
)


@dataclass(frozen=True)
class BotSettings:
    """Keys and models of the live providers; any missing key means the bot runs offline."""

    deepgram_api_key: str | None = field(default=None, repr=False)
    openai_api_key: str | None = field(default=None, repr=False)
    cartesia_api_key: str | None = field(default=None, repr=False)
    openai_model: str = DEFAULT_OPENAI_MODEL
    cartesia_voice_id: str = DEFAULT_CARTESIA_VOICE_ID

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        """Read the settings from ``env`` (default: ``os.environ``); blank values count as unset."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(name, "").strip() or None

        return cls(
            deepgram_api_key=get(DEEPGRAM_API_KEY),
            openai_api_key=get(OPENAI_API_KEY),
            cartesia_api_key=get(CARTESIA_API_KEY),
            openai_model=get(OPENAI_MODEL) or DEFAULT_OPENAI_MODEL,
            cartesia_voice_id=get(CARTESIA_VOICE_ID) or DEFAULT_CARTESIA_VOICE_ID,
        )

    @property
    def missing_keys(self) -> tuple[str, ...]:
        """Names of the provider keys that are not set, in a stable order."""
        keys = (
            (DEEPGRAM_API_KEY, self.deepgram_api_key),
            (OPENAI_API_KEY, self.openai_api_key),
            (CARTESIA_API_KEY, self.cartesia_api_key),
        )
        return tuple(name for name, value in keys if not value)
