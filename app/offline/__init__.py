"""Fully offline, scripted voice conversation for a real Pipecat pipeline.

Nothing here touches the network or needs keys. A scripted caller talks to the
bot through :class:`OfflineTransport` in real time, and the offline services
stand in for Deepgram STT, an OpenAI LLM and Cartesia TTS, reporting real Pipecat
metrics (TTFB, processing time, token/character/audio-seconds usage) under the
``simulated/...`` model names. Build the usual pipeline::

    services = create_offline_services(QUICK_SCRIPT)
    context = LLMContext()  # the system prompt is the LLM's system_instruction
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=services.user_params
    )
    pipeline = Pipeline([
        services.transport.input(), services.stt, user_aggregator, services.llm,
        services.tts, services.transport.output(), assistant_aggregator,
    ])

``services.user_params`` carries :func:`offline_user_turn_strategies` (the default
end-of-turn model can't judge synthetic audio). Without it, the offline STT
recommends the same strategies to the user aggregator, which applies them unless
given strategies of its own. The caller hangs up by itself once the bot has
answered the last utterance, so the worker ends without help.

A speech-to-speech call replaces STT, LLM and TTS with one realtime service
behaving like OpenAI Realtime or Gemini Live (see ``app.offline.speech_to_speech``)::

    s2s = create_offline_s2s_services(QUICK_SCRIPT, flavor="openai")
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        LLMContext(), user_params=s2s.user_params
    )
    pipeline = Pipeline([
        s2s.transport.input(), user_aggregator, s2s.s2s,
        s2s.transport.output(), assistant_aggregator,
    ])
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.services.settings import LLMSettings

from app.config import SYSTEM_PROMPT
from app.offline.script import (
    DEFAULT_SCRIPT,
    QUICK_SCRIPT,
    CallerScript,
    StartAnchor,
    Utterance,
    count_tokens,
)
from app.offline.services import (
    SIMULATED_LLM_MODEL,
    SIMULATED_STT_MODEL,
    SIMULATED_TTS_MODEL,
    OfflineLLMService,
    OfflineSTTService,
    OfflineTTSService,
    offline_user_turn_strategies,
    simulated_llm_settings,
)
from app.offline.speech_to_speech import (
    SIMULATED_GEMINI_LIVE_MODEL,
    SIMULATED_OPENAI_REALTIME_MODEL,
    SIMULATED_S2S_MODELS,
    Flavor,
    OfflineSpeechToSpeechService,
    offline_s2s_user_turn_strategies,
    usage_totals,
)
from app.offline.transport import OfflineInputTransport, OfflineOutputTransport, OfflineTransport

__all__ = [
    "DEFAULT_SCRIPT",
    "QUICK_SCRIPT",
    "SIMULATED_GEMINI_LIVE_MODEL",
    "SIMULATED_LLM_MODEL",
    "SIMULATED_OPENAI_REALTIME_MODEL",
    "SIMULATED_S2S_MODELS",
    "SIMULATED_STT_MODEL",
    "SIMULATED_TTS_MODEL",
    "CallerScript",
    "Flavor",
    "OfflineInputTransport",
    "OfflineLLMService",
    "OfflineOutputTransport",
    "OfflineS2SServices",
    "OfflineSTTService",
    "OfflineServices",
    "OfflineSpeechToSpeechService",
    "OfflineTTSService",
    "OfflineTransport",
    "StartAnchor",
    "Utterance",
    "count_tokens",
    "create_offline_s2s_services",
    "create_offline_services",
    "offline_s2s_user_turn_strategies",
    "offline_user_turn_strategies",
    "simulated_llm_settings",
    "usage_totals",
]


@dataclass(frozen=True)
class OfflineServices:
    """The transport and services of one offline call, sharing one script.

    Attributes:
        script: The conversation played.
        transport: The scripted caller and real-time speaker.
        stt: Stands in for Deepgram STT.
        llm: Stands in for the OpenAI LLM.
        tts: Stands in for Cartesia TTS.
        user_params: User aggregator parameters with the offline turn strategies.
    """

    script: CallerScript
    transport: OfflineTransport
    stt: OfflineSTTService
    llm: OfflineLLMService
    tts: OfflineTTSService
    user_params: LLMUserAggregatorParams


def create_offline_services(
    script: CallerScript = DEFAULT_SCRIPT, *, seed: int = 0, system_instruction: str | None = SYSTEM_PROMPT
) -> OfflineServices:
    """Create the transport and services for one offline call.

    Each call needs its own instances: they keep track of the conversation.

    Args:
        script: The conversation to play.
        seed: Seed of the simulated latencies and synthetic audio.
        system_instruction: The LLM's system prompt (default: the live bot's); None for none.

    Returns:
        The transport, the STT, LLM and TTS services and the user aggregator parameters.
    """
    return OfflineServices(
        script=script,
        transport=OfflineTransport(script, seed=seed),
        stt=OfflineSTTService(script, seed=seed),
        llm=OfflineLLMService(script, seed=seed, settings=LLMSettings(system_instruction=system_instruction)),
        tts=OfflineTTSService(chars_per_sec=script.chars_per_sec, seed=seed),
        user_params=LLMUserAggregatorParams(user_turn_strategies=offline_user_turn_strategies()),
    )


@dataclass(frozen=True)
class OfflineS2SServices:
    """The transport and speech-to-speech service of one offline call, sharing one script.

    Attributes:
        script: The conversation played.
        transport: The scripted caller and real-time speaker.
        s2s: Stands in for OpenAI Realtime or Gemini Live.
        user_params: User aggregator parameters with :func:`offline_s2s_user_turn_strategies`.
    """

    script: CallerScript
    transport: OfflineTransport
    s2s: OfflineSpeechToSpeechService
    user_params: LLMUserAggregatorParams


def create_offline_s2s_services(
    script: CallerScript = DEFAULT_SCRIPT,
    *,
    flavor: Flavor = "openai",
    seed: int = 0,
    system_instruction: str | None = SYSTEM_PROMPT,
) -> OfflineS2SServices:
    """Create the transport and speech-to-speech service for one offline call.

    Each call needs its own instances: they keep track of the conversation.

    Args:
        script: The conversation to play.
        flavor: "openai" (OpenAI Realtime) or "gemini" (Gemini Live).
        seed: Seed of the simulated latencies and synthetic audio.
        system_instruction: The service's system prompt (default: the live bot's); None for none.

    Returns:
        The transport, the S2S service and the user aggregator parameters.
    """
    return OfflineS2SServices(
        script=script,
        transport=OfflineTransport(script, seed=seed),
        s2s=OfflineSpeechToSpeechService(
            script, flavor=flavor, seed=seed, settings=LLMSettings(system_instruction=system_instruction)
        ),
        user_params=LLMUserAggregatorParams(user_turn_strategies=offline_s2s_user_turn_strategies()),
    )
