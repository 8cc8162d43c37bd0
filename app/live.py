"""Live providers: Deepgram STT, OpenAI LLM and Cartesia TTS, talking over SmallWebRTC in the browser."""

from __future__ import annotations

from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService

from app.config import BotSettings


def create_live_services(settings: BotSettings) -> tuple[DeepgramSTTService, OpenAILLMService, CartesiaTTSService]:
    """Build the three live services; every key must be set (see ``BotSettings.missing_keys``)."""
    if settings.missing_keys:
        raise ValueError(f"missing provider keys: {', '.join(settings.missing_keys)}")
    stt = DeepgramSTTService(api_key=settings.deepgram_api_key or "")
    llm = OpenAILLMService(
        api_key=settings.openai_api_key, settings=OpenAILLMService.Settings(model=settings.openai_model)
    )
    tts = CartesiaTTSService(
        api_key=settings.cartesia_api_key or "", settings=CartesiaTTSService.Settings(voice=settings.cartesia_voice_id)
    )
    return stt, llm, tts
