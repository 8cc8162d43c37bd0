"""Property test: no sequence of real Pipecat frames and metrics can break the observer.

Hypothesis drives ``VoiceTracer``'s observer, inside ``tracer.conversation()`` and with the real
Langfuse client writing to memory, with random sequences of real frames from real service
instances on a scripted clock: frames in odd orders (transcripts before the ``StartFrame``, TTS
stops before starts, the bot stopping before it started), services and metrics without a model,
negative, NaN, infinite and huge values, metrics classes the observer does not know, duplicate
``EndFrame``/``CancelFrame``, frames after the end and after ``finish()``, and broadcast twins.

Whatever comes, these hold:

* nothing escapes ``on_push_frame``, ``finish()`` or ``cleanup()``, and nothing is reported as a
  tracing failure (a reported failure is a bug of the observer, not a property of the input);
* every observation that was started is exported exactly once (so it was ended exactly once);
* every usage value exported is a non-negative int, and the total of each usage key never exceeds
  what the valid reports sent add up to: no report is counted twice;
* the end-of-call summary is exactly the sum of what was exported, per kind and model.

What the observer does with invalid values (see ``pipecat_langfuse._observer``): a duration
(TTFB, processing time, a VAD's ``stop_secs``) or an STT ``audio_seconds`` that is not a finite
number in 0..1 day, and a TTS character count or an LLM token count that is not an int in
0..2**53-1, is ignored (the whole report, for an LLM usage report) and logged at DEBUG, as is a report
that would take a generation's usage over 2**53-1 (the SDK sends larger ints as strings). Huge
valid counts are kept exactly, as ints; audio seconds are summed as floats and rounded to
milliseconds when exported.

The test is derandomized (a fixed sequence of examples) so CI is reproducible; it takes a few
seconds. To search further once, raise ``max_examples`` and drop ``derandomize`` locally.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from langfuse import Langfuse
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallCancelFrame,
    FunctionCallFromLLM,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    MetricsData,
    ProcessingMetricsData,
    STTUsage,
    STTUsageMetricsData,
    TTFAMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_langfuse import PriceTable, TracingSettings, VoiceTracer
from pipecat_langfuse._langfuse import build_client
from pipecat_langfuse.pricing import S2S_USAGE_KEYS, ModelPrice
from tests.support.langfuse_rules import (
    COST_DETAILS,
    LEVEL,
    METADATA,
    MODEL,
    OUTPUT,
    USAGE_DETAILS,
    observation_attributes,
)
from tests.support.scripted_call import Script, ScriptedLLM, ScriptedSTT, ScriptedTTS, Transport, tts_words

PUBLIC_KEY = "pk-lf-unit-observer-properties"  # the SDK keeps one client per public key
MAX_COUNT = 2**53 - 1  # the largest int the Langfuse SDK sends as a JSON number
MAX_SECONDS = 86_400.0
KIND_OF_GENERATION = {
    "speech-to-text": "stt",
    "llm-completion": "llm",
    "speech-to-speech": "s2s",
    "text-to-speech": "tts",
}

PRICES = PriceTable(
    [
        ModelPrice("acme-stt", "stt", re.compile("acme-stt"), {"input_audio_ms": 1e-06}, "test", "2026-01-01"),
        ModelPrice(
            "acme-llm",
            "llm",
            re.compile("acme-llm"),
            {"input": 1e-06, "output": 2e-06, "input_cached_tokens": 1e-07, "input_cache_creation_tokens": 2e-06},
            "test",
            "2026-01-01",
        ),
        ModelPrice("acme-tts", "tts", re.compile("acme-tts"), {"input_characters": 1e-05}, "test", "2026-01-01"),
    ]
)


class MysteryMetricsData(MetricsData):
    """A metrics class the observer has never heard of (a newer Pipecat, or a custom service)."""

    value: float = 0.0


# -- The processors frames come from (shared by all examples: the observer is new each time) -----

TRANSPORT = Transport(name="transport")
AGGREGATOR = Transport(name="user-aggregator")
STT = ScriptedSTT()
LLM = ScriptedLLM()
TTS = ScriptedTTS()
UNNAMED_STT = ScriptedSTT(model=None, name="UnnamedSTT")  # type: ignore[arg-type]  # settings.model is None
UNNAMED_LLM = ScriptedLLM(model=None, name="UnnamedLLM")
UNNAMED_TTS = ScriptedTTS(model=None, name="UnnamedTTS")  # type: ignore[arg-type]  # settings.model is None
SOURCES: tuple[FrameProcessor, ...] = (TRANSPORT, AGGREGATOR, STT, LLM, TTS, UNNAMED_STT, UNNAMED_LLM, UNNAMED_TTS)
STT_SOURCES = (STT, UNNAMED_STT)
LLM_SOURCES = (LLM, UNNAMED_LLM)
TTS_SOURCES = (TTS, UNNAMED_TTS)
SERVICES = (*STT_SOURCES, *LLM_SOURCES, *TTS_SOURCES)


def source(*natural: FrameProcessor) -> st.SearchStrategy[FrameProcessor]:
    """Mostly a processor that sends such frames in a real pipeline, sometimes any processor."""
    return st.one_of(st.sampled_from(natural), st.sampled_from(SOURCES)) if natural else st.sampled_from(SOURCES)


# -- Values: valid, odd and invalid ------------------------------------------------------------

ODD_FLOATS = (0.0, -0.0, -1.0, 1e-9, 0.25, 3.5, 1e6, 1e300, 1.7e308, math.nan, math.inf, -math.inf)
ODD_INTS = (0, -1, -(2**63), 1, 7, 1_000_000, 2**52, MAX_COUNT, MAX_COUNT + 1, 2**63, 10**30, 10**400)

# Mostly plausible values, so that units get usage; often odd ones, so that every check is hit.
seconds = st.one_of(
    st.floats(min_value=0, max_value=5), st.floats(min_value=0, max_value=5), st.sampled_from(ODD_FLOATS), st.floats()
)
counts = st.one_of(
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=0, max_value=5000),
    st.sampled_from(ODD_INTS),
    st.integers(),
)
models = st.one_of(st.none(), st.just(""), st.sampled_from(("acme-stt", "acme-llm", "acme-tts", "other-model")))


def is_valid_seconds(value: Any) -> bool:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return ok and math.isfinite(value) and 0 <= value <= MAX_SECONDS


def is_valid_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


@st.composite
def token_usage(draw: st.DrawFn) -> LLMTokenUsage:
    """A report with plausible counts (total may still be < prompt), or with odd ones, or unvalidated."""
    values = draw(st.sampled_from((st.integers(min_value=0, max_value=5000), counts)))
    fields: dict[str, Any] = {name: draw(values) for name in ("prompt_tokens", "completion_tokens", "total_tokens")}
    for name in ("cache_read_input_tokens", "cache_creation_input_tokens", "reasoning_tokens"):
        fields[name] = draw(st.one_of(st.none(), values))
    if draw(st.booleans()):
        return LLMTokenUsage(**fields)
    # A service may build its usage without validation (model_construct): any number at all.
    fields["completion_tokens"] = draw(st.one_of(counts, seconds))
    return LLMTokenUsage.model_construct(**fields)


NATURAL_METRICS = {"stt": ("ttfb", "processing", "stt"), "llm": ("ttfb", "processing", "llm"), "tts": ("ttfb", "tts")}


@st.composite
def metrics_data(draw: st.DrawFn, service: FrameProcessor) -> MetricsData:
    """A metric as ``service`` would report it, or sometimes any metric at all."""
    processor, model = service.name, draw(models)
    natural = NATURAL_METRICS.get(type(service).__name__.removeprefix("Scripted").lower(), ())
    anything = ("ttfb", "processing", "llm", "tts", "stt", "ttfa", "mystery")
    kind = draw(
        st.one_of(st.sampled_from(natural or anything), st.sampled_from(natural or anything), st.sampled_from(anything))
    )
    if kind == "ttfb":
        return TTFBMetricsData(processor=processor, model=model, value=draw(seconds))
    if kind == "processing":
        return ProcessingMetricsData(processor=processor, model=model, value=draw(seconds))
    if kind == "llm":
        return LLMUsageMetricsData(processor=processor, model=model, value=draw(token_usage()))
    if kind == "tts":
        if draw(st.booleans()):
            return TTSUsageMetricsData(processor=processor, model=model, value=draw(counts))
        return TTSUsageMetricsData.model_construct(processor=processor, model=model, value=draw(seconds))
    if kind == "stt":
        usage = STTUsage(audio_seconds=draw(seconds))
        return STTUsageMetricsData(processor=processor, model=model, value=usage)
    if kind == "ttfa":  # a Pipecat metric the observer does not use
        return TTFAMetricsData(processor=processor, model=model, ttfa=draw(seconds), ttfb=0.1, leading_silence=0.0)
    return MysteryMetricsData(processor=processor, model=model, value=draw(seconds))


# -- Pushes ---------------------------------------------------------------------------------------


class Push:
    """One push to the observer, ``after_ms`` after the previous one (a plain class: a short repr)."""

    def __init__(
        self, after_ms: int, source: FrameProcessor, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        self.after_ms, self.source, self.frame, self.direction = after_ms, source, frame, direction

    def __repr__(self) -> str:  # for Hypothesis' falsifying examples
        detail = f" {self.frame.data!r}" if isinstance(self.frame, MetricsFrame) else ""
        twin = " (twin)" if self.frame.broadcast_sibling_id is not None else ""
        return f"Push(+{self.after_ms} ms, {self.source.name}, {self.frame}{detail}{twin}, {self.direction.name})"


class Finish:
    """``observer.finish()`` in the middle of the stream, as the tracer's exit would call it."""

    def __repr__(self) -> str:
        return "Finish()"


