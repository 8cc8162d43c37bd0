"""Live providers: Deepgram STT, an OpenAI or Anthropic LLM, and Cartesia or ElevenLabs TTS.

Each builder takes the resolved :class:`~app.config.BotSettings`; the system prompt is the LLM's
``system_instruction`` setting (Pipecat 1.9+ deprecates a ``"system"`` message in the context).
"""

from __future__ import annotations

from typing import Any

from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from app.config import SYSTEM_PROMPT, BotSettings


def create_live_services(settings: BotSettings) -> tuple[STTService, LLMService[Any], TTSService]:
    """Build the live STT, LLM and TTS; every key they need must be set (see ``BotSettings.missing_keys``)."""
    if settings.missing_keys:
        raise ValueError(f"missing provider keys: {', '.join(settings.missing_keys)}")
    return create_stt(settings), create_llm(settings), create_tts(settings)


def create_stt(settings: BotSettings) -> STTService:
    """Deepgram's live (websocket) STT with its default model."""
    from pipecat.services.deepgram.stt import DeepgramSTTService

    return DeepgramSTTService(api_key=settings.deepgram_api_key or "", base_url=settings.deepgram_base_url or "")


def create_llm(settings: BotSettings) -> LLMService[Any]:
    """The chosen LLM (``LLM_PROVIDER``), streaming, with the bot's system prompt."""
    if settings.llm_provider == "anthropic":
        from anthropic import AsyncAnthropic
        from pipecat.services.anthropic.llm import AnthropicLLMService

        return AnthropicLLMService(
            api_key=settings.anthropic_api_key or "",
            client=AsyncAnthropic(api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url),
            settings=AnthropicLLMService.Settings(model=settings.anthropic_model, system_instruction=SYSTEM_PROMPT),
        )
    from pipecat.services.openai.llm import OpenAILLMService

    return OpenAILLMService(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        settings=OpenAILLMService.Settings(model=settings.openai_model, system_instruction=SYSTEM_PROMPT),
    )


def create_tts(settings: BotSettings) -> TTSService:
    """The chosen websocket TTS (``TTS_PROVIDER``) with its default model."""
    if settings.tts_provider == "elevenlabs":
        from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

        return ElevenLabsTTSService(
            api_key=settings.elevenlabs_api_key or "",
            url=settings.elevenlabs_url or "wss://api.elevenlabs.io",
            settings=ElevenLabsTTSService.Settings(voice=settings.elevenlabs_voice_id),
        )
    from pipecat.services.cartesia.tts import CartesiaTTSService

    return CartesiaTTSService(
        api_key=settings.cartesia_api_key or "",
        url=settings.cartesia_url or "wss://api.cartesia.ai/tts/websocket",
        settings=CartesiaTTSService.Settings(voice=settings.cartesia_voice_id),
    )
