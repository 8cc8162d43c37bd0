"""What the voice tracer costs a real Pipecat pipeline, as ratios to a baseline measured in the same run.

A scripted call runs through a real ``PipelineWorker`` as fast as the event loop allows: a 20 ms
microphone chunk at a time all along, and per turn the user's speech, a transcript from an
``STTService``, a streamed reply with token usage from an ``LLMService``, its audio and character
usage from a ``TTSService``, and the bot's speaking events. The same call runs under four variants,
interleaved and repeated: no observer, a no-op observer, the ``VoiceObserver`` recording only, and
the tracer exporting to a local Langfuse stand-in (served from a child process). A second section
replays one call's observed frames straight into ``on_push_frame`` to time the observer's own work.

Run: ``uv run python -m bench.observer_overhead`` (``--help`` lists the sizes and repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version

from langfuse import Langfuse
from loguru import logger
from pipecat.clocks.base_clock import BaseClock
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    OutputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    STTUsage,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.text.base_text_aggregator import TextType
from pipecat.workers.runner import WorkerRunner

from app.offline import simulated_llm_settings
from bench._server import RemoteLangfuse
from pipecat_langfuse import TracingSettings, VoiceTracer
from pipecat_langfuse._langfuse import build_client
from pipecat_langfuse._observer import GENERATION_NAMES, VoiceObserver

CHUNK_S = 0.02
IN_RATE, OUT_RATE = 16_000, 24_000
MIC_CHUNK = bytes(round(IN_RATE * CHUNK_S) * 2)  # 16-bit mono
TTS_CHUNK = bytes(round(OUT_RATE * CHUNK_S) * 2)
STT_MODEL, LLM_MODEL, TTS_MODEL = "nova-3", "gpt-4.1-mini", "sonic-2"
SYSTEM_PROMPT = "You are a friendly voice assistant on a phone call; answer in one or two short sentences."
AUDIO_FRAMES = (InputAudioRawFrame, OutputAudioRawFrame)

VARIANTS = ("baseline", "noop", "recording", "exporting")
LABELS = {
    "baseline": "1. no observer (baseline)",
    "noop": "2. no-op `BaseObserver`",
    "recording": "3. `VoiceObserver`, recording only",
    "exporting": "4. `VoiceObserver` exporting to Langfuse",
}


@dataclass(frozen=True)
class Workload:
    """The shape of the scripted call."""

    turns: int
    user_s: float
    bot_s: float
    gap_s: float
    words: int
    relays: int

    @property
    def user_chunks(self) -> int:
        return round(self.user_s / CHUNK_S)

    @property
    def bot_chunks(self) -> int:
        return round(self.bot_s / CHUNK_S)

    @property
    def listen_chunks(self) -> int:
        """Microphone chunks from the end of the user's speech to their next turn."""
        return round((self.bot_s + self.gap_s) / CHUNK_S)

    @property
    def reply(self) -> list[str]:
        return [f" word{i}" for i in range(self.words)]

    @property
    def generations(self) -> int:
        return 3 * self.turns  # one STT, one LLM and one TTS unit per turn


@dataclass
class Tally:
    """Frames the script created in one run."""

    frames: int = 0


# -- The scripted call ------------------------------------------------------------------------


class ScriptClock(BaseClock):
    """Pipeline time as the call's script sees it: 20 ms per microphone chunk, however fast the call runs.

    The observer's timing logic (late metrics settle for 500 ms of pipeline time) then behaves as in a
    real call, and frames the services push in a burst share the time of the chunk they answer.
    """

    def __init__(self) -> None:
        self.now_ns = 0

    def start(self) -> None:
        pass

    def get_time(self) -> int:
        return self.now_ns


