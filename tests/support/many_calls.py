"""Many conversations in one process: concurrent offline calls, and Pipecat's barge-in race on demand.

:func:`run_concurrent_calls` starts each call as a task of one event loop, the way Pipecat's
development runner starts its sessions, through the bot's own ``run_offline_call`` (one
``WorkerRunner`` per call). :func:`hold_a_chunk_until_the_barge_in` makes one call hit, every
time, the race in ``BaseOutputTransport`` that load made some calls hit some of the time (see
``OfflineOutputTransport``): the media sender takes an audio chunk off its queue before the
caller's barge-in and handles it after. :func:`run_fast_call` runs a one-turn call through the
same worker and runner as the bot, with services that answer at once, for hundreds of calls in a row.
"""

from __future__ import annotations

import asyncio
import atexit
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langfuse._client.resource_manager import LangfuseResourceManager
from loguru import logger
from opentelemetry import trace as otel_trace
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from app.bot import run_conversation, run_offline_call
from app.config import SYSTEM_PROMPT
from app.offline import (
    SIMULATED_LLM_MODEL,
    SIMULATED_STT_MODEL,
    SIMULATED_TTS_MODEL,
    OfflineServices,
    count_tokens,
)
from app.offline.script import message_text
from app.offline.transport import OfflineOutputTransport
from pipecat_langfuse import ConversationSummary, VoiceTracer
from tests.support.conversation import Witness
from tests.support.scripted_call import (
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    llm_usage,
    stt_usage,
    ttfb,
    tts_usage,
    tts_words,
)


@dataclass
class Call:
    """One of the concurrent calls: its tracer, services, witness and summary."""

    tracer: VoiceTracer
    services: OfflineServices
    witness: Witness
    summary: ConversationSummary | None = None


async def run_concurrent_calls(calls: Sequence[Call]) -> None:
    """Run every call as its own task in the running loop, all at once; fill in their summaries."""

    async def session(call: Call) -> None:
        call.summary = await run_offline_call(call.services, call.tracer, observers=[call.witness])

    tasks = [asyncio.create_task(session(call), name=f"session-{call.tracer.conversation_id}") for call in calls]
    await asyncio.gather(*tasks)


def hold_a_chunk_until_the_barge_in(output: OfflineOutputTransport, *, chunk: int = 3) -> None:
    """Make ``output``'s media sender take its ``chunk``-th TTS audio chunk off the queue, then wait.

    The chunk is handed to the sender's audio task only once the caller's barge-in has been handled
    (its queue drained, the bot reported stopped): exactly the interleaving Pipecat 1.14 allows when
    the loop is busy, forced instead of left to chance.
    """
    start = output.start

    async def started(frame: StartFrame) -> None:
        await start(frame)
        _hold(output, chunk)

    setattr(output, "start", started)  # noqa: B010 - process_frame() calls self.start()


def _hold(output: OfflineOutputTransport, chunk: int) -> None:
    sender = output._media_senders[None]
    queue = sender._audio_queue
    get = queue.get
    handle_interruptions = sender.handle_interruptions
    interrupted = asyncio.Event()
    seen = 0

    async def interrupt(frame: InterruptionFrame) -> None:
        await handle_interruptions(frame)
        interrupted.set()

    async def held_get() -> Any:
        nonlocal seen
        item = await get()
        if isinstance(item, TTSAudioRawFrame) and item.interruptible:
            seen += 1
            if seen == chunk:
                interrupted.clear()  # the caller's first turn interrupted nothing: wait for the barge-in
                await interrupted.wait()
        return item

    setattr(sender, "handle_interruptions", interrupt)  # noqa: B010
    setattr(queue, "get", held_get)  # noqa: B010


# -- Fast calls: the live runner's path, no real-time pacing ----------------------------------------

FAST_USER_TEXT = "What time is it?"
FAST_REPLY = ("It", " is", " noon.")
FAST_STT_AUDIO_S = 1.25


