"""The Pipecat observer that turns a voice conversation into turns and priced work units.

Each unit of STT, LLM or TTS work becomes one record with real start and end times, its
text, TTFB, integer usage and cost. Records are kept for the end-of-call summary and, when
a writer is given, sent to Langfuse as generations under the turn in which the work
started, so usage that arrives after an interruption still lands on the right turn.

STT is one unit per service and turn: the turn's final transcripts merged, and the audio
streamed during the turn. Pipecat reports STT audio as deltas at billing events (e.g. each
final transcript); a delta is split over the turns in which its audio was streamed, in
proportion to the input audio the observer saw flow in each, so audio streamed while the bot
speaks stays in that turn and the call's total is exactly what was reported. An LLM stream
that ends without a usage report (cut by a barge-in) is estimated (:mod:`._estimate`) and
flagged ``usage_estimated``. Each generation's metadata says where its price came from.

A speech-to-speech (realtime) LLM service, one that says so in its metadata frame, speaks or
reports audio tokens, gets a ``speech-to-speech`` generation per response: its transcript of the
caller in, its own transcript out, its usage split by :func:`._usage.s2s_usage_details`, and
for a model billed by the minute, its share of the session. Every generation names the processor
that did the work, so several services of one kind (a ``ParallelPipeline``, a fallback) stay
apart; with Pipecat Flows followed (:meth:`VoiceObserver.follow_flow`), turns and LLM calls name
their node.

Function calls become ``tool`` observations under their turn. An ``ErrorFrame`` marks the failing
service's generation (else the turn) level ERROR; an errored observation is exported once it is
known whether its service worked again (``recovered``), or at the end of the call.

The handler runs in the observer's own task, once per frame (``observe_every_push=False``).
It is a type-table dispatch, to handlers typed by the frame class they take, that never
awaits and never raises: a failure is logged once and the call goes on.

Input is not trusted. A metric whose value is not a real measurement (NaN, infinite, negative,
or beyond :data:`MAX_SECONDS` / :data:`MAX_COUNT`) is ignored and logged at DEBUG, one check per
metric; frames in odd orders open what they need; frames after :meth:`VoiceObserver.finish` are
ignored, so nothing is started that would never end. ``tests/unit/test_observer_properties.py``
checks this against random sequences of frames.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar, cast

from langfuse.model import PromptClient
from loguru import logger
from pipecat.frames.frames import (
    AudioRawFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMServiceMetadataFrame,
    LLMTextFrame,
    MetricsFrame,
    StartFrame,
    TextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    MetricsData,
    ProcessingMetricsData,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.ai_service import AIService
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.services.tts_service import TTSService

from pipecat_langfuse import pricing
from pipecat_langfuse._audio import CallRecorder, wav_media
from pipecat_langfuse._estimate import counter_for
from pipecat_langfuse._failures import FailureLog
from pipecat_langfuse._langfuse import ObservationWriter
from pipecat_langfuse._turns import (
    KIND_ORDER,
    OUTPUT_FATE,
    ServiceError,
    ServiceKind,
    ToolCall,
    Turn,
    Unit,
    endpointing_cause,
    heard_text,
    join_text,
    output_fate,
    turn_scores,
    visible_chars,
)
from pipecat_langfuse._usage import AUDIO_USAGE_FIELDS, add_usage, llm_usage_details, s2s_scheme, s2s_usage_details
from pipecat_langfuse.pricing import ModelPrice, PriceTable
from pipecat_langfuse.summary import ConversationSummary, ModelUsage, TurnSummary

GENERATION_NAMES: dict[ServiceKind, str] = {
    "stt": "speech-to-text",
    "llm": "llm-completion",
    "tts": "text-to-speech",
    "s2s": "speech-to-speech",
}
"""Names of the generations, distinct from Pipecat's own ``stt``/``llm``/``tts``/``llm_response`` spans."""

USAGE_ESTIMATED = "usage_estimated"
"""Metadata flag of a generation whose usage was counted by the tracer, not reported by the provider."""
USAGE_MISSING = "usage_missing"
"""Metadata flag of an STT/TTS generation whose service did work but reported no usage."""
USAGE_ESTIMATE_METHOD = "usage_estimate_method"
"""Metadata: how estimated usage was counted (e.g. ``o200k_base``)."""

SETTLE_NS = 500_000_000
"""How long a finished unit waits for late metrics (e.g. TTFB after the transcript) before export."""

TURN_END_TIMEOUT_NS = 2_500_000_000
"""A turn ends this long after the bot stopped speaking, if the user has not spoken again.

Pipecat's ``TurnTrackingObserver`` default (``turn_end_timeout_secs``), so a turn has the same
boundaries whether Pipecat's tracing is on or off.
"""

MAX_SECONDS = 86_400.0
"""The longest duration (TTFB, processing time, VAD ``stop_secs``) or STT audio report that is kept.

A duration or an ``audio_seconds`` that is not a finite number in 0..1 day is not a measurement:
it is ignored (logged at DEBUG), so no NaN, infinity or negative time reaches a trace or a sum.
"""

MAX_COUNT = 2**53 - 1
"""The largest token or character count that is kept: the largest int the Langfuse SDK sends as a number.

A count that is not an int in 0..``MAX_COUNT`` is ignored (for an LLM usage report, the whole
report is), and logged at DEBUG: usage is never negative and never guessed. So is a report that
would take a generation's usage over ``MAX_COUNT`` (the SDK would send it as a string). Valid
counts are kept exactly, as ints.
"""

_SERVICE_KINDS: tuple[tuple[type[FrameProcessor], ServiceKind], ...] = (
    (STTService, "stt"),
    (LLMService, "llm"),
    (TTSService, "tts"),
)

_F = TypeVar("_F", bound=Frame)
_Handler = Callable[[FramePushed, Any], None]
"""A frame handler: ``handler(data, data.frame)``, typed by the frame class it is registered for."""


def _entry(frame_type: type[_F], handler: Callable[[FramePushed, _F], None]) -> tuple[type[Frame], _Handler]:
    """One row of the dispatch table; the type checker ties the handler's frame type to ``frame_type``."""
    return frame_type, handler