def twins(frame_class: type[Frame]) -> tuple[Frame, Frame]:
    """A frame broadcast in both directions, as ``FrameProcessor.broadcast_frame`` makes it."""
    down, up = frame_class(), frame_class()
    down.broadcast_sibling_id, up.broadcast_sibling_id = up.id, down.id
    return down, up


def context_frame(turn: int) -> LLMContextFrame:
    messages: list[Any] = [{"role": "user", "content": f"question {turn}"}]
    return LLMContextFrame(context=LLMContext(messages=messages))


context_ids = st.sampled_from((None, "ctx-1", "ctx-2"))
tool_ids = st.sampled_from(("call-1", "call-2"))


def audio_frame(cls: type[InputAudioRawFrame] | type[TTSAudioRawFrame], size: int) -> Frame:
    return cls(audio=b"\x00" * size, sample_rate=16_000, num_channels=1)


def calls_started_frame(ids: list[str]) -> FunctionCallsStartedFrame:
    calls = [FunctionCallFromLLM(function_name="f", tool_call_id=i, arguments={"x": 1}, context=None) for i in ids]
    return FunctionCallsStartedFrame(function_calls=calls)


def call_in_progress_frame(call_id: str) -> FunctionCallInProgressFrame:
    return FunctionCallInProgressFrame(function_name="f", tool_call_id=call_id, arguments={"x": 1})


