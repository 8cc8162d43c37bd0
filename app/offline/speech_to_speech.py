"""Offline speech-to-speech service behaving like OpenAI Realtime or Gemini Live on the frame level.

:class:`OfflineSpeechToSpeechService` hears the scripted caller's audio, answers each user turn
with the scripted reply as synthetic audio streamed in real time, and reports TTFB, processing
time and token usage the way Pipecat 1.14's ``OpenAIRealtimeLLMService`` (local turn detection,
``turn_detection=False``) or ``GeminiLiveLLMService`` does, billed as the provider bills it. Each
response is also recorded in :attr:`OfflineSpeechToSpeechService.ledger`.

Frames of one response, ``flavor="openai"`` (``_handle_user_stopped_speaking`` commits and creates a
response; the server events are then simulated in their usual order)::

    UserStoppedSpeakingFrame  -> start TTFB + processing metrics
    TranscriptionFrame(text, "", ts)   UPSTREAM  (input_audio_transcription.completed)
    LLMFullResponseStartFrame                      (assistant conversation.item.added)
    TTSStartedFrame                                (first response.output_audio.delta; TTFB stops)
    TTSAudioRawFrame, then the LLMTextFrame (append_to_context=False) and
        TTSTextFrame(text_type=SENTENCE) of the words it starts, ... (real time)
    usage metric, processing metric stop, TTSStoppedFrame, LLMFullResponseEndFrame  (response.done)

Interrupted (``_handle_interruption``, then the cancelled ``response.done``)::

    LLMFullResponseEndFrame, TTSStoppedFrame       (all metrics stopped)
    usage metric of what was generated before the cut, LLMFullResponseEndFrame again
    (Pipecat pushes it on every response.done; ``repeat_end_frame_on_cancel=False`` leaves it out)

``flavor="gemini"`` (no processing metrics: the Gemini service reports none)::

    UserStoppedSpeakingFrame  -> start TTFB
    TranscriptionFrame UPSTREAM, one per sentence  (input_transcription)
    TTSStartedFrame, LLMFullResponseStartFrame     (first model_turn audio; TTFB stops)
    TTSAudioRawFrame + LLMTextFrame/TTSTextFrame ... (real time)
    TTSStoppedFrame, LLMFullResponseEndFrame, then the usage metric  (turn_complete + usage_metadata)

Interrupted: ``TTSStoppedFrame`` only (no end frame, as the Gemini service), then the usage metric.

Usage (see :meth:`OfflineSpeechToSpeechService.ledger` entries for the raw counts):

* The user's audio of a turn is what the real service commits: audio is appended all the time,
  every ``InterruptionFrame`` (each user turn start) clears the buffer and replays the last
  ``user_audio_preroll_secs`` (0.5 s, Pipecat's default without a VAD analyzer), and
  ``UserStoppedSpeakingFrame`` commits it. So one utterance is the pre-roll plus the audio from
  the turn start to the turn stop.
* The conversation is re-sent with each response, in this order: the system instruction (text),
  then per earlier response its user audio, its assistant text (OpenAI only) and its assistant
  audio, then this turn's user audio. A cut response counts what was generated before the cut.
* OpenAI: input audio is 1 token per 100 ms, output audio 1 per 50 ms (both rounded up), text
  :func:`count_tokens`. Cached = ``64 * floor(previous prompt tokens / 64)`` (0 for the first
  response; OpenAI's 1024-token minimum is ignored so short calls do cache), attributed to text
  or audio by prefix order (the first cached tokens are the system text, and so on). Reported as
  ``_handle_evt_response_done`` does: ``prompt_tokens`` = text + audio input (cached included),
  ``completion_tokens`` = output text + audio, ``cache_read_input_tokens`` = all cached,
  ``input_audio_tokens`` = input audio (cached included), ``output_audio_tokens``,
  ``cache_read_input_audio_tokens``.
* Gemini: audio is 25 tokens per second both ways (rounded up); the prompt is the system text plus
  all the audio (native audio output is billed as audio only, so no assistant text); the response
  adds seeded thinking tokens. Reported as ``_handle_msg_usage_metadata`` does: ``prompt_tokens``,
  ``completion_tokens`` = audio + thoughts, ``reasoning_tokens`` = thoughts, ``input_audio_tokens``,
  ``output_audio_tokens``; no cache (cache fields None).
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMServiceMetadataFrame,
    LLMSetToolsFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.openai.realtime import events
from pipecat.services.settings import LLMSettings
from pipecat.transcriptions.language import Language
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.text.base_text_aggregator import TextType
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_gemini_live, traced_openai_realtime, traced_stt

from app.offline.script import DEFAULT_SCRIPT, CallerScript, count_tokens
from app.offline.services import simulated_llm_settings

Flavor = Literal["openai", "gemini"]

#: Model reported by the offline S2S service, OpenAI Realtime flavour.
SIMULATED_OPENAI_REALTIME_MODEL = "simulated/gpt-realtime-2"
#: Model reported by the offline S2S service, Gemini Live flavour.
SIMULATED_GEMINI_LIVE_MODEL = "simulated/gemini-2.5-flash-native-audio-preview-12-2025"
SIMULATED_S2S_MODELS: dict[Flavor, str] = {
    "openai": SIMULATED_OPENAI_REALTIME_MODEL,
    "gemini": SIMULATED_GEMINI_LIVE_MODEL,
}

#: Both providers stream 24 kHz, 16-bit mono PCM.
S2S_OUTPUT_SAMPLE_RATE = 24000
#: Pipecat's OpenAI Realtime pre-roll without an upstream VAD analyzer (DEFAULT_USER_AUDIO_PREROLL_SECS).
DEFAULT_USER_AUDIO_PREROLL_SECS = 0.5
#: OpenAI Realtime audio tokens: input 1 per 100 ms, output 1 per 50 ms.
OPENAI_INPUT_AUDIO_SECS_PER_TOKEN = 0.1
OPENAI_OUTPUT_AUDIO_SECS_PER_TOKEN = 0.05
#: OpenAI caches the prompt prefix in blocks of this many tokens.
OPENAI_CACHE_BLOCK_TOKENS = 64
#: Gemini audio tokens per second, input and output.
GEMINI_AUDIO_TOKENS_PER_SEC = 25

_STREAM_PIECE_RE = re.compile(r"\s*\S+")
_SENTENCE_RE = re.compile(r"[^.!?]*[.!?]+\s*|[^.!?]+$")


def offline_s2s_user_turn_strategies(*, user_speech_timeout: float = 0.5) -> UserTurnStrategies:
    """User turn strategies for the offline transport with a realtime service.

    :func:`app.offline.offline_user_turn_strategies` as realtime mode leaves them (the user
    aggregator would strip them the same way, with a warning for user-provided strategies): turns
    start on the transport's VAD frames, and end ``user_speech_timeout`` after the VAD stop without
    waiting for a transcript (the service transcribes only after the turn ends).

    Args:
        user_speech_timeout: Seconds to wait after the VAD stop for more speech.

    Returns:
        New strategies (strategies hold state, so don't share them).
    """
    return UserTurnStrategies(
        start=[VADUserTurnStartStrategy()],
        stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=user_speech_timeout, wait_for_transcript=False)],
    )


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return rng.uniform(low, high) if high > low else low


@dataclass
class _Segment:
    """One piece of the conversation as the model sees it, in order."""

    modality: Literal["text", "audio"]
    tokens: int


@dataclass
class _Response:
    """A response being generated."""

    index: int
    user_turn: int  # 0 for a response before any user turn (a greeting)
    user_text: str | None
    user_audio_secs: float
    reply: str
    text_generated: str = ""
    audio_secs_generated: float = 0.0
    started: bool = False  # LLMFullResponseStartFrame pushed
    audio_started: bool = False
    interrupted: bool = False
    done: bool = False
    thoughts: int | None = None  # Gemini thinking tokens, drawn once
    prompt: list[_Segment] = field(default_factory=list)


class OfflineSpeechToSpeechService(LLMService):
    """Speech-to-speech double of ``OpenAIRealtimeLLMService`` / ``GeminiLiveLLMService``.

    See the module docstring for the frames and the usage formulas. The caller's audio passes
    through (as with the real services); each ``UserStoppedSpeakingFrame`` answers the next
    scripted utterance with its scripted reply, and an ``InterruptionFrame`` cuts the response
    being spoken. Use it as ``transport.input() -> user_aggregator -> s2s -> transport.output()
    -> assistant_aggregator``, with :func:`offline_s2s_user_turn_strategies`.

    Attributes:
        ledger: One dict per response: what was said, the raw provider counts and the
            ``LLMTokenUsage`` reported (key ``usage``).
    """

    def __init__(
        self,
        script: CallerScript = DEFAULT_SCRIPT,
        *,
        flavor: Flavor = "openai",
        ttfb_secs: tuple[float, float] | None = None,
        transcription_delay_secs: tuple[float, float] = (0.1, 0.2),
        response_done_delay_secs: tuple[float, float] = (0.03, 0.08),
        chunk_secs: float = 0.1,
        lead_secs: float = 0.2,
        thinking_tokens: tuple[int, int] = (16, 64),
        user_audio_preroll_secs: float = DEFAULT_USER_AUDIO_PREROLL_SECS,
        repeat_end_frame_on_cancel: bool = True,
        amplitude: int = 2000,
        seed: int = 0,
        settings: LLMSettings | None = None,
        **kwargs: Any,
    ) -> None:
        """Initialize the service.

        Args:
            script: The conversation: utterances heard, replies spoken.
            flavor: Which real service to behave like.
            ttfb_secs: Range of the time from the user's turn end to the first audio
                (default: (0.35, 0.6) for OpenAI, (0.45, 0.75) for Gemini).
            transcription_delay_secs: Range of the time from the turn end to the user's
                transcript; it arrives before the first audio.
            response_done_delay_secs: Range of the delay of the usage report after the last
                audio or the cut.
            chunk_secs: Duration of each audio chunk.
            lead_secs: How far generation runs ahead of real time.
            thinking_tokens: Range of the Gemini thinking tokens per response.
            user_audio_preroll_secs: Audio kept when the input buffer is cleared at an interruption.
            repeat_end_frame_on_cancel: OpenAI: push ``LLMFullResponseEndFrame`` again with the
                usage of a cut response, as Pipecat does on the cancelled ``response.done``.
            amplitude: Peak amplitude (int16) of the synthetic voice.
            seed: Seed of the simulated latencies and thinking tokens.
            settings: Settings overriding the defaults (model, system instruction...).
            **kwargs: Passed to ``LLMService``.
        """
        default_settings = simulated_llm_settings(SIMULATED_S2S_MODELS[flavor])
        if settings is not None:
            default_settings.apply_update(settings)
        super().__init__(settings=default_settings, **kwargs)
        self._script = script
        self._flavor: Flavor = flavor
        self._ttfb_secs = ttfb_secs or ((0.35, 0.6) if flavor == "openai" else (0.45, 0.75))
        self._transcription_delay_secs = transcription_delay_secs
        self._response_done_delay_secs = response_done_delay_secs
        self._chunk_secs = chunk_secs
        self._lead_secs = lead_secs
        self._thinking_tokens = thinking_tokens
        self._preroll_secs = user_audio_preroll_secs
        self._repeat_end_frame_on_cancel = repeat_end_frame_on_cancel
        self._amplitude = amplitude
        self._rng = random.Random(seed)

        self.ledger: list[dict[str, Any]] = []
        self._context: LLMContext | None = None
        self._input_bytes = 0  # the uncommitted input audio buffer
        self._input_bytes_per_sec = 0
        self._user_turns = 0
        self._responses: list[_Response] = []
        self._current: _Response | None = None
        self._task: asyncio.Task[None] | None = None
        # Text of the latest model output, for Pipecat's Gemini tracing decorator.
        self._llm_output_buffer = ""
        self._bot_text_buffer = ""

    @property
    def flavor(self) -> Flavor:
        """The real service this one behaves like."""
        return self._flavor

    def can_generate_metrics(self) -> bool:
        """Whether this service reports metrics: it does."""
        return True

    def service_metadata_frame(self) -> LLMServiceMetadataFrame:
        """A realtime service, recommending no turn strategies (turn detection is local)."""
        return LLMServiceMetadataFrame(service_name=self.name, is_realtime_service=True)

    #
    # Frames
    #

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Hear the caller's audio and answer each user turn; pass frames on as the real service does.

        Args:
            frame: The frame to process.
            direction: The direction of frame flow.
        """
        await super().process_frame(frame, direction)

        if isinstance(frame, InputAudioRawFrame):
            self._input_bytes += len(frame.audio)
            self._input_bytes_per_sec = 2 * max(1, frame.num_channels) * frame.sample_rate
        elif isinstance(frame, LLMContextFrame):
            await self._handle_context(frame.context)
            if self._flavor == "gemini":
                return  # the Gemini service keeps context frames
        elif isinstance(frame, InterruptionFrame):
            await self._handle_interruption()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self._handle_user_stopped_speaking()
        elif isinstance(frame, LLMSetToolsFrame) and self._flavor == "gemini":
            return  # the Gemini service keeps it too
        await self.push_frame(frame, direction)

    async def stop(self, frame: EndFrame) -> None:
        """Stop the service, dropping a response still running.

        Args:
            frame: The end frame.
        """
        await self._cancel_task()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        """Cancel the service at once.

        Args:
            frame: The cancel frame.
        """
        await self._cancel_task()
        await super().cancel(frame)

    async def _cancel_task(self) -> None:
        if self._task is not None:
            await self.cancel_task(self._task)
            self._task = None

    async def _handle_context(self, context: LLMContext) -> None:
        """Keep the context; a first one before any user turn asks for a greeting (OpenAI's _create_response)."""
        first = self._context is None
        self._context = context
        if first and not self._responses and self._user_turns == 0:
            await self._start_response(user_turn=0, user_text=None, user_audio_secs=0.0)

    async def _handle_interruption(self) -> None:
        # Local turn detection: the input buffer is cleared and the pre-roll replayed.
        if self._input_bytes_per_sec:
            self._input_bytes = min(self._input_bytes, int(self._preroll_secs * self._input_bytes_per_sec) // 2 * 2)
        response = self._current
        if response is None or response.done:
            return
        response.interrupted = True
        await self._cancel_task()
        self._current = None
        if self._flavor == "openai":
            await self.stop_all_metrics()  # type: ignore[no-untyped-call]  # unannotated in Pipecat
            if response.started:  # the assistant item was added
                await self.push_frame(LLMFullResponseEndFrame())
                await self.push_frame(TTSStoppedFrame())
        elif response.audio_started:
            await self.push_frame(TTSStoppedFrame())  # no LLMFullResponseEndFrame, as the Gemini service
        # The server still reports the cut response (response.done / turn_complete with usage).
        self._task = self.create_task(self._report_cut(response), name="offline_s2s_cut_response")

    async def _handle_user_stopped_speaking(self) -> None:
        """Commit the input audio and create a response (``turn_detection=False``)."""
        secs = self._input_bytes / self._input_bytes_per_sec if self._input_bytes_per_sec else 0.0
        self._input_bytes = 0
        self._user_turns += 1
        utterances = self._script.utterances
        text = utterances[self._user_turns - 1].text if self._user_turns <= len(utterances) else None
        await self._start_response(user_turn=self._user_turns, user_text=text, user_audio_secs=secs)

    async def _start_response(self, *, user_turn: int, user_text: str | None, user_audio_secs: float) -> None:
        response = _Response(
            index=len(self._responses),
            user_turn=user_turn,
            user_text=user_text,
            user_audio_secs=user_audio_secs,
            reply=self._script.reply_for(user_turn),
        )
        response.prompt = self._prompt_for(response)
        self._responses.append(response)
        await self.start_ttfb_metrics()
        if self._flavor == "openai":
            await self.start_processing_metrics()
        previous = self._task
        self._task = self.create_task(self._respond(response, previous), name="offline_s2s_response")

    #
    # A response
    #

    async def _respond(self, response: _Response, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # the API holds a response asked for while one runs
        self._current = response
        ttfb = _uniform(self._rng, self._ttfb_secs)
        transcript_at = min(_uniform(self._rng, self._transcription_delay_secs), ttfb * 0.8)
        logger.debug(f"{self}: replying [{response.reply}]")

        await asyncio.sleep(transcript_at)
        if response.user_text is not None:
            await self._push_user_transcript(response.user_text)
        if self._flavor == "openai":
            response.started = True
            await self.push_frame(LLMFullResponseStartFrame())  # the assistant item is added
        await asyncio.sleep(ttfb - transcript_at)

        duration = len(response.reply) / self._script.chars_per_sec
        audio = self._synthesize(duration)
        words = [(m.start() / self._script.chars_per_sec, m.group()) for m in _STREAM_PIECE_RE.finditer(response.reply)]
        chunk_bytes = max(2, int(S2S_OUTPUT_SAMPLE_RATE * self._chunk_secs) * 2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_word = 0
        for offset in range(0, len(audio), chunk_bytes):
            position = offset / 2 / S2S_OUTPUT_SAMPLE_RATE
            due = start + max(0.0, position - self._lead_secs)
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            chunk = audio[offset : offset + chunk_bytes]
            await self._push_audio(response, chunk)
            chunk_end = position + len(chunk) / 2 / S2S_OUTPUT_SAMPLE_RATE
            while next_word < len(words) and words[next_word][0] < chunk_end:
                await self._push_output_transcript(response, words[next_word][1])
                next_word += 1
        for _, piece in words[next_word:]:
            await self._push_output_transcript(response, piece)

        await asyncio.sleep(_uniform(self._rng, self._response_done_delay_secs))
        response.done = True
        self._current = None
        if self._flavor == "openai":
            await self._openai_response_done(self._openai_event(response), response=response)
        else:
            await self._gemini_turn_complete(self._gemini_message(response))
            await self._report_usage(response)

    async def _report_cut(self, response: _Response) -> None:
        await asyncio.sleep(_uniform(self._rng, self._response_done_delay_secs))
        response.done = True
        if self._flavor == "openai":
            await self._openai_response_done(self._openai_event(response), response=response)
        else:
            await self._gemini_turn_complete(self._gemini_message(response))
            await self._report_usage(response)

    async def _push_user_transcript(self, text: str) -> None:
        if self._flavor == "openai":
            await self.push_frame(TranscriptionFrame(text, "", time_now_iso8601()), FrameDirection.UPSTREAM)
            await self._handle_user_transcription(text, True, Language.EN)
        else:
            for sentence in (s.strip() for s in _SENTENCE_RE.findall(text)):
                if sentence:
                    await self._handle_user_transcription(sentence, True, Language.EN)
                    await self.push_frame(TranscriptionFrame(sentence, "", time_now_iso8601()), FrameDirection.UPSTREAM)

    async def _push_audio(self, response: _Response, chunk: bytes) -> None:
        if not response.audio_started:
            response.audio_started = True
            await self.stop_ttfb_metrics()
            await self.push_frame(TTSStartedFrame())
            if self._flavor == "gemini":
                response.started = True
                await self.push_frame(LLMFullResponseStartFrame())
        response.audio_secs_generated += len(chunk) / 2 / S2S_OUTPUT_SAMPLE_RATE
        await self.push_frame(TTSAudioRawFrame(audio=chunk, sample_rate=S2S_OUTPUT_SAMPLE_RATE, num_channels=1))

    async def _push_output_transcript(self, response: _Response, text: str) -> None:
        """Like both services' ``_push_output_transcript(ion)_text_frames``."""
        response.text_generated += text
        self._llm_output_buffer += text
        llm_text_frame = LLMTextFrame(text)
        llm_text_frame.append_to_context = False
        await self.push_frame(llm_text_frame)
        tts_text_frame = TTSTextFrame(text, text_type=TextType.SENTENCE)
        tts_text_frame.includes_inter_frame_spaces = True
        await self.push_frame(tts_text_frame)

    @traced_stt
    async def _handle_user_transcription(
        self, transcript: str, is_final: bool, language: Language | None = None
    ) -> None:
        """Hook for Pipecat's STT tracing, as both real services have."""
        pass

    @traced_openai_realtime(operation="llm_response")
    async def _openai_response_done(self, evt: events.ResponseDone, *, response: _Response) -> None:
        """``_handle_evt_response_done``: usage, processing metric, TTSStopped, End."""
        usage = evt.response.usage
        if usage is not None:
            input_details = usage.input_token_details
            output_details = usage.output_token_details
            cached_details = input_details.cached_tokens_details if input_details else None
            await self._report(
                LLMTokenUsage(
                    prompt_tokens=usage.input_tokens or 0,
                    completion_tokens=usage.output_tokens or 0,
                    total_tokens=usage.total_tokens or 0,
                    cache_read_input_tokens=input_details.cached_tokens if input_details else None,
                    input_audio_tokens=input_details.audio_tokens if input_details else None,
                    output_audio_tokens=output_details.audio_tokens if output_details else None,
                    cache_read_input_audio_tokens=cached_details.audio_tokens if cached_details else None,
                ),
                self._ledger_entry(response),
            )
        await self.stop_processing_metrics()
        if evt.response.status == "cancelled":
            # The truncation forgot the audio response: no TTSStoppedFrame, but the end frame again.
            if self._repeat_end_frame_on_cancel and response.started:
                await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(TTSStoppedFrame())
            await self.push_frame(LLMFullResponseEndFrame())
        self._llm_output_buffer = ""

    @traced_gemini_live(operation="llm_response")
    async def _gemini_turn_complete(self, message: Any) -> None:
        """``_handle_msg_turn_complete``: TTSStopped and End, unless the turn was interrupted."""
        interrupted = bool(message.server_content.interrupted)
        self._llm_output_buffer = ""
        if not interrupted:
            await self.push_frame(TTSStoppedFrame())
            await self.push_frame(LLMFullResponseEndFrame())

    async def _report_usage(self, response: _Response) -> None:
        """``_handle_msg_usage_metadata`` (Gemini), after the turn is complete."""
        entry = self._ledger_entry(response)
        usage = entry["raw"]
        prompt_tokens = usage["prompt_token_count"] + usage["tool_use_prompt_token_count"]
        completion_tokens = usage["response_token_count"] + usage["thoughts_token_count"]
        await self._report(
            LLMTokenUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
                cache_read_input_tokens=usage["cached_content_token_count"],
                reasoning_tokens=usage["thoughts_token_count"],
                input_audio_tokens=usage["prompt_audio_tokens"],
                output_audio_tokens=usage["response_audio_tokens"],
                cache_read_input_audio_tokens=None,
            ),
            entry,
        )

    async def _report(self, tokens: LLMTokenUsage, entry: dict[str, Any]) -> None:
        entry["usage"] = tokens
        self.ledger.append(entry)
        await self.start_llm_usage_metrics(tokens)

    #
    # Usage
    #

    def _prompt_for(self, response: _Response) -> list[_Segment]:
        """The conversation re-sent for ``response``, in order (see the module docstring)."""
        instruction = self._settings.system_instruction
        segments = [_Segment("text", count_tokens(instruction) if isinstance(instruction, str) else 0)]
        for earlier in self._responses:
            segments.append(_Segment("audio", self._input_audio_tokens(earlier.user_audio_secs)))
            if self._flavor == "openai":
                segments.append(_Segment("text", count_tokens(earlier.text_generated)))
            segments.append(_Segment("audio", self._output_audio_tokens(earlier.audio_secs_generated)))
        segments.append(_Segment("audio", self._input_audio_tokens(response.user_audio_secs)))
        return [s for s in segments if s.tokens]

    def _input_audio_tokens(self, secs: float) -> int:
        if self._flavor == "openai":
            return math.ceil(round(secs / OPENAI_INPUT_AUDIO_SECS_PER_TOKEN, 6))
        return math.ceil(round(secs * GEMINI_AUDIO_TOKENS_PER_SEC, 6))

    def _output_audio_tokens(self, secs: float) -> int:
        if self._flavor == "openai":
            return math.ceil(round(secs / OPENAI_OUTPUT_AUDIO_SECS_PER_TOKEN, 6))
        return math.ceil(round(secs * GEMINI_AUDIO_TOKENS_PER_SEC, 6))

    def _ledger_entry(self, response: _Response) -> dict[str, Any]:
        """What was said and generated, with the provider's raw usage counts (key ``raw``)."""
        text_in = sum(s.tokens for s in response.prompt if s.modality == "text")
        audio_in = sum(s.tokens for s in response.prompt if s.modality == "audio")
        audio_out = self._output_audio_tokens(response.audio_secs_generated)
        raw: dict[str, Any]
        if self._flavor == "openai":
            cached_text, cached_audio = self._cached_split(response)
            text_out = count_tokens(response.text_generated)
            raw = {
                "input_tokens": text_in + audio_in,
                "output_tokens": text_out + audio_out,
                "total_tokens": text_in + audio_in + text_out + audio_out,
                "input_token_details": {
                    "text_tokens": text_in,
                    "audio_tokens": audio_in,
                    "cached_tokens": cached_text + cached_audio,
                    "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio},
                },
                "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
            }
        else:
            thoughts = self._thoughts(response)
            raw = {
                "prompt_token_count": text_in + audio_in,
                "tool_use_prompt_token_count": 0,
                "response_token_count": audio_out,
                "thoughts_token_count": thoughts,
                "cached_content_token_count": None,
                "total_token_count": text_in + audio_in + audio_out + thoughts,
                "prompt_text_tokens": text_in,
                "prompt_audio_tokens": audio_in,
                "response_audio_tokens": audio_out,
            }
        return {
            "response": response.index,
            "flavor": self._flavor,
            "model": self._settings.model,
            "user_turn": response.user_turn,
            "user_text": response.user_text,
            "user_audio_secs": round(response.user_audio_secs, 3),
            "reply": response.reply,
            "text_generated": response.text_generated,
            "assistant_audio_secs": round(response.audio_secs_generated, 3),
            "interrupted": response.interrupted,
            "raw": raw,
        }

    def _cached_split(self, response: _Response) -> tuple[int, int]:
        """OpenAI: cached text and audio tokens, by prefix order of the previous prompt's 64-token blocks."""
        if response.index == 0:
            return 0, 0
        previous = self._responses[response.index - 1]
        previous_tokens = sum(s.tokens for s in previous.prompt)
        remaining = OPENAI_CACHE_BLOCK_TOKENS * (previous_tokens // OPENAI_CACHE_BLOCK_TOKENS)
        cached = {"text": 0, "audio": 0}
        for segment in response.prompt:
            take = min(segment.tokens, remaining)
            cached[segment.modality] += take
            remaining -= take
            if not remaining:
                break
        return cached["text"], cached["audio"]

    def _thoughts(self, response: _Response) -> int:
        """Gemini thinking tokens of a response: seeded, drawn once."""
        if response.thoughts is None:
            low, high = self._thinking_tokens
            response.thoughts = self._rng.randint(low, high) if high > low else low
        return response.thoughts

    #
    # Provider messages, for Pipecat's tracing decorators
    #

    def _openai_event(self, response: _Response) -> events.ResponseDone:
        raw = self._ledger_entry(response)["raw"]
        details = raw["input_token_details"]
        usage = events.Usage(
            total_tokens=raw["total_tokens"],
            input_tokens=raw["input_tokens"],
            output_tokens=raw["output_tokens"],
            input_token_details=events.TokenDetails(
                cached_tokens=details["cached_tokens"],
                text_tokens=details["text_tokens"],
                audio_tokens=details["audio_tokens"],
                cached_tokens_details=events.CachedTokensDetails(**details["cached_tokens_details"]),
            ),
            output_token_details=events.TokenDetails(**raw["output_token_details"]),
        )
        item = events.ConversationItem(
            type="message",
            role="assistant",
            status="incomplete" if response.interrupted else "completed",
            content=[events.ItemContent(type="output_audio", transcript=response.text_generated)],
        )
        return events.ResponseDone(
            type="response.done",
            event_id=f"event_{uuid.uuid4().hex}",
            response=events.Response(
                id=f"resp_{response.index}",
                object="realtime.response",
                status="cancelled" if response.interrupted else "completed",
                output=[item],
                usage=usage,
            ),
        )

    def _gemini_message(self, response: _Response) -> SimpleNamespace:
        """A duck-typed ``LiveServerMessage`` with ``turn_complete`` and ``usage_metadata``."""
        self._llm_output_buffer = response.text_generated
        raw = self._ledger_entry(response)["raw"]

        def modalities(text: int, audio: int) -> list[SimpleNamespace]:
            counts = [("TEXT", text), ("AUDIO", audio)]
            return [SimpleNamespace(modality=SimpleNamespace(value=name), token_count=n) for name, n in counts if n]

        usage = SimpleNamespace(
            prompt_token_count=raw["prompt_token_count"],
            tool_use_prompt_token_count=None,
            response_token_count=raw["response_token_count"],
            thoughts_token_count=raw["thoughts_token_count"],
            cached_content_token_count=None,
            total_token_count=raw["total_token_count"],
            prompt_tokens_details=modalities(raw["prompt_text_tokens"], raw["prompt_audio_tokens"]),
            response_tokens_details=modalities(0, raw["response_audio_tokens"]),
            cache_tokens_details=None,
        )
        return SimpleNamespace(
            server_content=SimpleNamespace(turn_complete=True, interrupted=response.interrupted),
            usage_metadata=usage,
        )

    def _synthesize(self, duration_secs: float) -> bytes:
        """A quiet two-partial tone with a syllable-rate envelope (as the offline TTS)."""
        rate = S2S_OUTPUT_SAMPLE_RATE
        num_samples = max(1, round(duration_secs * rate))
        t = np.arange(num_samples) / rate
        tone = 0.7 * np.sin(2 * math.pi * 200.0 * t) + 0.3 * np.sin(2 * math.pi * 400.0 * t)
        envelope = 0.6 + 0.4 * np.sin(2 * math.pi * 3.5 * t)
        return (tone * envelope * self._amplitude).astype(np.int16).tobytes()


def usage_totals(ledger: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Sum the reported ``LLMTokenUsage`` fields of a ledger (None counts as 0).

    Args:
        ledger: :attr:`OfflineSpeechToSpeechService.ledger`.

    Returns:
        Field name -> sum over the responses.
    """
    names = (
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cache_read_input_tokens",
        "reasoning_tokens",
        "input_audio_tokens",
        "output_audio_tokens",
        "cache_read_input_audio_tokens",
    )
    return {name: sum(getattr(entry["usage"], name) or 0 for entry in ledger) for name in names}