class VoiceObserver(BaseObserver):
    """Observes a Pipecat pipeline and records turns and STT/LLM/TTS work units.

    Args:
        prices: Price table used for ``cost_details`` and the summary.
        writer: Where to send observations; None records for the summary only.
        failures: Where failures are reported; the writer's own when there is a writer, so a
            call has one count.
        prompt: The Langfuse prompt the LLM's instructions come from; LLM generations link to it.
        client_costing: Send ``cost_details``; False leaves pricing to Langfuse (usage only).
    """

    def __init__(
        self,
        *,
        prices: PriceTable,
        writer: ObservationWriter | None = None,
        failures: FailureLog | None = None,
        prompt: PromptClient | None = None,
        client_costing: bool = True,
        recorder: CallRecorder | None = None,
    ) -> None:
        """Create the observer (it sees each frame once)."""
        super().__init__(observe_every_push=False)
        self._prices = prices
        self._writer = writer
        self._prompt = prompt
        self._client_costing = client_costing
        self.recorder = recorder
        """The call's audio, when it is recorded (``LANGFUSE_RECORD_AUDIO``)."""
        self.system_prompt_sha256: str | None = None
        """SHA-256 (hex) of the first LLM call's system prompt, once one was seen."""
        self.failures = failures or (writer.failures if writer is not None else FailureLog())
        entries = (
            _entry(StartFrame, self._on_start),
            _entry(InputAudioRawFrame, self._on_input_audio),
            _entry(TTSAudioRawFrame, self._on_tts_audio),
            _entry(UserStartedSpeakingFrame, self._on_user_started),
            _entry(UserStoppedSpeakingFrame, self._on_user_stopped),
            _entry(VADUserStoppedSpeakingFrame, self._on_vad_user_stopped),
            _entry(BotStartedSpeakingFrame, self._on_bot_started),
            _entry(BotStoppedSpeakingFrame, self._on_bot_stopped),
            _entry(TranscriptionFrame, self._on_transcription),
            _entry(LLMContextFrame, self._on_llm_context),
            _entry(LLMServiceMetadataFrame, self._on_llm_metadata),
            _entry(LLMFullResponseStartFrame, self._on_llm_start),
            _entry(LLMTextFrame, self._on_unit_text),
            _entry(LLMFullResponseEndFrame, self._on_unit_end),
            _entry(TTSStartedFrame, self._on_tts_start),
            _entry(TTSTextFrame, self._on_unit_text),
            _entry(TTSStoppedFrame, self._on_tts_stopped),
            _entry(InterruptionFrame, self._on_interruption),
            _entry(FunctionCallsStartedFrame, self._on_function_calls_started),
            _entry(FunctionCallInProgressFrame, self._on_function_call_started),
            _entry(FunctionCallResultFrame, self._on_function_call_result),
            _entry(FunctionCallCancelFrame, self._on_function_call_cancelled),
            _entry(ErrorFrame, self._on_error),
            _entry(MetricsFrame, self._on_metrics),
            _entry(EndFrame, self._on_end),
            _entry(CancelFrame, self._on_end),
        )
        self._handlers: dict[type[Frame], _Handler | None] = dict(entries)
        self._kinds: dict[int, ServiceKind | None] = {}
        self._offset_ns: int | None = None
        self._last_ns = 0
        self._turns: list[Turn] = []
        self._open: dict[str, Unit] = {}
        self._settling: deque[Unit] = deque()
        self._pending_llm_input: list[Any] | None = None
        self._pending_llm_tools: tuple[str, ...] = ()
        self._bot_speaking = False
        self._usage: dict[tuple[ServiceKind, str], ModelUsage] = {}
        self._input_audio_s = 0.0
        self._stt_units: dict[tuple[str, int], Unit] = {}
        self._stt_positions: dict[str, float] = {}
        self._stt_reported_s: dict[str, float] = {}
        self._segmented: dict[str, bool] = {}
        self._estimate_warned = False
        self._tools: dict[str, ToolCall] = {}
        self.errors: list[ServiceError] = []
        self._unrecovered: dict[str, list[ServiceError]] = {}
        self._held: list[Unit] = []
        self._missing_warned: set[str] = set()
        self._unpriced_warned: set[str] = set()
        self._finished = False
        self._aggregators: set[int] = set()
        self._awaiting_turn_end: list[Unit] = []
        self._speech_services: set[str] = set()
        self._unsplit_warned: set[str] = set()
        self._llm_input_taken: set[str] = set()
        self._session_marks: dict[str, int] = {}
        self._current_node: Callable[[], object] | None = None

    def follow_flow(self, current_node: Callable[[], object]) -> None:
        """Read the Pipecat Flows node with ``current_node()`` for each turn and LLM call."""
        self._current_node = current_node

    # -- Pipecat hooks -----------------------------------------------------------------

    async def on_push_frame(self, data: FramePushed) -> None:
        """Dispatch one pushed frame; never raises."""
        frame_type = type(data.frame)
        handler = self._handlers[frame_type] if frame_type in self._handlers else self._resolve(frame_type)
        if handler is None and not self._settling:
            return
        try:
            self._last_ns = max(self._last_ns, data.timestamp)
            if self._settling and data.timestamp - self._settling[0].end_ns >= SETTLE_NS:
                self._export_settled(data.timestamp)
            if handler is not None:
                handler(data, data.frame)
        except Exception as exc:  # noqa: BLE001 - an escaping exception would silence the observer
            self._report_failure(exc, data.frame)

    async def cleanup(self) -> None:
        """Finish the conversation when the worker tears down its observers."""
        self.finish()
        await super().cleanup()  # type: ignore[no-untyped-call]  # untyped in Pipecat

    # -- Public results ----------------------------------------------------------------

    def finish(self) -> None:
        """Close the open turn and units and export everything still held (idempotent).

        Frames pushed after this are ignored: the trace they would belong to has ended.
        """
        if self._finished:
            return
        self._finished = True
        self._handlers = {}  # frames after the end open nothing: every type now resolves to no handler
        try:
            for unit in list(self._open.values()):
                self._close(unit, unit.last_ns)
            self._export_settled(None)
            if self._turns:
                self._end_turn(self._turns[-1], self._last_ns, interrupted=self._bot_speaking)
            for key in list(self._stt_units):
                self._export_stt(key)
            for tool in list(self._tools.values()):
                self._export_tool(tool, self._last_ns, result=None, unfinished=True)
            for unit in self._held:
                self._export_unit(unit)
            self._held.clear()
            for unit in self._awaiting_turn_end:  # a turn that never ended: none is left, normally
                unit.turn.end_ns = unit.turn.end_ns if unit.turn.end_ns is not None else self._last_ns
                self._export_unit(unit)
            self._awaiting_turn_end.clear()
            for turn in self._turns:
                self._end_turn_span(turn)
        except Exception as exc:  # noqa: BLE001 - tracing must never break the caller
            self._report_failure(exc, None)

    def summary(self, conversation_id: str, trace_id: str | None = None) -> ConversationSummary:
        """The conversation so far: turns, usage and cost per model."""
        turns = tuple(
            TurnSummary(
                number=t.number,
                user_text=" ".join(t.user_text),
                bot_text="".join(t.bot_text).strip(),
                voice_to_voice_s=t.latency_s,
                interrupted=t.interrupted,
                heard_text=t.heard_text,
            )
            for t in self._turns
        )
        models = sorted(self._usage.values(), key=lambda m: KIND_ORDER.index(cast(ServiceKind, m.kind)))
        return ConversationSummary(
            conversation_id=conversation_id,
            trace_id=trace_id,
            turns=turns,
            models=tuple(models),
            errors=len(self.errors),
            unrecovered_errors=sum(not e.recovered for e in self.errors),
        )

    # -- Frame handlers --------------------------------------------------------------------

    def _resolve(self, frame_type: type[Frame]) -> _Handler | None:
        """Find the handler of the nearest handled base class, and cache the answer."""
        handler = next((self._handlers[base] for base in frame_type.__mro__[1:] if base in self._handlers), None)
        self._handlers[frame_type] = handler
        return handler

    def _kind(self, processor: FrameProcessor) -> ServiceKind | None:
        key = id(processor)
        if key not in self._kinds:
            self._kinds[key] = next((k for cls, k in _SERVICE_KINDS if isinstance(processor, cls)), None)
        return self._kinds[key]

    def _on_start(self, data: FramePushed, frame: StartFrame) -> None:
        if self._offset_ns is None:
            self._offset_ns = time.time_ns() - data.source.get_clock().get_time()
        if self.recorder is not None:
            self.recorder.start(data.timestamp)
        if not self._turns:
            self._start_turn(data.timestamp)

    def _on_user_started(self, data: FramePushed, frame: UserStartedSpeakingFrame) -> None:
        if isinstance(data.source, LLMUserAggregator) and id(data.source) not in self._aggregators:
            self._aggregators.add(id(data.source))
            data.source.add_event_handler("on_user_turn_stopped", self._on_user_turn_stopped)
        if _is_upstream_copy(data):
            return
        turn = self._current_turn(data.timestamp)
        if self._bot_speaking or turn.bot_spoke:
            self._end_turn(turn, data.timestamp, interrupted=self._bot_speaking)
            self._bot_speaking = False
            turn = self._start_turn(data.timestamp)
        if turn.user_started_ns is None:
            turn.user_started_ns = data.timestamp

    async def _on_user_turn_stopped(self, _aggregator: object, strategy: object, _message: object) -> None:
        """The user aggregator's event: which of its strategies ended the user's turn."""
        turn = next((t for t in reversed(self._turns) if t.user_started_ns is not None), None)
        if turn is not None and turn.endpointing_cause is None:
            turn.endpointing_cause = endpointing_cause(strategy)

    def _on_user_stopped(self, data: FramePushed, frame: UserStoppedSpeakingFrame) -> None:
        if _is_upstream_copy(data):
            return
        turn = self._current_turn(data.timestamp)
        if turn.user_stopped_ns is None:
            turn.user_stopped_ns = data.timestamp

    def _on_vad_user_stopped(self, data: FramePushed, frame: VADUserStoppedSpeakingFrame) -> None:
        if _is_upstream_copy(data):
            return
        # The VAD speaks up stop_secs after the user went quiet; it wins over the turn's own stop.
        stop_s = _seconds(frame.stop_secs) or 0.0
        turn = self._current_turn(data.timestamp)
        if turn.user_stopped_ns is None:  # a pause after the turn's end was decided is not its end
            turn.speech_end_ns = data.timestamp - int(stop_s * 1e9)

    def _on_bot_started(self, data: FramePushed, frame: BotStartedSpeakingFrame) -> None:
        if _is_upstream_copy(data) or self._bot_speaking:
            return
        self._bot_speaking = True
        turn = self._current_turn(data.timestamp)
        turn.bot_spoke = True
        turn.bot_started_ns = data.timestamp
        spoke_until = turn.speech_end_ns if turn.speech_end_ns is not None else turn.user_stopped_ns
        if turn.latency_s is None and spoke_until is not None:
            turn.latency_s = max(0.0, (data.timestamp - spoke_until) / 1e9)

    def _on_bot_stopped(self, data: FramePushed, frame: BotStoppedSpeakingFrame) -> None:
        if _is_upstream_copy(data) or not self._bot_speaking:
            return
        self._bot_speaking = False
        turn = self._current_turn(data.timestamp)
        turn.bot_stopped_ns = data.timestamp
        if turn.bot_started_ns is not None:
            turn.played_s += (data.timestamp - turn.bot_started_ns) / 1e9
            turn.bot_started_ns = None

    def _on_transcription(self, data: FramePushed, frame: TranscriptionFrame) -> None:
        kind = self._kind(data.source)
        if kind == "llm":  # a speech-to-speech model transcribes what it heard
            self._speech_services.add(data.source.name)
            self._current_turn(data.timestamp).user_text.append(frame.text)
            return
        if kind != "stt":
            return
        unit = self._stt_unit(data.source, self._current_turn(data.timestamp), data.timestamp)
        unit.text.append(frame.text)
        unit.last_text_ns = data.timestamp
        unit.turn.user_text.append(frame.text)
        if self._unrecovered:
            self._worked(unit.processor)

    def _on_input_audio(self, data: FramePushed, frame: InputAudioRawFrame) -> None:
        self._input_audio_s += _audio_seconds(frame)
        if self.recorder is not None:
            turn = self._current_turn(data.timestamp).number
            self.recorder.caller(frame.audio, frame.sample_rate, frame.num_channels, data.timestamp, turn)

    def _on_tts_audio(self, data: FramePushed, frame: TTSAudioRawFrame) -> None:
        kind = self._kind(data.source)
        if kind == "tts":
            unit: Unit | None = self._unit(data, "tts", late=True)
        elif kind == "llm":  # a speech-to-speech model speaks its reply itself
            self._speech_services.add(data.source.name)
            unit = self._open.get(data.source.name) or self._settled_unit(data.source.name, data.timestamp)
        else:
            return
        turn = unit.turn if unit is not None else self._current_turn(data.timestamp)
        seconds = _audio_seconds(frame)
        if unit is not None:
            unit.output_audio_s += seconds
            if unit.first_audio_ns is None:
                unit.first_audio_ns = data.timestamp
        turn.tts_audio_s += seconds
        if self.recorder is not None:
            self.recorder.bot(frame.audio, frame.sample_rate, frame.num_channels, data.timestamp, turn.number)

    def _settled_unit(self, processor: str, now_ns: int) -> Unit | None:
        """The unit of ``processor`` that closed less than :data:`SETTLE_NS` ago, if any."""
        return next(
            (u for u in reversed(self._settling) if u.processor == processor and now_ns - u.end_ns < SETTLE_NS),
            None,
        )

    def _on_llm_context(self, data: FramePushed, frame: LLMContextFrame) -> None:
        # Only the first push is observed, and processors may sit between the aggregator and the
        # LLM, so the latest context is kept for the next LLM unit whatever its destination.
        self._pending_llm_input = list(frame.context.get_messages())
        self._llm_input_taken.clear()
        self._pending_llm_tools = _tool_names(frame.context)

    def _on_llm_metadata(self, data: FramePushed, frame: LLMServiceMetadataFrame) -> None:
        if frame.is_realtime_service and self._kind(data.source) == "llm":
            self._speech_services.add(data.source.name)

    def _on_llm_start(self, data: FramePushed, frame: LLMFullResponseStartFrame) -> None:
        self._start_unit(data, context_id=None)

    def _on_tts_start(self, data: FramePushed, frame: TTSStartedFrame) -> None:
        kind = self._kind(data.source)
        if kind == "tts":
            self._start_unit(data, context_id=frame.context_id)
        elif kind == "llm":  # a speech-to-speech reply's audio: part of the open response
            self._speech_services.add(data.source.name)
            self._unit(data, "llm")

    def _on_tts_stopped(self, data: FramePushed, frame: TTSStoppedFrame) -> None:
        kind = self._kind(data.source)
        unit = self._open.get(data.source.name)
        # A speech-to-speech reply ends when its audio does (Gemini Live sends nothing else when cut off).
        if kind == "tts" or (kind == "llm" and unit is not None and unit.first_audio_ns is not None):
            self._on_unit_end(data, frame)

    def _start_unit(self, data: FramePushed, context_id: str | None) -> None:
        kind = self._kind(data.source)
        if kind is None or kind == "stt":
            return
        unit = self._open.get(data.source.name)
        # A speech-to-speech reply may start with its audio (Gemini Live's TTSStartedFrame): that is this response.
        started = kind == "llm" and unit is not None and (unit.text or unit.llm_usage is not None or unit.tool_calls)
        if unit is not None and (started or (kind == "tts" and unit.context_id not in (None, context_id))):
            self._close(unit, data.timestamp)  # the previous unit never saw its end frame
            unit = None
        if unit is None:
            unit = self._open_unit(data, kind)
        unit.context_id = unit.context_id or context_id

    def _on_interruption(self, data: FramePushed, frame: InterruptionFrame) -> None:
        if self.recorder is not None:
            self.recorder.cut_bot(data.timestamp)
        for unit in list(self._open.values()):
            if unit.kind == "tts":
                self._close(unit, data.timestamp)  # audio already synthesized for this reply is what was billed
            elif unit.kind == "llm":
                unit.cut = True  # its stream is being cancelled; its end frame follows
                if unit.processor in self._speech_services:
                    self._close(unit, data.timestamp)  # a spoken reply ends at the cut; its report may follow

    def _on_function_calls_started(self, data: FramePushed, frame: FunctionCallsStartedFrame) -> None:
        if _is_upstream_copy(data) or self._kind(data.source) != "llm":
            return
        unit = self._unit(data, "llm", late=True)
        unit.tool_calls.extend(
            {
                "id": call.tool_call_id,
                "type": "function",
                "function": {"name": call.function_name, "arguments": _json_text(call.arguments)},
            }
            for call in frame.function_calls
        )

    def _on_function_call_started(self, data: FramePushed, frame: FunctionCallInProgressFrame) -> None:
        if _is_upstream_copy(data) or frame.tool_call_id in self._tools:
            return
        self._tools[frame.tool_call_id] = ToolCall(
            call_id=frame.tool_call_id,
            name=frame.function_name,
            arguments=frame.arguments,
            processor=data.source.name,
            turn=self._current_turn(data.timestamp),
            start_ns=data.timestamp,
        )

    def _on_function_call_result(self, data: FramePushed, frame: FunctionCallResultFrame) -> None:
        if _is_upstream_copy(data) or (frame.properties is not None and not frame.properties.is_final):
            return  # an intermediate update of an async call: its final result ends it
        tool = self._tools.pop(frame.tool_call_id, None) or ToolCall(
            call_id=frame.tool_call_id,
            name=frame.function_name,
            arguments=frame.arguments,
            processor=data.source.name,
            turn=self._current_turn(data.timestamp),
            start_ns=data.timestamp,
        )
        self._export_tool(tool, data.timestamp, result=frame.result, error=frame.error)

    def _on_function_call_cancelled(self, data: FramePushed, frame: FunctionCallCancelFrame) -> None:
        tool = None if _is_upstream_copy(data) else self._tools.pop(frame.tool_call_id, None)
        if tool is not None:
            self._export_tool(tool, data.timestamp, result=None, cancelled=True)

    def _on_error(self, data: FramePushed, frame: ErrorFrame) -> None:
        """Mark the failing service's unit (else the turn) and wait to learn whether it recovers."""
        processor = frame.processor if isinstance(frame.processor, FrameProcessor) else data.source
        category = frame.category.value if frame.category is not None else None
        error = ServiceError(processor.name, str(frame.error), bool(frame.fatal), category, at_ns=data.timestamp)
        self.errors.append(error)
        self._unrecovered.setdefault(error.processor, []).append(error)
        if category == "application" and any(t.processor == processor.name for t in self._tools.values()):
            return  # a tool handler raised: its tool observation says so, with the error its result carries
        kind = self._kind(processor)
        turn = self._current_turn(data.timestamp)
        unit: Unit | None = None
        if kind == "stt":
            unit = self._stt_units.get((processor.name, turn.number))
        elif kind is not None:
            unit = self._open.get(processor.name) or next(
                (
                    u
                    for u in reversed(self._settling)
                    if u.processor == processor.name and data.timestamp - u.end_ns < SETTLE_NS
                ),
                None,
            )
        (unit.errors if unit is not None else turn.errors).append(error)

    def _worked(self, processor: str) -> None:
        """``processor`` did work successfully: its earlier errors recovered."""
        errors = self._unrecovered.pop(processor, None)
        if not errors:
            return
        for error in errors:
            error.recovered = True
        for unit in [u for u in self._held if all(e.recovered for e in u.errors)]:
            self._held.remove(unit)
            self._export_unit(unit)
        for turn in self._turns:
            if turn.pending_end is not None and all(e.recovered for e in turn.errors):
                self._end_turn_span(turn)
        self._export_complete_stt()

    def _on_unit_text(self, data: FramePushed, frame: TextFrame) -> None:
        kind = self._kind(data.source)
        if kind is None or kind == "stt":
            return
        if kind == "llm" and isinstance(frame, TTSTextFrame):  # a speech-to-speech model's words, as spoken
            turn = self._current_turn(data.timestamp)
            turn.spoken.append((frame.text, turn.tts_audio_s, frame.pts))
            return
        unit = self._unit(data, kind)
        unit.text.append(frame.text)
        if kind == "llm":
            unit.turn.bot_text.append(frame.text)
        else:
            unit.turn.spoken.append((frame.text, unit.turn.tts_audio_s, frame.pts))
        if self._unrecovered:
            self._worked(unit.processor)

    def _on_unit_end(self, data: FramePushed, frame: Frame) -> None:
        kind = self._kind(data.source)
        unit = self._open.get(data.source.name) if kind in ("llm", "tts") else None
        if unit is not None:
            self._close(unit, data.timestamp)

    def _on_metrics(self, data: FramePushed, frame: MetricsFrame) -> None:
        kind = self._kind(data.source)
        if kind is None:
            return
        for item in frame.data:
            self._apply_metric(data, kind, item)

    def _on_end(self, data: FramePushed, frame: Frame) -> None:
        """Nothing to do: handling End/Cancel is what makes on_push_frame record the call's last time."""

    # -- Units ---------------------------------------------------------------------------------

    def _apply_metric(self, data: FramePushed, kind: ServiceKind, item: MetricsData) -> None:
        """Add one metric to its unit; an invalid value (see :data:`MAX_SECONDS`, :data:`MAX_COUNT`) is ignored."""
        if isinstance(item, TTFBMetricsData):
            ttfb_s = _seconds(item.value)
            if ttfb_s is None:
                _ignore(item)
            elif ttfb_s > 0:
                unit = self._metric_unit(data, kind, item.model)
                if unit.ttfb_s is None:
                    unit.ttfb_s = ttfb_s
                    unit.turn.ttfb_s.setdefault(kind, ttfb_s)
        elif isinstance(item, ProcessingMetricsData):
            processing_s = _seconds(item.value)
            if processing_s is None:
                _ignore(item)
            else:
                self._metric_unit(data, kind, item.model).processing_s = processing_s
        elif isinstance(item, LLMUsageMetricsData):
            if not _is_valid_token_usage(item.value):
                _ignore(item)
                return
            unit = self._unit(data, kind, item.model, late=True)
            usage = item.value if unit.llm_usage is None else add_usage(unit.llm_usage, item.value)
            if max(llm_usage_details(usage).values()) > MAX_COUNT:
                _ignore(item)
            else:
                unit.llm_usage = usage
                if self._unrecovered:
                    self._worked(unit.processor)
        elif isinstance(item, TTSUsageMetricsData):
            characters = _count(item.value)
            if characters is None:
                _ignore(item)
                return
            unit = self._unit(data, kind, item.model, late=True)
            if unit.characters + characters > MAX_COUNT:
                _ignore(item)
            else:
                unit.characters += characters
                unit.requests += 1
                if self._unrecovered and characters:
                    self._worked(unit.processor)
        elif isinstance(item, STTUsageMetricsData) and kind == "stt":
            audio_s = _seconds(item.value.audio_seconds)
            if audio_s is None:
                _ignore(item)
            else:
                self._allocate_stt_audio(data, audio_s, item.model)
                if self._unrecovered:
                    self._worked(data.source.name)

    def _metric_unit(self, data: FramePushed, kind: ServiceKind, model: str | None) -> Unit:
        """The unit a TTFB or processing metric belongs to: the turn's STT unit, or the (just) open unit."""
        if kind == "stt":
            unit = self._stt_unit(data.source, self._current_turn(data.timestamp), data.timestamp)
            if model and not unit.model:
                unit.model = model
            return unit
        return self._unit(data, kind, model, late=True)

    # -- STT: one unit per service and turn ----------------------------------------------

    def _stt_unit(self, source: FrameProcessor, turn: Turn, now_ns: int) -> Unit:
        key = (source.name, turn.number)
        unit = self._stt_units.get(key)
        if unit is None:
            start_ns = turn.user_started_ns if turn.user_started_ns is not None else now_ns
            unit = Unit(
                kind="stt",
                processor=source.name,
                model=_settings_model(source),
                turn=turn,
                start_ns=min(start_ns, now_ns),
                last_ns=now_ns,
                source=source,
            )
            self._stt_units[key] = unit
        unit.last_ns = max(unit.last_ns, now_ns)
        return unit

    def _allocate_stt_audio(self, data: FramePushed, audio_s: float, model: str | None) -> None:
        """Split one STT usage delta over the turns whose input audio it covers.

        The delta covers the input audio seen since the service's previous report. A segmented
        service (it sends only the speech it was given at the end of an utterance), or a delta
        with no input audio seen, goes whole to the current turn. Milliseconds are rounded on the
        service's running total, so the turns add up to exactly the reported audio.
        """
        source = data.source
        name = source.name
        now_s = self._input_audio_s
        since_s = self._stt_positions.get(name, 0.0)
        self._stt_positions[name] = now_s
        current = self._current_turn(data.timestamp)
        shares: list[tuple[Turn, float]] = []
        if now_s > since_s and not self._is_segmented(source):
            end_s = now_s
            for turn in reversed(self._turns):
                start_s = max(turn.audio_mark_s, since_s)
                if end_s > start_s:
                    shares.append((turn, audio_s * (end_s - start_s) / (now_s - since_s)))
                end_s = min(end_s, turn.audio_mark_s)
                if end_s <= since_s:
                    break
            shares.reverse()
        if not shares:
            shares = [(current, audio_s)]
        reported_s = self._stt_reported_s.get(name, 0.0)
        for turn, share_s in shares:
            unit = self._stt_unit(source, turn, data.timestamp)
            if model and not unit.model:
                unit.model = model
            before_ms = round(reported_s * 1000)
            reported_s += share_s
            unit.audio_seconds += share_s
            unit.audio_ms += round(reported_s * 1000) - before_ms
            unit.requests += turn is current
        self._stt_reported_s[name] = reported_s
        self._export_complete_stt()

    def _is_segmented(self, source: FrameProcessor) -> bool:
        name = source.name
        if name not in self._segmented:
            self._segmented[name] = isinstance(source, SegmentedSTTService)
        return self._segmented[name]

    def _export_complete_stt(self) -> None:
        """Export the STT units of ended turns whose audio has all been reported."""
        for key, unit in list(self._stt_units.items()):
            turn = unit.turn
            if turn.end_ns is None or unit.source is None or not all(e.recovered for e in unit.errors):
                continue
            following = self._turns[turn.number] if turn.number < len(self._turns) else None
            if self._is_segmented(unit.source) or (
                following is not None and self._stt_positions.get(unit.processor, 0.0) >= following.audio_mark_s
            ):
                self._export_stt(key)

    def _export_stt(self, key: tuple[str, int]) -> None:
        unit = self._stt_units.pop(key)
        turn = unit.turn
        if unit.last_text_ns is not None:
            unit.end_ns = max(unit.last_text_ns, unit.start_ns)
        else:  # audio only (streamed while nobody spoke): the turn's span
            unit.start_ns = min(unit.start_ns, turn.start_ns)
            unit.end_ns = max(turn.end_ns if turn.end_ns is not None else unit.last_ns, unit.start_ns)
        self._export_unit(unit)

    def _unit(self, data: FramePushed, kind: ServiceKind, model: str | None = None, *, late: bool = False) -> Unit:
        """The unit this activity of ``data.source`` belongs to: the open one, else a new one.

        With ``late`` (metrics), a unit that closed less than :data:`SETTLE_NS` ago is also taken.
        """
        name = data.source.name
        unit = self._open.get(name)
        if unit is None:
            unit = next((u for u in reversed(self._settling) if u.processor == name), None) if late else None
            if not late or unit is None or data.timestamp - unit.end_ns >= SETTLE_NS:
                unit = self._open_unit(data, kind)
        unit.last_ns = max(unit.last_ns, data.timestamp)
        if model and not unit.model:
            unit.model = model
        return unit

    def _open_unit(self, data: FramePushed, kind: ServiceKind) -> Unit:
        unit = Unit(
            kind=kind,
            processor=data.source.name,
            model=_settings_model(data.source),
            turn=self._current_turn(data.timestamp),
            start_ns=data.timestamp,
            last_ns=data.timestamp,
            input=self._llm_input(data.source) if kind == "llm" else None,
            tools=self._pending_llm_tools if kind == "llm" else (),
            source=data.source,
            flow_node=self._flow_node() if kind == "llm" else None,
        )
        self._open[unit.processor] = unit
        return unit

    def _llm_input(self, source: FrameProcessor) -> list[Any] | None:
        """The prompt of an LLM call: the latest context, after the service's system instruction if any.

        Each LLM it reaches (two in a ``ParallelPipeline``) gets it once; a call with no new
        context has no input.
        """
        messages = self._pending_llm_input if source.name not in self._llm_input_taken else None
        self._llm_input_taken.add(source.name)
        instruction = getattr(source.settings, "system_instruction", None) if isinstance(source, LLMService) else None
        if isinstance(instruction, str) and instruction:
            return [{"role": "system", "content": instruction}, *(messages or [])]
        return messages

    def _close(self, unit: Unit, end_ns: int) -> None:
        self._open.pop(unit.processor, None)
        unit.end_ns = max(end_ns, unit.start_ns)
        if unit.kind == "llm":
            unit.text_offset = unit.turn.llm_chars
            unit.turn.llm_chars += visible_chars(join_text(unit))
            if unit.source is not None:
                unit.response_model = _response_model(unit.source)
        self._settling.append(unit)

    def _export_settled(self, now_ns: int | None) -> None:
        """Export the units whose settle time has passed (all of them when ``now_ns`` is None)."""
        while self._settling and (now_ns is None or now_ns - self._settling[0].end_ns >= SETTLE_NS):
            unit = self._settling.popleft()
            if now_ns is not None and not all(e.recovered for e in unit.errors):
                self._held.append(unit)  # exported once it is known whether its service recovered
            else:
                self._export_unit(unit)

    def _export_unit(self, unit: Unit) -> None:
        if unit.kind == "llm" and unit.turn.end_ns is None:
            self._awaiting_turn_end.append(unit)  # its fate (spoken, cut off…) is known when its turn ends
            return
        kind: ServiceKind = "s2s" if unit.kind == "llm" and self._is_speech(unit) else unit.kind
        service = type(unit.source).__name__ if unit.source is not None else None
        names = [name for name in (unit.model, unit.response_model) if name] or [_service_name(unit)]
        price = next((p for name in names if (p := self._prices.find(name, kind, service=service)) is not None), None)
        model = names[0]
        metadata: dict[str, Any] = {"processor": unit.processor, "turn": unit.turn.number}
        if unit.flow_node is not None:
            metadata["flow_node"] = unit.flow_node
        if kind == "s2s":
            usage = self._speech_usage(unit, model, price, metadata)
        else:
            usage = self._billed_usage(unit, model, price, metadata)
        cost = price.cost(usage) if price is not None and usage else None
        if price is None and kind in ("stt", "tts") and usage and model not in self._unpriced_warned:
            self._unpriced_warned.add(model)
            logger.warning(
                f"No price for {kind.upper()} model '{model}': its usage is recorded without cost. "
                "Add it to your PRICING_FILE (see README, Pricing)."
            )
        key = (kind, model)
        totals = self._usage.get(key) or ModelUsage(kind=kind, model=model)
        self._usage[key] = totals.add(usage, cost, estimated=bool(metadata.get(USAGE_ESTIMATED)))
        if self._writer is None:
            return
        if unit.response_model:
            metadata["response_model"] = unit.response_model
        metadata["price_source"] = price.provenance if price is not None else pricing.PROVENANCE_UNPRICED
        if price is not None:
            metadata["price_entry"] = price.name
            metadata["price_date"] = price.date
        if unit.ttfb_s is not None and kind != "llm":  # from the end of speech, for a speech-to-speech reply
            metadata["ttfb_s"] = round(unit.ttfb_s, 4)
        if kind == "s2s":
            metadata["output_audio_s"] = round(unit.output_audio_s, 6)
        if unit.processing_s is not None:
            metadata["processing_s"] = round(unit.processing_s, 4)
        if unit.kind == "stt":
            metadata["audio_seconds"] = round(unit.audio_seconds, 6)
            metadata["transcripts"] = len(unit.text)
        if unit.tools:
            metadata["tools"] = list(unit.tools)
        if unit.kind == "llm":
            metadata[OUTPUT_FATE] = output_fate(unit)
        prompt_hash = _system_prompt_hash(unit.input) if unit.kind == "llm" else None
        if prompt_hash is not None:
            metadata["system_prompt_sha256"] = prompt_hash
            if self.system_prompt_sha256 is None:
                self.system_prompt_sha256 = prompt_hash
        text = join_text(unit)
        level, status_message = None, None
        if unit.errors:
            first = unit.errors[0]
            level, status_message = "ERROR", first.message
            metadata["error"] = first.as_metadata()
        output: Any = text if unit.kind != "tts" and (text or not unit.errors) else None
        if unit.tool_calls:
            output = {"role": "assistant", "content": text or None, "tool_calls": unit.tool_calls}
        if kind == "s2s":  # it heard the caller: the input is what it transcribed of the turn
            generation_input: Any = " ".join(unit.turn.user_text) or None
        else:
            generation_input = unit.input if unit.kind == "llm" else (text if unit.kind == "tts" else None)
        self._writer.generation(
            parent=unit.turn.span,
            name=GENERATION_NAMES[kind],
            start_ns=self._epoch(unit.start_ns),
            end_ns=self._epoch(unit.end_ns),
            completion_start_ns=(
                self._epoch(max(unit.first_audio_ns, unit.start_ns))  # a reply in speech starts with its audio
                if kind == "s2s" and unit.first_audio_ns is not None
                else self._epoch(unit.start_ns) + int(unit.ttfb_s * 1e9)
                if kind == "llm"
                and unit.ttfb_s is not None
                and unit.text
                # a first token after the end is not one (Pipecat stops a failed request's TTFB late)
                and unit.start_ns + int(unit.ttfb_s * 1e9) <= unit.end_ns
                else None
            ),
            model=model,
            model_parameters=_model_parameters(unit.source) or None,
            input=generation_input,
            output=output,
            usage_details=usage or None,
            cost_details=cost if self._client_costing else None,
            metadata=metadata,
            level=level,
            status_message=status_message,
            prompt=self._prompt if unit.kind == "llm" else None,
            adopt_llm_span=kind == "llm",
            scores={OUTPUT_FATE: metadata[OUTPUT_FATE]} if unit.kind == "llm" else None,
        )

    def _export_tool(
        self,
        tool: ToolCall,
        end_ns: int,
        *,
        result: Any,
        error: str | None = None,
        cancelled: bool = False,
        unfinished: bool = False,
    ) -> None:
        """One ``tool`` observation: the call's arguments in, its result out, under its turn."""
        self._tools.pop(tool.call_id, None)
        if self._writer is None:
            return
        metadata: dict[str, Any] = {"tool_call_id": tool.call_id, "turn": tool.turn.number, "processor": tool.processor}
        level, status_message = None, None
        if error:
            level, status_message = "ERROR", str(error)
        elif cancelled:
            level, status_message = "WARNING", "cancelled"
            metadata["cancelled"] = True
        elif unfinished:
            level, status_message = "WARNING", "no result before the call ended"
        self._writer.tool(
            parent=tool.turn.span,
            name=tool.name,
            start_ns=self._epoch(tool.start_ns),
            end_ns=self._epoch(max(end_ns, tool.start_ns)),
            input=tool.arguments,
            output=result,
            metadata=metadata,
            level=level,
            status_message=status_message,
        )

    def _is_speech(self, unit: Unit) -> bool:
        """Whether an LLM unit is a speech-to-speech model's: realtime service, audio out, or audio tokens."""
        usage = unit.llm_usage
        return (
            unit.processor in self._speech_services
            or unit.output_audio_s > 0
            or (usage is not None and any(getattr(usage, name, None) is not None for name in AUDIO_USAGE_FIELDS))
        )

    def _speech_usage(
        self, unit: Unit, model: str, price: ModelPrice | None, metadata: dict[str, Any]
    ) -> dict[str, int]:
        """A speech-to-speech response's usage: disjoint text and audio buckets, and its share of a timed session."""
        reported = unit.llm_usage
        usage = s2s_usage_details(reported, s2s_scheme(model, price)) if reported is not None else {}
        if reported is not None and reported.reasoning_tokens:
            metadata["reasoning_tokens"] = reported.reasoning_tokens  # inside the text output tokens
        if reported is not None and all(getattr(reported, name, None) is None for name in AUDIO_USAGE_FIELDS):
            # The service reports text and speech together (Nova Sonic): all of it counts as text.
            metadata[USAGE_ESTIMATED] = True
            metadata[USAGE_ESTIMATE_METHOD] = "audio and text not split by the service: all counted as text"
            if unit.processor not in self._unsplit_warned:
                self._unsplit_warned.add(unit.processor)
                logger.warning(
                    f"{unit.processor} reports its speech and text tokens together, so they are recorded as text "
                    f"tokens and priced at text rates (flagged '{USAGE_ESTIMATED}'): speech costs more."
                )
        if price is not None and pricing.USAGE_SESSION_MS in price.unit_prices:
            usage[pricing.USAGE_SESSION_MS] = self._session_share_ms(unit)
        elif not usage and (unit.text or unit.output_audio_s) and not unit.errors:
            self._flag_missing_usage(unit, metadata)
        return usage

    def _session_share_ms(self, unit: Unit) -> int:
        """Milliseconds of a timed session billed to this response: since the last share, to its turn's end.

        The first share starts with the call and the last runs to its end; the shares are rounded
        on their running total, so they add up to the session.
        """
        origin = self._turns[0].start_ns
        since = self._session_marks.get(unit.processor, origin)
        if self._finished and unit.turn is self._turns[-1]:
            until = self._last_ns  # the session lasts until the call ends, not only its last turn
        else:
            until = unit.turn.end_ns if unit.turn.end_ns is not None else unit.end_ns
        until = max(since, until)
        self._session_marks[unit.processor] = until
        return round((until - origin) / 1e6) - round((since - origin) / 1e6)

    def _billed_usage(
        self, unit: Unit, model: str, price: ModelPrice | None, metadata: dict[str, Any]
    ) -> dict[str, int]:
        """The usage the provider bills for ``unit``: reported, else counted (and flagged in ``metadata``)."""
        usage = _usage_details(unit)
        if unit.kind == "llm" and unit.llm_usage is None and unit.errors and not unit.text:
            usage = {}  # the request failed: nothing was generated, nothing billed
        elif unit.kind == "llm" and unit.llm_usage is None:
            usage = self._estimate_llm_usage(unit, model, metadata)
        elif unit.kind == "llm" and unit.cut and _guesses_output_when_cut(unit.source):
            usage = self._count_llm_output(unit, model, usage, metadata)
        elif price is not None and price.audio_tokens_per_second is not None:
            usage = _with_audio_tokens(unit, price, usage, metadata)
        if price is not None and pricing.USAGE_REQUESTS in price.unit_prices:
            usage[pricing.USAGE_REQUESTS] = unit.requests
        if not usage and unit.text and not unit.errors:
            self._flag_missing_usage(unit, metadata)
        return usage

    def _flag_missing_usage(self, unit: Unit, metadata: dict[str, Any]) -> None:
        """Work was done (there is text) but its service reported no usage: say so, never a silent zero."""
        metadata[USAGE_MISSING] = True
        if unit.processor not in self._missing_warned:
            self._missing_warned.add(unit.processor)
            logger.warning(
                f"{unit.processor} did work but reported no usage, so it is recorded without usage or cost "
                f"(flagged '{USAGE_MISSING}'). Enable usage metrics: PipelineParams(enable_metrics=True, "
                "enable_usage_metrics=True); a service that never reports usage cannot be priced."
            )

    def _count_llm_output(
        self, unit: Unit, model: str, usage: dict[str, int], metadata: dict[str, Any]
    ) -> dict[str, int]:
        """A cut stream's output counted with the tokenizer, in place of the service's own guess.

        Its prompt (and cache) counts are the provider's, reported when the stream started.
        """
        counter = counter_for(model)
        output = counter.count(join_text(unit))
        usage = dict(usage)
        usage[pricing.USAGE_TOTAL] += output - usage[pricing.USAGE_OUTPUT]
        usage[pricing.USAGE_OUTPUT] = output
        usage.pop(pricing.USAGE_OUTPUT_REASONING_TOKENS, None)
        metadata[USAGE_ESTIMATED] = True
        metadata[USAGE_ESTIMATE_METHOD] = f"output: {counter.method}; input: reported"
        return usage

    def _estimate_llm_usage(self, unit: Unit, model: str, metadata: dict[str, Any]) -> dict[str, int]:
        """Usage of an LLM call the provider never reported (a cut stream): counted, and flagged."""
        counter = counter_for(model)
        prompt = counter.chat_prompt(unit.input) if unit.input else 0  # no prompt seen: none counted
        output = counter.count(join_text(unit))
        metadata[USAGE_ESTIMATED] = True
        metadata[USAGE_ESTIMATE_METHOD] = counter.method
        if not self._estimate_warned:
            self._estimate_warned = True
            logger.warning(
                f"LLM call of '{model}' ended without a usage report (a stream cut by an interruption is "
                f"billed but never reported): its usage is estimated with {counter.method} and flagged "
                f"'{USAGE_ESTIMATED}' in the generation's metadata."
            )
        return {pricing.USAGE_INPUT: prompt, pricing.USAGE_OUTPUT: output, pricing.USAGE_TOTAL: prompt + output}

    # -- Turns -------------------------------------------------------------------------------

    def _current_turn(self, now_ns: int) -> Turn:
        return self._turns[-1] if self._turns else self._start_turn(now_ns)

    def _flow_node(self) -> str | None:
        """The current Pipecat Flows node, when the tracer follows a flow (never raises)."""
        if self._current_node is None:
            return None
        try:
            node = self._current_node()
        except Exception as exc:  # noqa: BLE001 - a flow manager's failure is not the call's
            self._report_failure(exc, None)
            return None
        return node if isinstance(node, str) and node else None

    def _start_turn(self, start_ns: int) -> Turn:
        turn = Turn(
            number=len(self._turns) + 1,
            start_ns=start_ns,
            audio_mark_s=self._input_audio_s,
            flow_node=self._flow_node(),
        )
        self._turns.append(turn)
        if self._writer is not None:
            turn.span = self._writer.start_turn(number=turn.number, start_ns=self._epoch(start_ns))
        return turn

    def _end_turn(self, turn: Turn, end_ns: int, *, interrupted: bool) -> None:
        if turn.end_ns is not None:
            return
        if not interrupted and turn.bot_stopped_ns is not None:
            end_ns = min(end_ns, turn.bot_stopped_ns + TURN_END_TIMEOUT_NS)  # as Pipecat's turn tracking does
        turn.end_ns, turn.interrupted = end_ns, interrupted
        if turn.bot_started_ns is not None:  # the bot was speaking until now
            turn.played_s += max(0, end_ns - turn.bot_started_ns) / 1e9
            turn.bot_started_ns = None
        if turn.spoken:
            turn.heard_text = heard_text(turn.spoken, turn.played_s, end_ns if interrupted else None)
        for unit in [u for u in self._awaiting_turn_end if u.turn is turn]:
            self._awaiting_turn_end.remove(unit)
            self._export_unit(unit)
        self._export_complete_stt()
        latency = f"{turn.latency_s:.2f} s" if turn.latency_s is not None else "-"
        logger.info(f"Turn {turn.number} ended: voice-to-voice {latency}{', interrupted' if interrupted else ''}.")
        if self._writer is None:
            return
        metadata: dict[str, Any] = {"turn": turn.number, "interrupted": interrupted}
        if turn.flow_node is not None:
            metadata["flow_node"] = turn.flow_node
        next_node = self._flow_node()
        if next_node is not None and next_node != turn.flow_node:
            metadata["flow_next_node"] = next_node
        if turn.latency_s is not None:
            metadata["voice_to_voice_latency_s"] = round(turn.latency_s, 4)
        scores = turn_scores(turn)
        if "endpointing_delay_ms" in scores:
            metadata["endpointing_delay_ms"] = scores["endpointing_delay_ms"]
        if turn.endpointing_cause is not None:
            metadata["endpointing_cause"] = turn.endpointing_cause
        if self.recorder is not None:  # of the bot, what played before the caller cut in
            played = turn.played_s if interrupted else None
            caller_wav, bot_wav = self.recorder.turn_audio(turn.number, bot_seconds=played)
            for key, wav in (("caller_audio", caller_wav), ("bot_audio", bot_wav)):
                if wav is not None:
                    metadata[key] = wav_media(wav)
        generated = "".join(turn.bot_text).strip()
        if turn.heard_text is not None and interrupted:
            metadata["generated_text"] = generated  # the output is what the caller heard of it
        turn.pending_end = {
            "end_ns": self._epoch(end_ns),
            "input": " ".join(turn.user_text),
            "output": turn.heard_text if turn.heard_text is not None else generated,
            "metadata": metadata,
            "scores": scores,
        }
        if all(e.recovered for e in turn.errors):
            self._end_turn_span(turn)

    def _end_turn_span(self, turn: Turn) -> None:
        """End the turn's span (held while one of its errors may still recover)."""
        pending, turn.pending_end = turn.pending_end, None
        if pending is None or self._writer is None:
            return
        if turn.errors:
            pending["metadata"]["errors"] = [{"processor": e.processor, **e.as_metadata()} for e in turn.errors]
            pending["level"], pending["status_message"] = "ERROR", turn.errors[0].message
        self._writer.end_turn(turn.span, **pending)

    # -- Helpers -----------------------------------------------------------------------------

    def _epoch(self, pipeline_ns: int) -> int:
        """Wall-clock nanoseconds since the epoch of a pipeline-clock timestamp."""
        if self._offset_ns is None:
            self._offset_ns = time.time_ns() - self._last_ns
        return self._offset_ns + pipeline_ns

    def _report_failure(self, exc: Exception, frame: Frame | None) -> None:
        self.failures.report(f"observing {frame}" if frame is not None else "finishing the conversation", exc)


