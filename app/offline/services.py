"""Offline STT, LLM and TTS services that report real Pipecat metrics."""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    FunctionCallFromLLM,
    FunctionCallResultProperties,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    STTMetadataFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import FunctionCallParams, LLMService
from pipecat.services.settings import LLMSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.turns.user_start import TranscriptionUserTurnStartStrategy, VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_llm, traced_stt, traced_tts

from app.offline.script import DEFAULT_SCRIPT, END_CALL_FUNCTION, CallerScript, count_tokens, message_text

#: Model reported by the offline STT: Deepgram STT's default model, simulated.
SIMULATED_STT_MODEL = "simulated/nova-3-general"
#: Model reported by the offline LLM: the live bot's OpenAI model, simulated.
SIMULATED_LLM_MODEL = "simulated/gpt-4.1-mini"
#: Model reported by the offline TTS: Cartesia TTS's default model, simulated.
SIMULATED_TTS_MODEL = "simulated/sonic-3.6"

#: P99 time from end of speech to final transcript of the offline STT: the VAD
#: stop delay plus the slowest simulated transcription, with some margin.
OFFLINE_TTFS_P99 = 0.5

_STREAM_PIECE_RE = re.compile(r"\s*\S+")


def offline_user_turn_strategies(*, user_speech_timeout: float = 0.5) -> UserTurnStrategies:
    """User turn strategies suited to the offline transport.

    Turns start on the VAD frames the offline transport pushes (or on a
    transcript) and end ``user_speech_timeout`` after the VAD stop once the
    transcript is in. ``OfflineSTTService`` recommends these to the user
    aggregator, which applies them unless it was given its own strategies; the
    default end-of-turn model can't judge synthetic audio.

    Args:
        user_speech_timeout: Seconds to wait after the VAD stop for more speech.

    Returns:
        New strategies (strategies hold state, so don't share them).
    """
    return UserTurnStrategies(
        start=[VADUserTurnStartStrategy(), TranscriptionUserTurnStartStrategy()],
        stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=user_speech_timeout)],
    )


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return rng.uniform(low, high) if high > low else low


