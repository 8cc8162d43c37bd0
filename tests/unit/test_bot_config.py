"""The example bot's provider settings and the live services app/live.py builds from them (no network)."""

from __future__ import annotations

import pytest
from pipecat.services.anthropic.llm import AnthropicLLMService
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
from pipecat.services.openai.llm import OpenAILLMService

from app.config import SYSTEM_PROMPT, BotConfigError, BotSettings
from app.live import create_live_services

KEYS = {
    "DEEPGRAM_API_KEY": "dg",
    "OPENAI_API_KEY": "sk",
    "ANTHROPIC_API_KEY": "ant",
    "CARTESIA_API_KEY": "ca",
    "ELEVENLABS_API_KEY": "el",
}


def test_the_default_providers_are_deepgram_openai_and_cartesia() -> None:
    stt, llm, tts = create_live_services(BotSettings.from_env(KEYS))
    assert (type(stt), type(llm), type(tts)) == (DeepgramSTTService, OpenAILLMService, CartesiaTTSService)
    assert (stt.settings.model, llm.settings.model) == ("nova-3-general", "gpt-4.1-mini")
    # The system prompt is the LLM's setting, not a "system" message in the context (deprecated).
    assert llm.settings.system_instruction == SYSTEM_PROMPT


def test_anthropic_and_elevenlabs_are_chosen_by_name_in_any_case() -> None:
    settings = BotSettings.from_env({**KEYS, "LLM_PROVIDER": "Anthropic", "TTS_PROVIDER": "ELEVENLABS"})
    _, llm, tts = create_live_services(settings)
    assert (type(llm), type(tts)) == (AnthropicLLMService, ElevenLabsTTSService)
    assert (llm.settings.model, llm.settings.system_instruction) == ("claude-haiku-4-5", SYSTEM_PROMPT)
    assert tts.settings.model == "eleven_flash_v2_5"


def test_missing_keys_are_those_of_the_chosen_providers() -> None:
    assert BotSettings.from_env({}).missing_keys == ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY")
    chosen = {"LLM_PROVIDER": "anthropic", "TTS_PROVIDER": "elevenlabs", "DEEPGRAM_API_KEY": "dg"}
    assert BotSettings.from_env(chosen).missing_keys == ("ANTHROPIC_API_KEY", "ELEVENLABS_API_KEY")
    assert BotSettings.from_env({**chosen, "OPENAI_API_KEY": "sk"}).missing_keys == (
        "ANTHROPIC_API_KEY",
        "ELEVENLABS_API_KEY",
    )


def test_an_unknown_provider_names_the_variable_and_the_choices() -> None:
    with pytest.raises(BotConfigError) as raised:
        BotSettings.from_env({"TTS_PROVIDER": "polly"})
    assert str(raised.value) == (
        "TTS_PROVIDER='polly' is not supported. Set TTS_PROVIDER to one of: cartesia, elevenlabs."
    )


def test_keys_never_show_in_the_settings_repr() -> None:
    text = repr(BotSettings.from_env(KEYS))
    assert not any(f"'{value}'" in text for value in KEYS.values())
