"""The offline conversation runs through a real Pipecat pipeline and reports real metrics.

One call of ``QUICK_SCRIPT`` (about 12 s of real time) is run once for the module,
through the pipeline the bot builds, and every test checks facts about it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from pipecat.frames.frames import (
    AudioRawFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    MetricsData,
    ProcessingMetricsData,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.workers.runner import WorkerRunner

from app.offline import (
    QUICK_SCRIPT,
    SIMULATED_LLM_MODEL,
    SIMULATED_STT_MODEL,
    SIMULATED_TTS_MODEL,
    CallerScript,
    OfflineServices,
    create_offline_services,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")  # one event loop for the module's one call

SCRIPT = QUICK_SCRIPT
SYSTEM_PROMPT = "You are a friendly voice assistant. Keep answers short."
CALL_TIMEOUT_SECS = 60.0

# SegmentedSTTService internals the STT usage depends on: the segment starts with
# the second of audio buffered before the VAD start (which includes the
# ``start_secs`` of speech that confirmed it) and is padded with half a second of
# silence; the offline VAD uses equal start and stop delays, so the segment holds
# exactly the speech besides that.
STT_PRE_ROLL_SECS = 1.0
STT_TRAILING_SILENCE_SECS = 0.5


def _tokens(text: str) -> int:
    """The deterministic token count the offline LLM is documented to use."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def _sentences(reply: str) -> list[str]:
    """The sentences the TTS receives one request each for."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", reply) if s.strip()]


@dataclass(frozen=True)
class Pushed:
    """One observed push: a frame, who pushed it, which way, when (pipeline clock, ns)."""

    frame: Frame
    source: FrameProcessor
    direction: FrameDirection
    timestamp: int


class FrameRecorder(BaseObserver):
    """Records the first push of every frame except audio."""

    def __init__(self) -> None:
        super().__init__(observe_every_push=False)
        self.pushes: list[Pushed] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, AudioRawFrame):
            return
        self.pushes.append(Pushed(data.frame, data.source, data.direction, data.timestamp))


@dataclass
class CallRecord:
    """Everything a test needs to know about the call."""

    services: OfflineServices
    user_aggregator: FrameProcessor
    context: LLMContext
    pushes: list[Pushed]
    wall_secs: float

    def indices(self, kind: type[Frame], source: FrameProcessor) -> list[int]:
        """Positions in the push log of the frames of ``kind`` that ``source`` pushed."""
        return [i for i, p in enumerate(self.pushes) if isinstance(p.frame, kind) and p.source is source]

    def frames(self, kind: type[Frame], source: FrameProcessor) -> list[Pushed]:
        return [self.pushes[i] for i in self.indices(kind, source)]

    def metrics(self, source: FrameProcessor) -> Iterator[tuple[int, MetricsData]]:
        """(position in the push log, metrics data) of every metric ``source`` reported."""
        for i, p in enumerate(self.pushes):
            if isinstance(p.frame, MetricsFrame) and p.source is source:
                for data in p.frame.data:
                    yield i, data

    def dialogue(self) -> list[tuple[str, str]]:
        """(role, text) of every message of the final LLM context (the system prompt is the LLM's setting)."""
        return [(str(m.get("role")), str(m.get("content"))) for m in self.context.get_messages() if isinstance(m, dict)]

    def bot_speech(self) -> list[tuple[int, int]]:
        """(start, stop) pipeline times of each stretch of bot speech."""
        output = self.services.transport.output()
        starts = self.frames(BotStartedSpeakingFrame, output)
        stops = self.frames(BotStoppedSpeakingFrame, output)
        starts = [p for p in starts if p.direction is FrameDirection.DOWNSTREAM]
        stops = [p for p in stops if p.direction is FrameDirection.DOWNSTREAM]
        return [(a.timestamp, b.timestamp) for a, b in zip(starts, stops, strict=True)]


async def _run_call(script: CallerScript) -> CallRecord:
    services = create_offline_services(script, system_instruction=SYSTEM_PROMPT)
    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context, user_params=services.user_params)
    pipeline = Pipeline(
        [
            services.transport.input(),
            services.stt,
            user_aggregator,
            services.llm,
            services.tts,
            services.transport.output(),
            assistant_aggregator,
        ]
    )
    recorder = FrameRecorder()
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            enable_metrics=True,
            enable_usage_metrics=True,
            send_initial_empty_metrics=False,
        ),
        enable_rtvi=False,
        idle_timeout_secs=None,
        observers=[recorder],
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    started = time.monotonic()
    await asyncio.wait_for(runner.run(), timeout=CALL_TIMEOUT_SECS)
    return CallRecord(
        services=services,
        user_aggregator=user_aggregator,
        context=context,
        pushes=recorder.pushes,
        wall_secs=time.monotonic() - started,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def call() -> CallRecord:
    return await _run_call(SCRIPT)


async def test_script_has_one_barge_in() -> None:
    assert len(SCRIPT.utterances) == 3
    assert [u.barges_in for u in SCRIPT.utterances] == [False, True, False]
    # The STT pre-roll below is a full second only if that much audio precedes
    # the first VAD start.
    assert SCRIPT.utterances[0].delay_secs + 0.2 >= STT_PRE_ROLL_SECS


async def test_stt_recommends_the_offline_turn_strategies() -> None:
    services = create_offline_services(SCRIPT)
    recommended = services.stt.service_metadata_frame().user_turn_strategies
    configured = services.user_params.user_turn_strategies
    for strategies in (recommended, configured):
        assert strategies is not None
        assert [type(s) for s in strategies.stop or []] == [SpeechTimeoutUserTurnStopStrategy]


async def test_call_ends_by_itself(call: CallRecord) -> None:
    hangups = call.frames(EndWorkerFrame, call.services.transport.input())
    assert [p.frame.reason for p in hangups if isinstance(p.frame, EndWorkerFrame)] == ["offline caller hung up"]
    assert 6.0 < call.wall_secs < 30.0


async def test_one_transcription_per_utterance(call: CallRecord) -> None:
    transcriptions = call.frames(TranscriptionFrame, call.services.stt)
    texts = [p.frame.text for p in transcriptions if isinstance(p.frame, TranscriptionFrame)]
    assert texts == [u.text for u in SCRIPT.utterances]


async def test_barge_in_interrupts_the_bot(call: CallRecord) -> None:
    interruptions = [
        p.timestamp
        for p in call.frames(InterruptionFrame, call.user_aggregator)
        if p.direction is FrameDirection.DOWNSTREAM
    ]
    speech = call.bot_speech()
    # One stretch of speech per reply: the interrupted one is cut short.
    assert len(speech) == len(SCRIPT.replies)

    barge_in = next(i for i, u in enumerate(SCRIPT.utterances) if u.barges_in)
    start, stop = speech[barge_in - 1]
    during = [t for t in interruptions if start < t <= stop]
    assert len(during) == 1
    interrupted_at = during[0]
    expected_after = SCRIPT.utterances[barge_in].delay_secs + 0.2  # delay + VAD start_secs
    assert (interrupted_at - start) / 1e9 == pytest.approx(expected_after, abs=0.15)
    assert (stop - interrupted_at) / 1e9 < 0.1  # the bot stops right away
    full_reply_secs = len(SCRIPT.replies[barge_in - 1]) / SCRIPT.chars_per_sec
    assert (stop - start) / 1e9 < full_reply_secs - 1.0

    # The caller really was talking over the bot.
    vad_starts = call.frames(VADUserStartedSpeakingFrame, call.services.transport.input())
    assert sum(start < p.timestamp <= stop for p in vad_starts) == 1

    # No other reply was interrupted.
    for i, (start, stop) in enumerate(speech):
        if i != barge_in - 1:
            assert not [t for t in interruptions if start < t <= stop]


async def test_every_metric_carries_its_service_model(call: CallRecord) -> None:
    for service, model in (
        (call.services.stt, SIMULATED_STT_MODEL),
        (call.services.llm, SIMULATED_LLM_MODEL),
        (call.services.tts, SIMULATED_TTS_MODEL),
    ):
        data = [d for _, d in call.metrics(service)]
        assert data
        assert {d.model for d in data} == {model}
        assert {d.processor for d in data} == {service.name}
        ttfb = [d for d in data if isinstance(d, TTFBMetricsData)]
        assert len(ttfb) == len(SCRIPT.utterances)
        assert all(0 < d.value < 2 for d in ttfb)
        assert any(isinstance(d, ProcessingMetricsData) for d in data)
    assert SIMULATED_STT_MODEL == "simulated/nova-3-general"
    assert SIMULATED_LLM_MODEL == "simulated/gpt-4.1-mini"
    assert SIMULATED_TTS_MODEL == "simulated/sonic-3.6"


async def test_llm_usage_has_deterministic_token_counts(call: CallRecord) -> None:
    dialogue = call.dialogue()
    user_positions = [i for i, (role, _) in enumerate(dialogue) if role == "user"]
    expected = []
    for turn, position in enumerate(user_positions):
        prompt = _tokens(SYSTEM_PROMPT) + sum(_tokens(text) for _, text in dialogue[: position + 1])
        completion = _tokens(SCRIPT.replies[turn])
        expected.append((prompt, completion, prompt + completion))

    usage = [d.value for _, d in call.metrics(call.services.llm) if isinstance(d, LLMUsageMetricsData)]
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in usage] == expected
    assert expected == [(17, 15, 32), (24, 4, 28), (32, 2, 34)]