def _model_parameters(service: FrameProcessor | None) -> dict[str, Any]:
    """The service's settings (voice, language, temperature…) as plain values: the generation's model parameters.

    What Pipecat's own ``stt`` / ``llm`` / ``tts`` spans record as ``settings.*`` and
    ``gen_ai.request.*``, less the model and system instruction (the generation's model and
    input), unset values, and Pipecat's own behaviour switches.
    """
    given = getattr(getattr(service, "settings", None), "given_fields", None)
    if not callable(given):
        return {}
    try:
        fields = given()
    except Exception:  # noqa: BLE001 - a service's own settings code must not cost the generation
        return {}
    plain: dict[str, Any] = {}
    for key, value in fields.items():
        value = value.value if isinstance(value, enum.Enum) else value
        if key not in _SETTINGS_LEFT_OUT and isinstance(value, str | int | float | bool):
            plain[key] = value
    return plain


_SETTINGS_LEFT_OUT = frozenset(
    {
        "model",
        "system_instruction",
        # LLMSettings fields that steer Pipecat, not the model.
        "filter_incomplete_user_turns",
        "user_turn_completion_config",
        "use_provider_thinking_default",
    }
)


def _tool_names(context: Any) -> tuple[str, ...]:
    """Names of the standard tools an LLM context offers."""
    tools = getattr(context, "tools", None)
    return tuple(getattr(tool, "name", "?") for tool in getattr(tools, "standard_tools", None) or ())