class OfflineSTTService(SegmentedSTTService):
    """Segmented STT that "transcribes" each speech segment as the next scripted utterance.

    Like any segmented STT, the base class buffers the audio between the VAD
    start and stop, reports its duration (plus trailing padding) as
    ``STTUsageMetricsData`` at the VAD stop, and measures TTFB from the end of
    speech to the transcript. This service adds the processing time of the
    simulated request.
    """

    def __init__(
        self,
        script: CallerScript = DEFAULT_SCRIPT,
        *,
        latency_secs: tuple[float, float] = (0.12, 0.25),
        seed: int = 0,
        settings: STTSettings | None = None,
        ttfs_p99_latency: float | None = OFFLINE_TTFS_P99,
        **kwargs: Any,
    ) -> None:
        """Initialize the service.

        Args:
            script: The conversation whose utterances are returned, in order.
            latency_secs: Range of the simulated transcription latency.
            seed: Seed of the simulated latencies.
            settings: Settings overriding the defaults (model, language).
            ttfs_p99_latency: P99 latency from end of speech to final transcript.
            **kwargs: Passed to ``SegmentedSTTService``.
        """
        default_settings = STTSettings(model=SIMULATED_STT_MODEL, language=Language.EN)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(settings=default_settings, ttfs_p99_latency=ttfs_p99_latency, **kwargs)
        self._script = script
        self._latency_secs = latency_secs
        self._rng = random.Random(seed)
        self._next_utterance = 0

    def can_generate_metrics(self) -> bool:
        """Whether this service reports metrics: it does."""
        return True

    @property
    def wants_wav_segments(self) -> bool:
        """Segments are passed as raw PCM; nothing reads them anyway."""
        return False

    def service_metadata_frame(self) -> STTMetadataFrame:
        """The STT metadata, recommending :func:`offline_user_turn_strategies`."""
        frame = super().service_metadata_frame()
        frame.user_turn_strategies = offline_user_turn_strategies()
        return frame

    @traced_stt
    async def _handle_transcription(self, transcript: str, is_final: bool, language: Language | None = None) -> None:
        """Hook for Pipecat's STT tracing."""
        pass

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Return the next scripted utterance after a simulated latency.

        Args:
            audio: The speech segment (ignored).

        Yields:
            The ``TranscriptionFrame`` of the next utterance.
        """
        utterances = self._script.utterances
        if self._next_utterance >= len(utterances):
            logger.warning(f"{self}: speech segment beyond the end of the script, ignored")
            return
        text = utterances[self._next_utterance].text
        self._next_utterance += 1

        await self.start_processing_metrics()
        await asyncio.sleep(_uniform(self._rng, self._latency_secs))
        await self.stop_processing_metrics()

        language = self._settings.language
        language = language if isinstance(language, Language) else None
        await self._handle_transcription(text, True, language)
        logger.debug(f"{self}: transcription [{text}]")
        yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), language=language)


def simulated_llm_settings(model: str = SIMULATED_LLM_MODEL) -> LLMSettings:
    """Fully filled LLM settings (Pipecat wants every field set) for a simulated ``model``."""
    return LLMSettings(
        model=model,
        system_instruction=None,
        temperature=None,
        max_tokens=None,
        top_p=None,
        top_k=None,
        frequency_penalty=None,
        presence_penalty=None,
        seed=None,
        filter_incomplete_user_turns=False,
        user_turn_completion_config=None,
        use_provider_thinking_default=False,
    )


class OfflineLLMService(LLMService):
    """LLM that streams the scripted reply to the latest user turn.

    It follows the OpenAI service: response start frame, processing and TTFB
    metrics, a simulated first-token latency, then the reply streamed word by
    word, with token usage reported in a ``finally`` (so also when interrupted)
    and the response end frame last. Token counts are deterministic: prompt
    tokens are :func:`count_tokens` of the system instruction and every context
    message, completion tokens those of the text streamed.
    """

    def __init__(
        self,
        script: CallerScript = DEFAULT_SCRIPT,
        *,
        first_token_latency_secs: tuple[float, float] = (0.25, 0.4),
        token_delay_secs: tuple[float, float] = (0.02, 0.04),
        seed: int = 0,
        settings: LLMSettings | None = None,
        **kwargs: Any,
    ) -> None:
        """Initialize the service.

        Args:
            script: The conversation whose replies are streamed.
            first_token_latency_secs: Range of the simulated time to first token.
            token_delay_secs: Range of the delay between streamed words.
            seed: Seed of the simulated latencies.
            settings: Settings overriding the defaults (model, system instruction...).
            **kwargs: Passed to ``LLMService``.
        """
        default_settings = simulated_llm_settings()
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(settings=default_settings, **kwargs)
        self._script = script
        self._first_token_latency_secs = first_token_latency_secs
        self._token_delay_secs = token_delay_secs
        self._rng = random.Random(seed)

    def can_generate_metrics(self) -> bool:
        """Whether this service reports metrics: it does."""
        return True

    def prompt_tokens(self, context: LLMContext) -> int:
        """Deterministic prompt token count for a context.

        Args:
            context: The LLM context.

        Returns:
            Tokens of the system instruction plus those of every message's text.
        """
        instruction = self._settings.system_instruction
        tokens = count_tokens(instruction) if isinstance(instruction, str) else 0
        return tokens + sum(count_tokens(message_text(m)) for m in context.get_messages())

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Run a completion for each ``LLMContextFrame``; pass other frames on.

        Args:
            frame: The frame to process.
            direction: The direction of frame flow.
        """
        await super().process_frame(frame, direction)

        if isinstance(frame, LLMContextFrame):
            # Failures are reported by the base class as an ErrorFrame; the
            # response is closed either way, as the OpenAI service does.
            try:
                await self.push_frame(LLMFullResponseStartFrame())
                await self.start_processing_metrics()
                await self._process_context(frame.context)
            finally:
                await self.stop_processing_metrics()
                await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)

    @traced_llm
    async def _process_context(self, context: LLMContext) -> None:
        messages = context.get_messages()
        user_turns = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user")
        reply = self._script.reply_for(user_turns)
        prompt_tokens = self.prompt_tokens(context)
        streamed = ""
        logger.debug(f"{self}: replying [{reply}]")

        await self.start_ttfb_metrics()
        try:
            await asyncio.sleep(_uniform(self._rng, self._first_token_latency_secs))
            await self.stop_ttfb_metrics()
            for i, piece in enumerate(_STREAM_PIECE_RE.findall(reply)):
                if i:
                    await asyncio.sleep(_uniform(self._rng, self._token_delay_secs))
                await self._push_llm_text(piece)
                streamed += piece
            if self._script.ends_call_after(user_turns) and self.has_function(END_CALL_FUNCTION):
                # Like a real model, the goodbye and the tool call come in one response.
                call = FunctionCallFromLLM(
                    function_name=END_CALL_FUNCTION,
                    tool_call_id=f"call_{END_CALL_FUNCTION}_{user_turns}",
                    arguments={},
                    context=context,
                )
                await self.run_function_calls([call])
        finally:
            # Report even if the response is interrupted or cancelled mid-stream.
            completion_tokens = count_tokens(streamed)
            await self.start_llm_usage_metrics(
                LLMTokenUsage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens,
                )
            )