async def test_tts_usage_counts_the_characters_sent(call: CallRecord) -> None:
    llm_starts = set(call.indices(LLMFullResponseStartFrame, call.services.llm))
    # Attribute each TTS usage report to the reply being generated when it came.
    chars_per_reply = [0] * len(SCRIPT.replies)
    reply = -1
    for i, p in enumerate(call.pushes):
        if i in llm_starts:
            reply += 1
        elif isinstance(p.frame, MetricsFrame) and p.source is call.services.tts:
            for data in p.frame.data:
                if isinstance(data, TTSUsageMetricsData):
                    chars_per_reply[reply] += data.value

    # Every reply is billed for all its sentences, the interrupted one included:
    # the LLM streams it whole long before the barge-in, and a TTS request is
    # billed when it is made, not when its audio plays.
    assert chars_per_reply == [sum(map(len, _sentences(r))) for r in SCRIPT.replies]
    assert chars_per_reply == [53, 11, 8]


async def test_stt_usage_is_the_audio_sent(call: CallRecord) -> None:
    usage = [d.value.audio_seconds for _, d in call.metrics(call.services.stt) if isinstance(d, STTUsageMetricsData)]
    expected = [STT_PRE_ROLL_SECS + SCRIPT.speech_secs(u) + STT_TRAILING_SILENCE_SECS for u in SCRIPT.utterances]
    assert usage == pytest.approx(expected, abs=1e-6)
    assert sum(usage) == pytest.approx(2.78 + 2.64 + 2.36, abs=1e-6)