def _settings_model(processor: FrameProcessor) -> str | None:
    """The model a service is configured with (``settings.model``), if it names one.

    Metrics carry the same name (Pipecat syncs it from the settings), but a unit that gets no
    metric would otherwise be named after its service class.
    """
    model = processor.settings.model if isinstance(processor, AIService) else None
    return model if isinstance(model, str) and model else None


def _seconds(value: object) -> float | None:
    """``value`` as seconds if it is a real duration: a finite number in 0..:data:`MAX_SECONDS`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0 <= value <= MAX_SECONDS else None


def _count(value: object) -> int | None:
    """``value`` if it is a real count: an int in 0..:data:`MAX_COUNT`."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT else None


def _is_valid_token_usage(usage: object) -> bool:
    """Whether every token count of an LLM usage report is a real count (optional ones may be None)."""
    if not isinstance(usage, LLMTokenUsage):
        return False
    required = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    optional = (usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.reasoning_tokens)
    return all(_count(v) is not None for v in required) and all(v is None or _count(v) is not None for v in optional)


def _ignore(item: MetricsData) -> None:
    """Log a metric that carries an invalid value (it is left out of the trace and the summary)."""
    logger.debug(f"Ignoring {type(item).__name__} of {item.processor} with an invalid value: {item!r}")