class FastCaller(FrameProcessor):
    """Says one thing as soon as the pipeline starts, and ends the call once the bot has answered."""

    def __init__(self) -> None:
        super().__init__(name="fast-caller")
        self._task: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._task = self.create_task(self._speak(), name="fast-caller")
        elif isinstance(frame, BotStoppedSpeakingFrame) and direction is FrameDirection.UPSTREAM:
            await self.push_frame(EndWorkerFrame(reason="fast caller hung up"), FrameDirection.UPSTREAM)

    async def _speak(self) -> None:
        await self.push_frame(VADUserStartedSpeakingFrame(start_secs=0.0))
        await self.push_frame(VADUserStoppedSpeakingFrame(stop_secs=0.0))

    async def cleanup(self) -> None:
        if self._task is not None:
            await self.cancel_task(self._task)
        await super().cleanup()  # type: ignore[no-untyped-call]  # unannotated in Pipecat


class FastSTT(ScriptedSTT):
    """Transcribes the caller's one utterance when the VAD reports its end, with usage and TTFB."""

    def __init__(self) -> None:
        super().__init__(model=SIMULATED_STT_MODEL, ttfs_p99_latency=0.01)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame) and direction is FrameDirection.DOWNSTREAM:
            await self.push_frame(stt_usage(self, FAST_STT_AUDIO_S))
            await self.push_frame(ttfb(self, 0.2))
            await self.push_frame(TranscriptionFrame(FAST_USER_TEXT, "caller", "now", finalized=True))


class FastLLM(ScriptedLLM):
    """Streams the reply to each context, with TTFB and token usage.

    The prompt is the bot's system prompt (the LLM's ``system_instruction``) and the context's words.
    """

    def __init__(self) -> None:
        super().__init__(model=SIMULATED_LLM_MODEL)
        self.settings.system_instruction = SYSTEM_PROMPT

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStartFrame())
        await self.push_frame(ttfb(self, 0.3))
        for word in FAST_REPLY:
            await self.push_frame(LLMTextFrame(word))
        prompt = count_tokens(SYSTEM_PROMPT) + sum(count_tokens(message_text(m)) for m in frame.context.get_messages())
        await self.push_frame(llm_usage(self, prompt, count_tokens("".join(FAST_REPLY))))
        await self.push_frame(LLMFullResponseEndFrame())


class FastTTS(ScriptedTTS):
    """Speaks the reply once it is complete: started, usage, words, stopped."""

    def __init__(self) -> None:
        super().__init__(model=SIMULATED_TTS_MODEL)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, (LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame)):
            await super().process_frame(frame, direction)
            return
        # Only the FrameProcessor part sees the reply: it is spoken here, not by TTSService's text pipeline.
        await FrameProcessor.process_frame(self, frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, LLMFullResponseEndFrame):
            text = "".join(FAST_REPLY).strip()
            await self.push_frame(TTSStartedFrame(context_id="reply"))
            await self.push_frame(ttfb(self, 0.15))
            await self.push_frame(tts_usage(self, len(text)))
            for word in text.split():
                await self.push_frame(tts_words(word, context_id="reply"))
            await self.push_frame(TTSStoppedFrame(context_id="reply"))


class FastOutput(FrameProcessor):
    """Reports the bot's speech as a transport does, from the TTS's start and stop."""

    def __init__(self) -> None:
        super().__init__(name="fast-output")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TTSStartedFrame):
            await self.broadcast_frame(BotStartedSpeakingFrame)
        elif isinstance(frame, TTSStoppedFrame):
            await self.broadcast_frame(BotStoppedSpeakingFrame)


class FastTransport(BaseTransport):
    """The caller and the speaker of a call that runs as fast as the event loop allows."""

    def __init__(self) -> None:
        super().__init__(name="fast-transport")
        self._input, self._output = FastCaller(), FastOutput()

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output