class _Emits:
    """Push new frames and count them."""

    tally: Tally

    async def emit(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        self.tally.frames += 1
        await self.push_frame(frame, direction)  # type: ignore[attr-defined]

    async def emit_broadcast(self, frame_cls: type[Frame]) -> None:
        self.tally.frames += 2
        await self.broadcast_frame(frame_cls)  # type: ignore[attr-defined]


class Relay(FrameProcessor):
    """Passes every frame on, like the aggregators and filters of a real bot."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class Caller(_Emits, Relay):
    """The microphone and the person speaking into it; ends the call after the last turn."""

    def __init__(self, workload: Workload, tally: Tally, clock: ScriptClock) -> None:
        super().__init__(name="caller")
        self.tally, self._workload, self._clock = tally, workload, clock
        self._task: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._task = self.create_task(self._call())

    async def cleanup(self) -> None:
        if self._task is not None and not self._task.done():
            await self.cancel_task(self._task)
        await super().cleanup()

    async def _call(self) -> None:
        w = self._workload
        for _ in range(w.turns):
            await self.emit_broadcast(UserStartedSpeakingFrame)
            await self._microphone(w.user_chunks)
            await self.emit_broadcast(UserStoppedSpeakingFrame)
            await self._microphone(w.listen_chunks)
        await self.emit(EndWorkerFrame(), FrameDirection.UPSTREAM)

    async def _microphone(self, chunks: int) -> None:
        for _ in range(chunks):
            self._clock.now_ns += round(CHUNK_S * 1e9)
            await self.emit(InputAudioRawFrame(MIC_CHUNK, IN_RATE, 1))
            await asyncio.sleep(0)  # a transport yields between packets


class ScriptedSTT(_Emits, STTService):
    """Takes the microphone audio and transcribes each utterance when the user stops speaking."""

    def __init__(self, workload: Workload, tally: Tally) -> None:
        super().__init__(name="stt", settings=STTSettings(model=STT_MODEL, language=Language.EN), ttfs_p99_latency=0.3)
        self.tally, self._workload = tally, workload

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, UserStoppedSpeakingFrame):
            usage = STTUsage(audio_seconds=self._workload.user_s)
            metrics = [
                TTFBMetricsData(processor=self.name, model=STT_MODEL, value=0.2),
                STTUsageMetricsData(processor=self.name, model=STT_MODEL, value=usage),
            ]
            await self.emit(MetricsFrame(data=metrics))
            await self.emit(TranscriptionFrame("What is the weather like today?", "caller", "now"))


class UserAggregator(_Emits, Relay):
    """Turns each transcript into an LLM context (the system prompt and the user's message)."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(name="user-aggregator")
        self.tally = tally

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": frame.text}]
            await self.emit(LLMContextFrame(context=LLMContext(messages)))


class ScriptedLLM(_Emits, LLMService):
    """Streams a reply word by word for each context, with TTFB and token usage."""

    def __init__(self, workload: Workload, tally: Tally) -> None:
        super().__init__(name="llm", settings=simulated_llm_settings(LLM_MODEL))
        self.tally, self._workload = tally, workload

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        words = self._workload.words
        await self.emit(LLMFullResponseStartFrame())
        await self.emit(MetricsFrame(data=[TTFBMetricsData(processor=self.name, model=LLM_MODEL, value=0.3)]))
        for word in self._workload.reply:
            await self.emit(LLMTextFrame(word))
        usage = LLMTokenUsage(prompt_tokens=40, completion_tokens=words, total_tokens=40 + words)
        await self.emit(MetricsFrame(data=[LLMUsageMetricsData(processor=self.name, model=LLM_MODEL, value=usage)]))
        await self.emit(LLMFullResponseEndFrame())


class ScriptedTTS(_Emits, TTSService):
    """Speaks each reply once it is complete: 20 ms audio chunks, word frames and character usage."""

    def __init__(self, workload: Workload, tally: Tally) -> None:
        settings = TTSSettings(model=TTS_MODEL, voice="bench-voice", language=Language.EN)
        super().__init__(name="tts", settings=settings, sample_rate=OUT_RATE)
        self.tally, self._workload = tally, workload
        self._replies = 0

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, (LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame)):
            await super().process_frame(frame, direction)
            return
        # The reply is scripted here rather than synthesized by TTSService's text pipeline,
        # so only the FrameProcessor part of the base classes sees these frames.
        await FrameProcessor.process_frame(self, frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, LLMFullResponseEndFrame):
            await self._speak()

    async def _speak(self) -> None:
        w = self._workload
        self._replies += 1
        context_id = f"reply-{self._replies}"
        words = w.reply
        chunks_per_word = max(1, w.bot_chunks // len(words))
        await self.emit(TTSStartedFrame(context_id=context_id))
        await self.emit(MetricsFrame(data=[TTFBMetricsData(processor=self.name, model=TTS_MODEL, value=0.15)]))
        for i in range(w.bot_chunks):
            if i % chunks_per_word == 0 and i // chunks_per_word < len(words):
                word = words[i // chunks_per_word]
                await self.emit(TTSTextFrame(word.strip(), text_type=TextType.WORD, context_id=context_id))
            await self.emit(TTSAudioRawFrame(TTS_CHUNK, OUT_RATE, 1, context_id=context_id))
        characters = len("".join(words).strip())
        await self.emit(
            MetricsFrame(data=[TTSUsageMetricsData(processor=self.name, model=TTS_MODEL, value=characters)])
        )
        await self.emit(TTSStoppedFrame(context_id=context_id))


class Output(_Emits, Relay):
    """Plays the bot's audio: broadcasts the bot's speaking events, as a transport does."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(name="output")
        self.tally = tally

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSStartedFrame):
            await self.emit_broadcast(BotStartedSpeakingFrame)
        elif isinstance(frame, TTSStoppedFrame):
            await self.emit_broadcast(BotStoppedSpeakingFrame)


def build_pipeline(workload: Workload, tally: Tally, clock: ScriptClock) -> Pipeline:
    """caller → STT → user aggregator → relays → LLM → TTS → output → assistant aggregator."""
    return Pipeline(
        [
            Caller(workload, tally, clock),
            ScriptedSTT(workload, tally),
            UserAggregator(tally),
            *(Relay(name=f"relay-{i}") for i in range(workload.relays)),
            ScriptedLLM(workload, tally),
            ScriptedTTS(workload, tally),
            Output(tally),
            Relay(name="assistant-aggregator"),
        ]
    )


# -- Observers ----------------------------------------------------------------------------------


class NoOpObserver(BaseObserver):
    """Sees each frame once and only counts what Pipecat hands it: the floor cost of any observer."""

    def __init__(self) -> None:
        super().__init__(observe_every_push=False)
        self.frames = 0
        self.processed = 0

    async def on_push_frame(self, data: FramePushed) -> None:
        self.frames += 1

    async def on_process_frame(self, data: FrameProcessed) -> None:
        self.processed += 1  # every processor reports every frame it processes, to every observer


class Recorder(BaseObserver):
    """Keeps every event a once-per-frame observer is given, for the replay section."""

    def __init__(self) -> None:
        super().__init__(observe_every_push=False)
        self.events: list[FramePushed] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        self.events.append(data)


@dataclass
class LangfuseStandIn:
    """The exporting variant's server and client, shared by its runs."""

    server: RemoteLangfuse
    settings: TracingSettings
    client: Langfuse


def make_tracer(variant: str, langfuse: LangfuseStandIn, conversation_id: str) -> VoiceTracer:
    if variant == "recording":
        return VoiceTracer(TracingSettings(enabled=False), conversation_id=conversation_id)
    return VoiceTracer(langfuse.settings, conversation_id=conversation_id, client=langfuse.client)


def check_tracer(tracer: VoiceTracer, workload: Workload, langfuse: LangfuseStandIn) -> tuple[list[str], int, int]:
    """Problems with what the tracer recorded and exported; and the generations and spans received."""
    problems = []
    name = tracer.conversation_id
    summary = tracer.summary()
    if len(summary.turns) != workload.turns or any(t.interrupted for t in summary.turns):
        problems.append(f"{name}: recorded {len(summary.turns)} turns (expected {workload.turns}, none interrupted)")
    calls = {m.kind: m.calls for m in summary.models}
    if calls != dict.fromkeys(("stt", "llm", "tts"), workload.turns):
        problems.append(f"{name}: recorded units {calls}, expected {workload.turns} of each kind")
    if not tracer.enabled or tracer.trace_id is None:
        return problems, 0, 0
    names = langfuse.server.span_names(tracer.trace_id)
    generations = sum(names[name] for name in GENERATION_NAMES.values())
    spans = sum(names.values())
    expected_spans = workload.generations + workload.turns + 1  # generations, turns, the conversation
    if generations != workload.generations or spans != expected_spans:
        problems.append(
            f"{name}: MISMATCH: the Langfuse server received {generations} generations and {spans} spans for trace "
            f"{tracer.trace_id}; expected {workload.generations} generations and {expected_spans} spans"
        )
    return problems, generations, spans


# -- Pipeline runs -----------------------------------------------------------------------------


@dataclass
class Run:
    """One call under one variant."""

    wall_s: float
    cpu_s: float
    exit_s: float
    frames: int
    peak_bytes: int = 0
    observed: tuple[int, int] = (0, 0)  # the no-op observer's on_push_frame and on_process_frame calls
    generations: int = 0
    spans: int = 0
    problems: list[str] = field(default_factory=list)


async def run_call(
    variant: str,
    workload: Workload,
    langfuse: LangfuseStandIn,
    conversation_id: str,
    *,
    recorder: Recorder | None = None,
) -> Run:
    """Run the call once under ``variant``; memory is measured when tracemalloc is tracing."""
    tally = Tally()
    noop = NoOpObserver() if variant == "noop" else None
    tracer = make_tracer(variant, langfuse, conversation_id) if variant in ("recording", "exporting") else None
    observers: list[BaseObserver] = [o for o in (noop, recorder) if o is not None]
    observers += tracer.observers if tracer is not None else []
    clock = ScriptClock()
    worker = PipelineWorker(
        build_pipeline(workload, tally, clock),
        clock=clock,
        observers=observers,
        enable_rtvi=False,  # so the baseline runs no observer at all
        enable_turn_tracking=False,
        idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    conversation = tracer.conversation() if tracer is not None else contextlib.nullcontext()

    gc.collect()
    if tracemalloc.is_tracing():
        tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]  # (0, 0) when not tracing
    start, cpu_start = time.perf_counter(), time.process_time()
    async with conversation:
        await runner.run()
        run_end, cpu_end = time.perf_counter(), time.process_time()
    run = Run(
        wall_s=run_end - start,
        cpu_s=cpu_end - cpu_start,
        exit_s=time.perf_counter() - run_end,
        frames=tally.frames,
        peak_bytes=tracemalloc.get_traced_memory()[1] - base,
    )
    if noop is not None:
        run.observed = (noop.frames, noop.processed)
        if noop.frames < tally.frames:
            run.problems.append(
                f"{conversation_id}: the no-op observer saw {noop.frames} of the {tally.frames} frames pushed"
            )
    if tracer is not None:
        run.problems, run.generations, run.spans = check_tracer(tracer, workload, langfuse)
    return run


# -- Replay: the observer's own time per frame -------------------------------------------------


@dataclass
class Replay:
    """One replay of a call's recorded events into fresh observers of one kind."""

    loop_ns: int  # the whole loop, without per-call timers
    audio_ns: int  # per-call timers: audio frames
    other_ns: int  # per-call timers: every other frame
    finish_ns: int  # VoiceObserver.finish(): closing the last turn and exporting what is left


@contextlib.asynccontextmanager
async def fresh_observer(
    kind: str, workload: Workload, langfuse: LangfuseStandIn, conversation_id: str, problems: list[str]
) -> AsyncIterator[BaseObserver]:
    """A new observer of ``kind``; a tracer's conversation is flushed and checked on exit."""
    if kind == "noop":
        yield NoOpObserver()
        return
    tracer = make_tracer(kind, langfuse, conversation_id)
    async with tracer.conversation():
        yield tracer.observer
    problems += check_tracer(tracer, workload, langfuse)[0]


async def replay(
    kind: str, events: Sequence[FramePushed], workload: Workload, langfuse: LangfuseStandIn, tag: str
) -> tuple[Replay, list[str]]:
    """Feed ``events`` to ``on_push_frame`` of a fresh observer, timing the loop, then each call."""
    problems: list[str] = []
    clock = time.perf_counter_ns
    gc.collect()
    async with fresh_observer(kind, workload, langfuse, f"{tag}-loop", problems) as observer:
        start = clock()
        for event in events:
            await observer.on_push_frame(event)
        loop_ns = clock() - start
    gc.collect()
    audio_ns = other_ns = finish_ns = 0
    async with fresh_observer(kind, workload, langfuse, f"{tag}-calls", problems) as observer:
        for event in events:
            start = clock()
            await observer.on_push_frame(event)
            elapsed = clock() - start
            if isinstance(event.frame, AUDIO_FRAMES):
                audio_ns += elapsed
            else:
                other_ns += elapsed
        if isinstance(observer, VoiceObserver):
            start = clock()
            observer.finish()
            finish_ns = clock() - start
    return Replay(loop_ns, audio_ns, other_ns, finish_ns), problems


# -- Measurement and report ----------------------------------------------------------------------


@dataclass
class Results:
    """Everything measured in one invocation."""

    workload: Workload
    runs: dict[str, list[Run]]
    memory: dict[str, list[int]]
    events: int
    audio_events: int
    replays: dict[str, list[Replay]]
    problems: list[str]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def measure(args: argparse.Namespace, workload: Workload, langfuse: LangfuseStandIn) -> Results:
    problems: list[str] = []
    runs: dict[str, list[Run]] = {v: [] for v in VARIANTS}

    for variant in VARIANTS:  # warm-up: imports, caches, the SDK's first export
        problems += (await run_call(variant, workload, langfuse, f"bench-warmup-{variant}")).problems
    for r in range(args.repeats):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]  # rotate against drift
        for variant in order:
            run = await run_call(variant, workload, langfuse, f"bench-{variant}-{r}")
            runs[variant].append(run)
            problems += run.problems
        progress(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{v} {runs[v][-1].wall_s:.2f} s" for v in VARIANTS))

    memory: dict[str, list[int]] = {v: [] for v in VARIANTS}
    for r in range(args.memory_repeats):
        tracemalloc.start()  # it slows the call down, so memory is measured on calls of its own
        try:
            for variant in VARIANTS:
                run = await run_call(variant, workload, langfuse, f"bench-memory-{variant}-{r}")
                memory[variant].append(run.peak_bytes)
                problems += run.problems
        finally:
            tracemalloc.stop()
        progress("memory: " + ", ".join(f"{v} {memory[v][-1] / 1024:.0f} KiB" for v in VARIANTS))

    replays: dict[str, list[Replay]] = {k: [] for k in ("noop", "recording", "exporting")}
    recorder = Recorder()
    if args.replay:
        problems += (await run_call("baseline", workload, langfuse, "bench-record", recorder=recorder)).problems
        for r in range(args.repeats):
            for kind in replays:
                result, replay_problems = await replay(
                    kind, recorder.events, workload, langfuse, f"bench-replay-{kind}-{r}"
                )
                replays[kind].append(result)
                problems += replay_problems
        progress(f"replay: {len(recorder.events)} events x {args.repeats} repeats")

    audio_events = sum(isinstance(e.frame, AUDIO_FRAMES) for e in recorder.events)
    return Results(workload, runs, memory, len(recorder.events), audio_events, replays, problems)


def spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    """``median [min-max]`` of ``values``."""
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def paired(results: Results, variant: str, reference: str, value: Callable[[Run], float]) -> str:
    """Ratios of ``variant`` to ``reference`` within each repeat: ``median [min-max]``."""
    ratios = [value(a) / value(b) for a, b in zip(results.runs[variant], results.runs[reference], strict=True)]
    return spread(ratios, "{:.3f}")


def machine() -> str:
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {len(os.sched_getaffinity(0))} CPUs (nproc), "
        f"{platform.machine()}, Python {platform.python_version()}, "
        f"pipecat-ai {version('pipecat-ai')}, langfuse {version('langfuse')}; code {revision()}"
    )


def revision() -> str:
    """The commit measured, and whether ``app/`` differs from it (read-only git calls)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, env=env)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "app"], capture_output=True, env=env)
    except OSError:
        return "of unknown revision"
    if head.returncode != 0:
        return "of unknown revision"
    return head.stdout.strip() + (" with uncommitted changes in app/" if dirty.returncode == 1 else "")


def report(results: Results, args: argparse.Namespace) -> str:
    w, runs = results.workload, results.runs
    frames = runs["baseline"][0].frames
    exporting = runs["exporting"][-1]
    pushes, processed = runs["noop"][-1].observed
    lines = [
        f"Machine: {machine()}.",
        "",
        f"Call: {w.turns} turns ({w.user_s:g} s of user speech, {w.bot_s:g} s of bot speech, {w.words}-word replies, "
        f"{w.relays} extra relays); {frames:,} frames pushed per call; {args.repeats} timed calls per variant "
        "(interleaved, after one warm-up call each). Times are `median [min–max]`; ratios are taken within "
        "each repeat, then summarized the same way.",
        "",
        "| Variant | Wall time per call (ms) | Frames/s | × baseline | × no-op observer | CPU × baseline "
        "| Conversation exit / final flush (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        walls = [r.wall_s for r in runs[variant]]
        vs_noop = paired(results, variant, "noop", lambda r: r.wall_s) if variant != "baseline" else "—"
        exit_ms = (
            spread([r.exit_s * 1e3 for r in runs[variant]], "{:.2f}") if variant in ("recording", "exporting") else "—"
        )
        lines.append(
            f"| {LABELS[variant]} | {spread([s * 1e3 for s in walls])} | {frames / statistics.median(walls):,.0f} "
            f"| {paired(results, variant, 'baseline', lambda r: r.wall_s)} | {vs_noop} "
            f"| {paired(results, variant, 'baseline', lambda r: r.cpu_s)} | {exit_ms} |"
        )
    lines += [
        "",
        f"Per call, Pipecat handed the no-op observer {pushes:,} pushed frames (`on_push_frame`) and "
        f"{processed:,} processed-frame events (`on_process_frame`, one per frame per processor).",
        "",
        f"Langfuse stand-in, per exporting call: received {exporting.generations} generations "
        f"(expected {w.generations}: STT, LLM and TTS per turn) and {exporting.spans} spans in all "
        f"(expected {w.generations + w.turns + 1}: generations, {w.turns} turns, 1 conversation).",
    ]
    if args.memory_repeats:
        memory = results.memory
        lines += [
            "",
            f"Memory: {args.memory_repeats} more calls per variant under `tracemalloc` (Python allocations of every "
            "thread of the process, from just before the call to the end of its final flush); peak minus the "
            "allocations held before the call.",
            "",
            "| Variant | Peak traced memory during the call (KiB) | × baseline |",
            "|---|---|---|",
            *(
                f"| {LABELS[v]} | {spread([b / 1024 for b in memory[v]])} "
                f"| {spread([a / b for a, b in zip(memory[v], memory['baseline'], strict=True)], '{:.2f}')} |"
                for v in VARIANTS
            ),
        ]
    if results.events:
        other = results.events - results.audio_events
        lines += [
            "",
            f"Replay: the {results.events} events one call gives a once-per-frame observer ({results.audio_events} "
            f"audio, {other} other), fed straight to `on_push_frame`; {args.repeats} repeats.",
            "",
            "| Observer | ns per event, whole loop | Per call (ms) | Share of a baseline call "
            "| ns per audio event (timed calls) | ns per other event (timed calls) | `finish()` (ms) |",
            "|---|---|---|---|---|---|---|",
        ]
        baseline_ns = statistics.median(r.wall_s for r in runs["baseline"]) * 1e9
        for kind, replays in results.replays.items():
            finish = spread([r.finish_ns / 1e6 for r in replays], "{:.2f}") if kind != "noop" else "—"
            per_call_ns = statistics.median(r.loop_ns for r in replays)
            lines.append(
                f"| {LABELS[kind][3:]} | {spread([r.loop_ns / results.events for r in replays])} "
                f"| {per_call_ns / 1e6:.1f} | {per_call_ns / baseline_ns:.1%} "
                f"| {spread([r.audio_ns / results.audio_events for r in replays])} "
                f"| {spread([r.other_ns / other for r in replays])} | {finish} |"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.observer_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=40, help="turns per call (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant (default: %(default)s)")
    parser.add_argument("--user-s", type=float, default=2.0, help="user speech per turn, s (default: %(default)s)")
    parser.add_argument("--bot-s", type=float, default=3.0, help="bot speech per turn, s (default: %(default)s)")
    parser.add_argument("--gap-s", type=float, default=0.5, help="silence after the bot, s (default: %(default)s)")
    parser.add_argument("--words", type=int, default=24, help="LLM text frames per reply (default: %(default)s)")
    parser.add_argument("--relays", type=int, default=2, help="extra pass-through processors (default: %(default)s)")
    parser.add_argument(
        "--memory-repeats",
        type=int,
        default=2,
        help="calls per variant under tracemalloc, 0 to skip (default: %(default)s)",
    )
    parser.add_argument("--no-replay", dest="replay", action="store_false", help="skip the replay section")
    args = parser.parse_args(argv)
    if min(args.repeats, args.turns, args.words) < 1 or args.memory_repeats < 0 or args.relays < 0:
        parser.error("--repeats, --turns and --words must be at least 1; --memory-repeats and --relays at least 0")
    return args


async def main_async(args: argparse.Namespace) -> int:
    workload = Workload(args.turns, args.user_s, args.bot_s, args.gap_s, args.words, args.relays)
    with RemoteLangfuse() as server:
        settings = TracingSettings(
            enabled=True, public_key=server.public_key, secret_key=server.secret_key, base_url=server.url
        )
        client = build_client(settings)
        try:
            results = await measure(args, workload, LangfuseStandIn(server, settings, client))
        finally:
            client.shutdown()
    print(report(results, args))
    for problem in results.problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    return 1 if results.problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for name in [n for n in os.environ if n.startswith(("LANGFUSE_", "OTEL_"))]:
        del os.environ[name]  # a developer's Langfuse settings must not change what is measured
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