async def test_metrics_order_relative_to_service_frames(call: CallRecord) -> None:
    def first_index(kind: type[Frame], source: FrameProcessor, after: int) -> int:
        return next(i for i in call.indices(kind, source) if i > after)

    stt, llm, tts = call.services.stt, call.services.llm, call.services.tts

    # STT: usage (at the VAD stop), processing, then TTFB, then the transcript.
    previous = -1
    for transcript in call.indices(TranscriptionFrame, stt):
        kinds = [type(d) for i, d in call.metrics(stt) if previous < i < transcript]
        assert kinds == [STTUsageMetricsData, ProcessingMetricsData, TTFBMetricsData]
        previous = transcript

    # LLM: TTFB and usage fall between the response start and end.
    for start in call.indices(LLMFullResponseStartFrame, llm):
        end = first_index(LLMFullResponseEndFrame, llm, start)
        kinds = [type(d) for i, d in call.metrics(llm) if start < i < end]
        assert kinds[0] is TTFBMetricsData
        assert kinds[-2:] == [LLMUsageMetricsData, ProcessingMetricsData]

    # TTS: the usage of the first sentence precedes TTFB, all of it precedes the stop.
    for started in call.indices(TTSStartedFrame, tts):
        stopped = first_index(TTSStoppedFrame, tts, started)
        kinds = [type(d) for i, d in call.metrics(tts) if started < i < stopped]
        assert TTFBMetricsData in kinds
        assert kinds.index(TTSUsageMetricsData) < kinds.index(TTFBMetricsData)


async def test_context_holds_what_the_bot_said(call: CallRecord) -> None:
    dialogue = call.dialogue()
    assert call.services.llm.settings.system_instruction == SYSTEM_PROMPT
    assert [role for role, _ in dialogue] == ["user", "assistant"] * len(SCRIPT.utterances)
    assert [text for _, text in dialogue[::2]] == [u.text for u in SCRIPT.utterances]
    said = [text for _, text in dialogue[1::2]]
    barge_in = next(i for i, u in enumerate(SCRIPT.utterances) if u.barges_in)
    for i, reply in enumerate(SCRIPT.replies):
        if i == barge_in - 1:
            # Only the sentences played before the interruption are kept.
            assert said[i] == _sentences(reply)[0]
        else:
            assert said[i] == reply