def _is_upstream_copy(data: FramePushed) -> bool:
    """Whether this is the upstream twin of a frame broadcast in both directions."""
    return data.direction is FrameDirection.UPSTREAM and data.frame.broadcast_sibling_id is not None


def _usage_details(unit: Unit) -> dict[str, int]:
    """The usage Pipecat reported (LLM, TTS) or the tracer measured (STT audio, TTS generated audio)."""
    if unit.kind == "llm":
        return llm_usage_details(unit.llm_usage) if unit.llm_usage is not None else {}
    if unit.kind == "tts":
        usage = {pricing.USAGE_INPUT_CHARACTERS: unit.characters} if unit.characters else {}
        if unit.output_audio_s:
            usage[pricing.USAGE_OUTPUT_AUDIO_MS] = round(unit.output_audio_s * 1000)
        return usage
    return {pricing.USAGE_INPUT_AUDIO_MS: unit.audio_ms} if unit.audio_ms else {}


def _with_audio_tokens(
    unit: Unit, price: ModelPrice, usage: dict[str, int], metadata: dict[str, Any]
) -> dict[str, int]:
    """``usage`` plus the audio and text tokens a token-billed speech model bills (derived: flagged)."""
    usage = dict(usage)
    counter = counter_for(unit.model or "")
    text_tokens = counter.count(join_text(unit))
    if unit.kind == "stt":
        usage[pricing.USAGE_INPUT_AUDIO_TOKENS] = price.audio_tokens(usage.get(pricing.USAGE_INPUT_AUDIO_MS, 0))
        if pricing.USAGE_OUTPUT in price.unit_prices:
            usage[pricing.USAGE_OUTPUT] = text_tokens
    else:
        usage[pricing.USAGE_OUTPUT_AUDIO_TOKENS] = price.audio_tokens(usage.get(pricing.USAGE_OUTPUT_AUDIO_MS, 0))
        if pricing.USAGE_INPUT in price.unit_prices:
            usage[pricing.USAGE_INPUT] = text_tokens
    metadata[USAGE_ESTIMATED] = True
    rate = f"{price.audio_tokens_per_second:g}"
    metadata[USAGE_ESTIMATE_METHOD] = f"audio tokens at {rate}/s; text tokens: {counter.method}"
    return usage