def call_result_frame(call_id: str, error: str | None) -> FunctionCallResultFrame:
    return FunctionCallResultFrame(
        function_name="f", tool_call_id=call_id, arguments={"x": 1}, result={"ok": error is None}, error=error
    )


def error_frame(processor: FrameProcessor | None) -> ErrorFrame:
    return ErrorFrame("it broke", processor=processor)


gaps_ms = st.sampled_from((0, 0, 1, 10, 100, 499, 500, 501, 2000))

FRAMES: st.SearchStrategy[tuple[FrameProcessor, Frame]] = st.one_of(
    st.tuples(st.sampled_from((TRANSPORT, AGGREGATOR)), st.builds(StartFrame)),
    st.tuples(source(TRANSPORT), st.one_of(st.builds(EndFrame), st.builds(CancelFrame))),
    st.tuples(source(AGGREGATOR), st.builds(UserStartedSpeakingFrame)),
    st.tuples(source(AGGREGATOR), st.builds(UserStoppedSpeakingFrame)),
    st.tuples(source(TRANSPORT), st.builds(VADUserStoppedSpeakingFrame, stop_secs=seconds)),
    st.tuples(source(TRANSPORT), st.builds(BotStartedSpeakingFrame)),
    st.tuples(source(TRANSPORT), st.builds(BotStoppedSpeakingFrame)),
    st.tuples(source(AGGREGATOR), st.builds(InterruptionFrame)),
    st.tuples(
        source(*STT_SOURCES),
        st.builds(
            TranscriptionFrame, text=st.sampled_from(("hello", "", " x ")), user_id=st.just("u"), timestamp=st.just("t")
        ),
    ),
    st.tuples(source(AGGREGATOR), st.builds(context_frame, st.integers(1, 3))),
    st.tuples(source(*LLM_SOURCES), st.builds(LLMFullResponseStartFrame)),
    st.tuples(source(*LLM_SOURCES), st.builds(LLMTextFrame, st.sampled_from(("Hi", " there", "")))),
    st.tuples(source(*LLM_SOURCES), st.builds(LLMFullResponseEndFrame)),
    st.tuples(source(*TTS_SOURCES), st.builds(TTSStartedFrame, context_id=context_ids)),
    st.tuples(source(*TTS_SOURCES), st.builds(lambda c: tts_words("word", context_id=c), context_ids)),
    st.tuples(source(*TTS_SOURCES), st.builds(TTSStoppedFrame, context_id=context_ids)),
    st.tuples(source(TRANSPORT), st.builds(audio_frame, st.just(InputAudioRawFrame), st.sampled_from((0, 320, 641)))),
    st.tuples(
        source(*TTS_SOURCES), st.builds(audio_frame, st.just(TTSAudioRawFrame), st.sampled_from((0, 480, 48_000)))
    ),
    st.tuples(source(*LLM_SOURCES), st.builds(calls_started_frame, st.lists(tool_ids, max_size=2))),
    st.tuples(source(*LLM_SOURCES), st.builds(call_in_progress_frame, tool_ids)),
    st.tuples(source(*LLM_SOURCES), st.builds(call_result_frame, tool_ids, st.sampled_from((None, "boom")))),
    st.tuples(
        source(*LLM_SOURCES), st.builds(FunctionCallCancelFrame, function_name=st.just("f"), tool_call_id=tool_ids)
    ),
    st.tuples(
        st.sampled_from((TRANSPORT, *STT_SOURCES, *LLM_SOURCES, *TTS_SOURCES)),
        st.builds(error_frame, st.sampled_from((None, *STT_SOURCES, *LLM_SOURCES, *TTS_SOURCES))),
    ),
)