class OfflineTTSService(TTSService):
    """TTS that synthesizes a quiet tone lasting as long as the text would be spoken.

    It behaves like an HTTP TTS service (e.g. Cartesia's): the base class opens an
    audio context with a ``TTSStartedFrame`` and starts TTFB for each reply, each
    sentence is requested separately and reported as ``TTSUsageMetricsData``
    (characters) once the simulated request returns, the first audio chunk stops
    TTFB, and a ``TTSStoppedFrame`` closes the reply.
    """

    def __init__(
        self,
        *,
        chars_per_sec: float = DEFAULT_SCRIPT.chars_per_sec,
        first_byte_latency_secs: tuple[float, float] = (0.1, 0.2),
        chunk_secs: float = 0.1,
        amplitude: int = 2000,
        seed: int = 0,
        settings: TTSSettings | None = None,
        **kwargs: Any,
    ) -> None:
        """Initialize the service.

        Args:
            chars_per_sec: Speaking rate: audio lasts ``len(text) / chars_per_sec``.
            first_byte_latency_secs: Range of the simulated request latency.
            chunk_secs: Duration of each audio chunk yielded.
            amplitude: Peak amplitude (int16) of the tone.
            seed: Seed of the simulated latencies.
            settings: Settings overriding the defaults (model, voice, language).
            **kwargs: Passed to ``TTSService``.
        """
        default_settings = TTSSettings(model=SIMULATED_TTS_MODEL, voice="simulated-voice", language=Language.EN)
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=default_settings,
            **kwargs,
        )
        self._chars_per_sec = chars_per_sec
        self._first_byte_latency_secs = first_byte_latency_secs
        self._chunk_secs = chunk_secs
        self._amplitude = amplitude
        self._rng = random.Random(seed)

    def can_generate_metrics(self) -> bool:
        """Whether this service reports metrics: it does."""
        return True

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Synthesize ``text`` as a tone, after a simulated request latency.

        Args:
            text: The text to speak.
            context_id: The audio context of the reply.

        Yields:
            ``TTSAudioRawFrame`` chunks of 16-bit mono audio at the service rate.
        """
        await asyncio.sleep(_uniform(self._rng, self._first_byte_latency_secs))
        await self.start_tts_usage_metrics(text)
        audio = self._synthesize(len(text) / self._chars_per_sec)
        chunk_bytes = max(2, int(self.sample_rate * self._chunk_secs) * 2)
        for offset in range(0, len(audio), chunk_bytes):
            yield TTSAudioRawFrame(audio[offset : offset + chunk_bytes], self.sample_rate, 1, context_id=context_id)

    def _synthesize(self, duration_secs: float) -> bytes:
        """A two-partial tone with a syllable-rate envelope and soft edges."""
        num_samples = max(1, round(duration_secs * self.sample_rate))
        t = np.arange(num_samples) / self.sample_rate
        tone = 0.7 * np.sin(2 * math.pi * 180.0 * t) + 0.3 * np.sin(2 * math.pi * 360.0 * t)
        envelope = 0.6 + 0.4 * np.sin(2 * math.pi * 3.5 * t)
        ramp = min(num_samples // 2, int(0.01 * self.sample_rate))
        if ramp:
            fade = np.linspace(0.0, 1.0, ramp)
            envelope[:ramp] *= fade
            envelope[-ramp:] *= fade[::-1]
        return (tone * envelope * self._amplitude).astype(np.int16).tobytes()


async def end_call(params: FunctionCallParams) -> None:
    """``end_call`` tool handler: end the call once the goodbye said with the call is spoken.

    The goodbye came in the same response as the tool call, so it is already on its way to
    the TTS. The result does not run the LLM again, and the ``EndWorkerFrame`` (Pipecat 1.14's
    name for ``EndTaskFrame``, its deprecated alias) pushed upstream makes the worker queue an
    ``EndFrame``, which reaches the output transport after the goodbye's audio: the goodbye is
    spoken, then the call ends. Register it with ``llm.register_function(END_CALL_FUNCTION, end_call)``.

    Args:
        params: The function call, from the LLM service.
    """
    await params.result_callback({"status": "call ended"}, properties=FunctionCallResultProperties(run_llm=False))
    await params.llm.push_frame(EndWorkerFrame(reason=END_CALL_FUNCTION), FrameDirection.UPSTREAM)