async def run_fast_call(tracer: VoiceTracer) -> ConversationSummary:
    """One one-turn call through ``app.bot.run_conversation`` (the live runner's path), at full speed.

    The user aggregator ends the user's turn as soon as the transcript is in (no speech timeout).
    """
    strategies = UserTurnStrategies(
        start=[VADUserTurnStartStrategy()],
        stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)],
    )
    return await run_conversation(
        transport=FastTransport(),
        stt=FastSTT(),
        llm=FastLLM(),
        tts=FastTTS(),
        tracer=tracer,
        user_params=LLMUserAggregatorParams(user_turn_strategies=strategies),
    )


# -- What a process holds ----------------------------------------------------------------------------

SERVER_THREADS = ("local-langfuse", "process_request_thread")
"""Threads of the in-process Langfuse stand-in (one per open connection), not of the code under test."""


@dataclass(frozen=True)
class ProcessResources:
    """Everything per-call code could leave behind in a process, counted or named.

    Attributes:
        global_processors: Span processors on the global tracer provider, by class name.
        client_processors: Span processors on the Langfuse client's tracer provider, by class name.
        exporters: The span exporters behind those processors, by class name and identity.
        threads: Live threads by name (without the Langfuse stand-in's).
        signal_handlers: Python-level SIGINT and SIGTERM handlers, and the loop's signal handlers.
        loguru_sinks: Number of loguru sinks.
        atexit_callbacks: Number of atexit registrations.
        langfuse_clients: Langfuse resource sets (one per public key).
    """

    global_processors: tuple[str, ...]
    client_processors: tuple[str, ...]
    exporters: tuple[tuple[str, int], ...]
    threads: tuple[str, ...]
    signal_handlers: tuple[object, ...]
    loguru_sinks: int
    atexit_callbacks: int
    langfuse_clients: int


def process_resources(client: Any) -> ProcessResources:
    """What the process holds now, with ``client`` the Langfuse client of the calls (private SDK state)."""
    # The flush of the call that just ended runs in a thread of its own, which may still be exiting.
    for thread in threading.enumerate():
        if thread.name == "langfuse-flush":
            thread.join(timeout=5)
    processors = [*_processors(otel_trace.get_tracer_provider()), *_processors(client._resources.tracer_provider)]
    exporters = {id(e): e for p in processors if (e := _exporter(p)) is not None}
    loop = asyncio.get_running_loop()
    return ProcessResources(
        global_processors=tuple(type(p).__name__ for p in _processors(otel_trace.get_tracer_provider())),
        client_processors=tuple(type(p).__name__ for p in _processors(client._resources.tracer_provider)),
        exporters=tuple(sorted((type(e).__name__, key) for key, e in exporters.items())),
        threads=tuple(sorted(t.name for t in threading.enumerate() if not any(s in t.name for s in SERVER_THREADS))),
        signal_handlers=(
            signal.getsignal(signal.SIGINT),
            signal.getsignal(signal.SIGTERM),
            tuple(sorted(getattr(loop, "_signal_handlers", {}))),  # private: the Unix loop's handlers
        ),
        loguru_sinks=len(logger._core.handlers),  # type: ignore[attr-defined]  # private: loguru's sinks
        atexit_callbacks=atexit._ncallbacks(),  # private: CPython's count
        langfuse_clients=len(LangfuseResourceManager._instances),
    )


def _processors(provider: object) -> list[Any]:
    # Private: the SDK provider's multi-processor keeps its processors in _span_processors.
    active = getattr(provider, "_active_span_processor", None)
    return list(getattr(active, "_span_processors", ()))


def _exporter(processor: object) -> object | None:
    # Private: a BatchSpanProcessor keeps its exporter in _batch_processor._exporter (OTel SDK 1.3x).
    exporter = getattr(getattr(processor, "_batch_processor", None), "_exporter", None)
    return exporter if exporter is not None else getattr(processor, "span_exporter", None)