_GUESS_OUTPUT_WHEN_CUT = frozenset({"AnthropicLLMService", "AWSBedrockLLMService"})
"""Pipecat services that, when cancelled, report their output as ``words x 1.3`` instead of counting it."""


def _guesses_output_when_cut(service: FrameProcessor | None) -> bool:
    return service is not None and any(cls.__name__ in _GUESS_OUTPUT_WHEN_CUT for cls in type(service).__mro__)


def _system_prompt_hash(messages: Any) -> str | None:
    """SHA-256 (hex) of the text of the first ``system`` message of an LLM call's input."""
    if not isinstance(messages, list) or not messages:
        return None
    first = messages[0]
    if not isinstance(first, dict) or first.get("role") != "system":
        return None
    content = first.get("content")
    text = content if isinstance(content, str) else _json_text(content)
    return _hash_text(text)


@lru_cache(maxsize=32)
def _hash_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_text(value: Any) -> str:
    """Tool-call arguments as the JSON text an OpenAI-style message carries."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _service_name(unit: Unit) -> str:
    """The model name of a unit whose service names no model: the service's class (e.g. ``AzureTTSService``).

    Stable across calls and processes (unlike the processor's ``#n`` name), so Langfuse groups
    it, and the price table can price it.
    """
    return type(unit.source).__name__ if unit.source is not None else unit.processor.partition("#")[0]


def _audio_seconds(frame: AudioRawFrame) -> float:
    """Duration of a chunk of 16-bit PCM audio."""
    rate = frame.sample_rate * frame.num_channels * 2
    return len(frame.audio) / rate if rate > 0 else 0.0


def _response_model(service: FrameProcessor) -> str | None:
    """The model the provider answered with, where the service records it (OpenAI-compatible ones do)."""
    getter = getattr(service, "get_full_model_name", None)
    model = getter() if callable(getter) else None
    return model if isinstance(model, str) and model else None