@st.composite
def steps(draw: st.DrawFn) -> list[Push | Finish]:
    """A random call: pushes of single frames or of broadcast twins, perhaps a finish() in between."""
    out: list[Push | Finish] = []
    for _ in range(draw(st.integers(min_value=0, max_value=40))):
        choice = draw(st.integers(1, 23))
        if choice == 1:
            frame_class = draw(
                st.sampled_from(
                    (
                        UserStartedSpeakingFrame,
                        UserStoppedSpeakingFrame,
                        BotStartedSpeakingFrame,
                        BotStoppedSpeakingFrame,
                    )
                )
            )
            down, up = twins(frame_class)
            first, second = (down, up) if draw(st.booleans()) else (up, down)
            for frame in (first, second):
                direction = FrameDirection.DOWNSTREAM if frame is down else FrameDirection.UPSTREAM
                out.append(Push(draw(gaps_ms) if frame is first else 0, draw(source(TRANSPORT)), frame, direction))
        elif choice < 8:  # metrics are where the odd values are: a third of the pushes
            service = draw(source(*SERVICES))
            metrics = draw(st.lists(metrics_data(service), min_size=1, max_size=3))
            out.append(Push(draw(gaps_ms), service, MetricsFrame(data=metrics)))
        else:
            processor, frame = draw(FRAMES)
            out.append(Push(draw(gaps_ms), processor, frame))
    if out and draw(st.integers(0, 3)) == 0:  # sometimes finish() before the conversation ends
        out.insert(draw(st.integers(len(out) // 2, len(out))), Finish())
    return out


# -- What was sent -----------------------------------------------------------------------------


@dataclass
class Sent:
    """Upper bounds of each usage key: what the valid usage reports sent add up to."""

    bounds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(int))  # ints stay exact
    invalid: int = 0

    def add(self, item: MetricsData) -> None:
        if isinstance(item, TTSUsageMetricsData):
            if not is_valid_count(item.value):
                self.invalid += 1
                return
            self.bounds["input_characters"] += item.value
        elif isinstance(item, STTUsageMetricsData):
            if not is_valid_seconds(item.value.audio_seconds):
                self.invalid += 1
                return
            self.bounds["input_audio_ms"] += item.value.audio_seconds * 1000
        elif isinstance(item, LLMUsageMetricsData):
            u = item.value
            required = (u.prompt_tokens, u.completion_tokens, u.total_tokens)
            optional = (u.cache_read_input_tokens, u.cache_creation_input_tokens, u.reasoning_tokens)
            if not all(map(is_valid_count, required)) or not all(v is None or is_valid_count(v) for v in optional):
                self.invalid += 1
                return
            self.bounds["input"] += max(u.prompt_tokens, u.total_tokens - u.completion_tokens)
            self.bounds["output"] += u.completion_tokens
            self.bounds["total"] += max(u.total_tokens, u.prompt_tokens + u.completion_tokens)
            self.bounds["input_cached_tokens"] += u.cache_read_input_tokens or 0
            self.bounds["input_cache_creation_tokens"] += u.cache_creation_input_tokens or 0
            self.bounds["output_reasoning_tokens"] += u.reasoning_tokens or 0
            # An LLM that also spoke is a speech-to-speech model: its prompt and output split into buckets.
            for scheme in S2S_USAGE_KEYS.values():
                for bucket, key in scheme.items():
                    prompt = max(u.prompt_tokens, u.total_tokens - u.completion_tokens)
                    self.bounds[key] += prompt if bucket.startswith("input") else u.completion_tokens


class StartedSpans(SpanProcessor):
    """Remembers the id of every span started on the provider."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        self.ids.append(span.get_span_context().span_id)


@dataclass
class InMemory:
    client: Langfuse
    exporter: InMemorySpanExporter
    started: StartedSpans

    def reset(self) -> None:
        self.client.flush()
        self.exporter.clear()
        self.started.ids.clear()


@pytest.fixture(scope="module")
def langfuse() -> Iterator[InMemory]:
    provider, exporter, started = TracerProvider(), InMemorySpanExporter(), StartedSpans()
    provider.add_span_processor(started)
    settings_ = TracingSettings(
        enabled=True, public_key=PUBLIC_KEY, secret_key="sk-lf-in-memory", base_url="http://127.0.0.1:9"
    )
    client = build_client(settings_, tracer_provider=provider, span_exporter=exporter)
    yield InMemory(client, exporter, started)
    client.shutdown()


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def run_call(langfuse: InMemory, script: list[Push | Finish]) -> tuple[VoiceTracer, Sent]:
    langfuse.reset()
    tracer = VoiceTracer(
        TracingSettings(enabled=True, public_key=PUBLIC_KEY, secret_key="sk-lf-in-memory"),
        conversation_id="conv-properties",
        prices=PRICES,
        client=langfuse.client,
    )
    observer, sent = tracer.observer, Sent()
    driver = Script(observer)
    finished = False

    async def play(steps: list[Push | Finish]) -> None:
        nonlocal finished
        for step in steps:
            if isinstance(step, Finish):
                observer.finish()
                finished = True
                continue
            if isinstance(step.frame, MetricsFrame) and not finished:
                for item in step.frame.data:
                    sent.add(item)
            if isinstance(step.frame, TTSAudioRawFrame) and not finished:
                sent.bounds["output_audio_ms"] += len(step.frame.audio) / (16_000 * 2) * 1000
            await driver.push(driver.now_ms + step.after_ms, step.source, step.frame, direction=step.direction)

    async def main() -> None:
        nonlocal finished
        end = len(script) - len(script) // 5
        async with tracer.conversation():
            await play(script[:end])
        finished = True
        await play(script[end:])  # after the conversation: after finish(), the end of the trace
        await observer.cleanup()
        observer.finish()

    asyncio.run(main())
    return tracer, sent


def huge_usage_script() -> list[Push | Finish]:
    """Two TTS reports and one LLM report whose sums are valid ints too large to send as numbers."""
    tts = TTSUsageMetricsData(processor=TTS.name, model="acme-tts", value=MAX_COUNT)
    tokens = LLMTokenUsage(prompt_tokens=MAX_COUNT, completion_tokens=MAX_COUNT, total_tokens=0)
    llm = LLMUsageMetricsData(processor=LLM.name, model="acme-llm", value=tokens)
    return [
        Push(0, TRANSPORT, StartFrame()),
        Push(10, TTS, MetricsFrame(data=[tts])),
        Push(10, TTS, MetricsFrame(data=[tts])),
        Push(10, LLM, MetricsFrame(data=[llm])),
        Push(10, TRANSPORT, EndFrame()),
    ]


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(script=steps())
@example(script=huge_usage_script())
def test_no_sequence_of_frames_breaks_the_observer(langfuse: InMemory, script: list[Push | Finish]) -> None:
    tracer, sent = run_call(langfuse, script)
    event(f"ignored metrics: {'some' if sent.invalid else 'none'}")
    event(f"steps: {len(script) // 10 * 10}+")

    # Nothing escaped (or the call would have raised) and nothing was reported as a failure.
    assert tracer.observer.failures.count == 0

    # Every observation started was exported once, so it was ended once.
    langfuse.client.flush()
    spans = langfuse.exporter.get_finished_spans()
    exported = [span_id(s) for s in spans]
    assert len(exported) == len(set(exported)), "a span was exported twice"
    assert sorted(exported) == sorted(set(langfuse.started.ids)), "a started span was never ended"

    # Exported usage: non-negative ints; per key, no more than the valid reports sent.
    generations = [s for s in spans if s.name in KIND_OF_GENERATION]
    exported_usage: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    exported_cost: dict[tuple[str, str], float | None] = {}
    calls: Counter[tuple[str, str]] = Counter()
    per_key: Counter[str] = Counter()
    for span in spans:
        # Durations and latencies in metadata are real numbers (no NaN, infinity or negative time).
        metadata = observation_attributes(span.attributes or {}).get(METADATA) or {}
        for name, value in metadata.items():
            if isinstance(value, float):
                assert math.isfinite(value), (span.name, name, value)
                assert value >= 0, (span.name, name, value)
    for generation in generations:
        attributes = observation_attributes(generation.attributes or {})
        if attributes.get(USAGE_DETAILS):
            event(f"{generation.name} with usage")
        usage = attributes.get(USAGE_DETAILS) or {}
        cost = attributes.get(COST_DETAILS)
        estimated = (attributes.get(METADATA) or {}).get("usage_estimated", False)
        failed_request = attributes.get(LEVEL) == "ERROR" and not attributes.get(OUTPUT)  # nothing billed
        if KIND_OF_GENERATION[generation.name] == "llm" and not usage and not failed_request:
            raise AssertionError(f"an LLM generation without usage, estimated or reported: {attributes}")
        for key, value in usage.items():
            assert type(value) is int, (key, value)
            assert value >= 0, (key, value)
            if not estimated:  # counted from the prompt and text, not from reports: no bound
                per_key[key] += value
        if cost is not None:
            assert all(math.isfinite(v) for v in cost.values()), cost
            assert all(v >= 0 for v in cost.values()), cost
        key = (KIND_OF_GENERATION[generation.name], attributes[MODEL])
        exported_usage[key].update(usage)
        calls[key] += 1
        if cost is not None:
            exported_cost[key] = (exported_cost.get(key) or 0.0) + cost["total"]
        else:
            exported_cost.setdefault(key, None)
    for key, total in per_key.items():
        # Audio is rounded to milliseconds: STT once on the call's running total, TTS per generation.
        slacks = {"input_audio_ms": 0.5 + 1e-6 * sent.bounds[key], "output_audio_ms": 0.5 * len(generations)}
        slack = slacks.get(key, 0)
        assert total <= sent.bounds[key] + slack, (key, total, sent.bounds[key])

    # The summary is the sum of what was exported, per kind and model.
    summary = {(m.kind, m.model): m for m in tracer.summary().models}
    assert set(summary) == set(calls)
    for key, model in summary.items():
        assert model.calls == calls[key], key
        assert dict(model.usage) == dict(exported_usage[key]), key
        # The same floats added in the same order (export order); approx only guards the last bit.
        expected_cost = exported_cost[key]
        assert model.cost_usd == (None if expected_cost is None else pytest.approx(expected_cost, rel=1e-12)), key


def test_the_property_test_sees_each_kind_of_push() -> None:
    # A guard against a strategy that silently stops producing a kind of frame.
    seen: set[str] = set()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(script=steps())
    def collect(script: list[Push | Finish]) -> None:
        seen.update(type(s.frame).__name__ if isinstance(s, Push) else "Finish" for s in script)

    collect()
    assert {"StartFrame", "EndFrame", "MetricsFrame", "TTSStoppedFrame", "Finish"} <= seen
