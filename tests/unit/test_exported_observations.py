"""What Langfuse would receive for a scripted three-turn call, read from an in-memory exporter.

Real Pipecat frames from real service instances are pushed to the tracer's observer on a
scripted clock (``tests.support.scripted_call``), and the real Langfuse client writes the
observations to an ``InMemorySpanExporter``: no HTTP, no real-time pipeline, exact times.

The call, in pipeline milliseconds (the pipeline clock reads 0 at the ``StartFrame``, when the
wall clock reads 2027-01-15T08:00:00Z):

* turn 1 (0-5000): the user speaks from 1000; the VAD reports the stop at 2000 with
  ``stop_secs=0.8`` (so the user went quiet at 1200); STT audio comes in three uneven chunks
  (993.7 ms); the transcript comes at 2200 and its TTFB after it, at 2300. The bot starts
  speaking at 3000: 1.8 s voice-to-voice.
* turn 2 (5000-8500): 1154.7 ms of audio; the caller barges in at 8500 while the bot speaks;
  the LLM reports its usage and ends after that, at 8600, on turn 2.
* turn 3 (8500-11000): a short exchange; the call ends at 11000.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext

from pipecat_langfuse import ConversationSummary, PriceTable, TracingSettings, VoiceTracer, _observer
from pipecat_langfuse.pricing import ModelPrice
from tests.support.in_memory_langfuse import CLIENT_ENVIRONMENT, CLIENT_RELEASE, InMemoryLangfuse, in_memory_langfuse
from tests.support.langfuse_rules import (
    AS_ROOT,
    COMPLETION_START_TIME,
    COST_DETAILS,
    ENVIRONMENT,
    INPUT,
    IS_APP_ROOT,
    METADATA,
    MODEL,
    MODEL_PARAMETERS,
    OBSERVATION_TYPE,
    OUTPUT,
    RELEASE,
    SESSION_ID,
    TRACE_NAME,
    TRACE_TAGS,
    USAGE_DETAILS,
    USER_ID,
    observation_attributes,
)
from tests.support.scripted_call import (
    MS,
    Script,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    Transport,
    llm_usage,
    processing,
    stt_usage,
    ttfb,
    tts_usage,
    tts_words,
)

PUBLIC_KEY = "pk-lf-unit-exported-observations"  # the SDK keeps one client per public key
CONVERSATION_ID = "conv-scripted"
WALL_CLOCK_AT_START_NS = 1_800_000_000 * 10**9  # 2027-01-15T08:00:00Z
SYSTEM = {"role": "system", "content": "Be brief."}
SYSTEM_PROMPT_SHA256 = hashlib.sha256(b"Be brief.").hexdigest()


def BUILTIN_PRICE(entry: str) -> dict[str, str]:  # noqa: N802 - reads as the constant it stands for
    """The provenance metadata of a generation priced by ``entry`` of :data:`PRICES`."""
    return {"price_source": "builtin", "price_entry": entry, "price_date": "2026-01-01"}


PRICES = PriceTable(
    [
        ModelPrice(
            name="acme-stt",
            kind="stt",
            pattern=re.compile("acme-stt"),
            unit_prices={"input_audio_ms": 1e-06},
            source="test",
            date="2026-01-01",
        ),
        ModelPrice(
            name="acme-llm",
            kind="llm",
            pattern=re.compile("acme-llm"),
            unit_prices={"input": 1e-06, "output": 2e-06},
            source="test",
            date="2026-01-01",
        ),
        ModelPrice(
            name="acme-tts",
            kind="tts",
            pattern=re.compile("acme-tts"),
            unit_prices={"input_characters": 1e-05},
            source="test",
            date="2026-01-01",
        ),
    ]
)


def at(ms: int) -> int:
    """Wall-clock nanoseconds of pipeline time ``ms``."""
    return WALL_CLOCK_AT_START_NS + ms * MS


@dataclass
class Services:
    transport: Transport
    user_aggregator: Transport
    stt: ScriptedSTT
    llm: ScriptedLLM
    tts: ScriptedTTS


@dataclass
class ExportedCall:
    services: Services
    summary: ConversationSummary
    spans: list[ReadableSpan]
    trace_id: str | None

    def named(self, name: str) -> list[ReadableSpan]:
        return sorted((s for s in self.spans if s.name == name), key=lambda s: s.start_time or 0)

    @property
    def root(self) -> ReadableSpan:
        (root,) = self.named("voice-conversation")
        return root

    @property
    def turns(self) -> list[ReadableSpan]:
        return sorted((s for s in self.spans if s.name.startswith("turn ")), key=lambda s: s.start_time or 0)


def new_services() -> Services:
    return Services(
        transport=Transport(name="transport"),
        user_aggregator=Transport(name="user-aggregator"),
        stt=ScriptedSTT(),
        llm=ScriptedLLM(),
        tts=ScriptedTTS(),
    )


def context(*messages: dict[str, str]) -> LLMContextFrame:
    return LLMContextFrame(context=LLMContext(messages=[SYSTEM, *messages]))  # type: ignore[list-item]


async def play_three_turns(script: Script, s: Services) -> None:
    user1 = {"role": "user", "content": "Hi, are you there?"}
    bot1 = {"role": "assistant", "content": "Yes, I am."}
    user2 = {"role": "user", "content": "Tell me everything."}
    bot2 = {"role": "assistant", "content": "Sure."}
    user3 = {"role": "user", "content": "Stop, thanks."}
    push = script.push

    # Turn 1.
    await push(0, s.transport, StartFrame())
    await push(1000, s.user_aggregator, UserStartedSpeakingFrame())
    await push(1400, s.stt, stt_usage(s.stt, 0.3337))
    await push(1900, s.stt, stt_usage(s.stt, 0.25))
    await push(2000, s.transport, VADUserStoppedSpeakingFrame(stop_secs=0.8))
    await push(2100, s.stt, stt_usage(s.stt, 0.41))
    await push(2200, s.stt, TranscriptionFrame("Hi, are you there?", user_id="caller", timestamp="t"))
    await push(2300, s.stt, ttfb(s.stt, 0.3))  # after the transcript, as Deepgram's finalize does
    await push(2350, s.user_aggregator, UserStoppedSpeakingFrame())
    await push(2400, s.user_aggregator, context(user1))
    await push(2450, s.llm, LLMFullResponseStartFrame(), ttfb(s.llm, 0.25))
    await push(2700, s.llm, LLMTextFrame("Yes,"))
    await push(2750, s.llm, LLMTextFrame(" I am."))
    await push(2760, s.tts, TTSStartedFrame(context_id="ctx-1"))
    await push(2770, s.tts, tts_usage(s.tts, 10))
    await push(2800, s.llm, llm_usage(s.llm, 20, 5), processing(s.llm, 0.35), LLMFullResponseEndFrame())
    await push(2900, s.tts, ttfb(s.tts, 0.14))
    await push(3000, s.transport, BotStartedSpeakingFrame())
    await push(3000, s.tts, tts_words("Yes,", context_id="ctx-1"))
    await push(3100, s.tts, tts_words("I", context_id="ctx-1"))
    await push(3200, s.tts, tts_words("am.", context_id="ctx-1"))
    await push(3800, s.tts, TTSStoppedFrame(context_id="ctx-1"))
    await push(3900, s.transport, BotStoppedSpeakingFrame())

    # Turn 2: the caller barges in on the reply.
    await push(5000, s.user_aggregator, UserStartedSpeakingFrame())
    await push(5900, s.stt, stt_usage(s.stt, 0.6547))
    await push(6400, s.stt, stt_usage(s.stt, 0.5))
    await push(6500, s.transport, VADUserStoppedSpeakingFrame(stop_secs=0.8))
    await push(6700, s.stt, TranscriptionFrame("Tell me everything.", user_id="caller", timestamp="t"))
    await push(6750, s.stt, ttfb(s.stt, 0.2))
    await push(6800, s.user_aggregator, UserStoppedSpeakingFrame())
    await push(6850, s.user_aggregator, context(user1, bot1, user2))
    await push(6900, s.llm, LLMFullResponseStartFrame(), ttfb(s.llm, 0.2))
    await push(7100, s.llm, LLMTextFrame("Sure."))
    await push(7150, s.tts, TTSStartedFrame(context_id="ctx-2"))
    await push(7300, s.tts, tts_usage(s.tts, 5), ttfb(s.tts, 0.15))
    await push(7600, s.llm, LLMTextFrame(" Let"))
    await push(7700, s.transport, BotStartedSpeakingFrame())
    await push(7700, s.tts, tts_words("Sure.", context_id="ctx-2"))
    await push(8000, s.llm, LLMTextFrame(" me"))
    await push(8500, s.user_aggregator, UserStartedSpeakingFrame(), InterruptionFrame())
    await push(8550, s.transport, BotStoppedSpeakingFrame())
    await push(8600, s.llm, llm_usage(s.llm, 40, 3), LLMFullResponseEndFrame())  # after the barge-in

    # Turn 3.
    await push(9350, s.stt, stt_usage(s.stt, 0.8))
    await push(9400, s.transport, VADUserStoppedSpeakingFrame(stop_secs=0.8))
    await push(9450, s.stt, TranscriptionFrame("Stop, thanks.", user_id="caller", timestamp="t"))
    await push(9500, s.stt, ttfb(s.stt, 0.1))
    await push(9550, s.user_aggregator, UserStoppedSpeakingFrame(), context(user1, bot1, user2, bot2, user3))
    await push(9600, s.llm, LLMFullResponseStartFrame(), ttfb(s.llm, 0.15))
    await push(9750, s.llm, LLMTextFrame("Okay."))
    await push(9760, s.tts, TTSStartedFrame(context_id="ctx-3"))
    await push(9800, s.llm, llm_usage(s.llm, 50, 2), LLMFullResponseEndFrame())
    await push(9900, s.tts, tts_usage(s.tts, 5), ttfb(s.tts, 0.14))
    await push(10000, s.transport, BotStartedSpeakingFrame())
    await push(10000, s.tts, tts_words("Okay.", context_id="ctx-3"))
    await push(10400, s.tts, TTSStoppedFrame(context_id="ctx-3"))
    await push(10500, s.transport, BotStoppedSpeakingFrame())
    await push(11000, s.transport, EndFrame())


def settings() -> TracingSettings:
    return TracingSettings(
        enabled=True, public_key=PUBLIC_KEY, secret_key="sk-lf-in-memory", user_id="caller-42", tags=("ci",)
    )


@pytest.fixture(scope="module")
def langfuse() -> Iterator[InMemoryLangfuse]:
    langfuse = in_memory_langfuse(PUBLIC_KEY)
    yield langfuse
    langfuse.close()


def run_scripted_call(langfuse: InMemoryLangfuse, play: Any) -> ExportedCall:
    """Play ``play(script, services)`` inside ``tracer.conversation()``; collect the exported spans."""
    langfuse.clear()
    services = new_services()
    tracer = VoiceTracer(settings(), conversation_id=CONVERSATION_ID, prices=PRICES, client=langfuse.client)

    async def main() -> None:
        async with tracer.conversation():
            await play(Script(tracer.observer), services)

    # The observer reads the wall clock once, at the StartFrame, to place pipeline times on it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_observer, "time", SimpleNamespace(time_ns=lambda: WALL_CLOCK_AT_START_NS))
        asyncio.run(main())
    return ExportedCall(services=services, summary=tracer.summary(), spans=langfuse.spans(), trace_id=tracer.trace_id)


@pytest.fixture(scope="module")
def call(langfuse: InMemoryLangfuse) -> ExportedCall:
    return run_scripted_call(langfuse, play_three_turns)


def pop_trace_attributes(attributes: dict[str, Any]) -> None:
    """Pop what every span of the call carries (from ``propagate_attributes`` and the client)."""
    assert attributes.pop(SESSION_ID) == CONVERSATION_ID
    assert attributes.pop(USER_ID) == "caller-42"
    assert attributes.pop(TRACE_NAME) == "voice-conversation"
    assert attributes.pop(TRACE_TAGS) == ["ci"]
    assert attributes.pop(ENVIRONMENT) == CLIENT_ENVIRONMENT
    assert attributes.pop(RELEASE) == CLIENT_RELEASE


def times(span: ReadableSpan) -> tuple[int, int]:
    """(start, end) of an ended span, in ns since the epoch."""
    assert span.start_time is not None, span.name
    assert span.end_time is not None, span.name
    return span.start_time, span.end_time


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


# -- Turns ---------------------------------------------------------------------------------


def test_each_turn_is_one_span_under_the_conversation_with_exact_times(call: ExportedCall) -> None:
    turns = call.turns
    assert [t.name for t in turns] == ["turn 1", "turn 2", "turn 3"]
    assert {parent_id(t) for t in turns} == {span_id(call.root)}
    assert [times(t) for t in turns] == [(at(0), at(5000)), (at(5000), at(8500)), (at(8500), at(11000))]


def test_turn_spans_carry_exactly_the_transcript_and_turn_metadata(call: ExportedCall) -> None:
    expected = [
        # Endpointing: from the end of speech (the VAD's stop less its 0.8 s) to the UserStoppedSpeakingFrame.
        ("Hi, are you there?", "Yes, I am.", {"turn": 1, "interrupted": False, "voice_to_voice_latency_s": 1.8}, 1150),
        # Cut off after "Sure.": the output is what the caller heard, next to what the LLM generated.
        (
            "Tell me everything.",
            "Sure.",
            {"turn": 2, "interrupted": True, "voice_to_voice_latency_s": 2.0, "generated_text": "Sure. Let me"},
            1100,
        ),
        ("Stop, thanks.", "Okay.", {"turn": 3, "interrupted": False, "voice_to_voice_latency_s": 1.4}, 950),
    ]
    for turn, (user_text, bot_text, metadata, endpointing_ms) in zip(call.turns, expected, strict=True):
        attributes = observation_attributes(turn.attributes or {})
        pop_trace_attributes(attributes)
        assert attributes.pop(OBSERVATION_TYPE) == "span"
        assert attributes.pop(INPUT) == user_text
        assert attributes.pop(OUTPUT) == bot_text
        assert attributes.pop(METADATA) == {**metadata, "endpointing_delay_ms": endpointing_ms}
        assert attributes == {}, turn.name


def test_turns_follow_each_other_and_hold_the_work_that_started_in_them(call: ExportedCall) -> None:
    turns = call.turns
    for turn in turns:
        start, end = times(turn)
        assert start < end, turn.name
    for earlier, later in itertools.pairwise(turns):
        assert times(earlier)[1] <= times(later)[0], (earlier.name, later.name)
    by_id = {span_id(t): t for t in turns}
    generations = [s for s in call.spans if s.name in ("speech-to-text", "llm-completion", "text-to-speech")]
    assert len(generations) == 9
    for generation in generations:
        turn = by_id[parent_id(generation) or 0]
        start, end = times(turn)
        assert start <= times(generation)[0] <= end, (generation.name, turn.name)
    # Work cut short by the barge-in may end after its turn: the LLM reported its usage at 8600.
    (_, interrupted_llm, _) = call.named("llm-completion")
    assert times(interrupted_llm)[1] == at(8600) > times(turns[1])[1]


def test_voice_to_voice_latency_runs_from_when_the_user_went_quiet(call: ExportedCall) -> None:
    # The VAD reported the stop at 2000 ms with stop_secs=0.8: the user went quiet at 1200 ms.
    # The bot started speaking at 3000 ms: 1.8 s, not the 1.0 s since the VAD spoke up.
    assert [t.voice_to_voice_s for t in call.summary.turns] == [1.8, 2.0, 1.4]


# -- Generations ---------------------------------------------------------------------------


def test_stt_generations_are_exactly_the_audio_rounded_to_milliseconds(call: ExportedCall) -> None:
    stt = call.services.stt
    expected = [
        # 0.3337 + 0.25 + 0.41 s = 993.7 ms, rounded (not truncated) to 994.
        ((1000, 2200), "Hi, are you there?", 994, {"ttfb_s": 0.3, "audio_seconds": 0.9937}, 1),
        # Rounded on the running total, so the call adds up: 2148.4 ms in all -> 2148 - 994 = 1154.
        # The STT unit starts when the user did.
        ((5000, 6700), "Tell me everything.", 1154, {"ttfb_s": 0.2, "audio_seconds": 1.1547}, 2),
        ((8500, 9450), "Stop, thanks.", 800, {"ttfb_s": 0.1, "audio_seconds": 0.8}, 3),  # 2948.4 -> 2948
    ]
    generations = call.named("speech-to-text")
    assert len(generations) == len(expected)  # a TTFB that comes after the transcript opens no unit
    for generation, ((start, end), text, ms, metadata, turn) in zip(generations, expected, strict=True):
        assert times(generation) == (at(start), at(end))
        attributes = observation_attributes(generation.attributes or {})
        pop_trace_attributes(attributes)
        assert attributes.pop(OBSERVATION_TYPE) == "generation"
        assert attributes.pop(MODEL) == "acme-stt"
        assert attributes.pop(MODEL_PARAMETERS) == {"language": "en"}  # the service's settings
        assert attributes.pop(OUTPUT) == text
        assert attributes.pop(USAGE_DETAILS) == {"input_audio_ms": ms}
        assert attributes.pop(COST_DETAILS) == {"input_audio_ms": ms / 1e6, "total": ms / 1e6}  # $1e-6 per ms
        assert attributes.pop(METADATA) == {
            "processor": stt.name,
            "turn": turn,
            "transcripts": 1,
            **BUILTIN_PRICE("acme-stt"),
            **metadata,
        }
        assert attributes == {}, text


def test_llm_generations_are_exactly_the_tokens_and_the_context(call: ExportedCall) -> None:
    llm = call.services.llm
    user1 = {"role": "user", "content": "Hi, are you there?"}
    bot1 = {"role": "assistant", "content": "Yes, I am."}
    user2 = {"role": "user", "content": "Tell me everything."}
    bot2 = {"role": "assistant", "content": "Sure."}
    user3 = {"role": "user", "content": "Stop, thanks."}
    expected = [
        (
            (2450, 2800, 2700),
            [SYSTEM, user1],
            "Yes, I am.",
            {"input": 20, "output": 5, "total": 25},
            {"input": 2e-05, "output": 1e-05, "total": 3e-05},
            {"turn": 1, "processing_s": 0.35, "output_fate": "spoken"},
        ),
        (
            (6900, 8600, 7100),
            [SYSTEM, user1, bot1, user2],
            "Sure. Let me",
            {"input": 40, "output": 3, "total": 43},
            {"input": 4e-05, "output": 6e-06, "total": 4.6e-05},
            {"turn": 2, "output_fate": "cut_off"},  # the caller heard "Sure." of it
        ),
        (
            (9600, 9800, 9750),
            [SYSTEM, user1, bot1, user2, bot2, user3],
            "Okay.",
            {"input": 50, "output": 2, "total": 52},
            {"input": 5e-05, "output": 4e-06, "total": 5.4e-05},
            {"turn": 3, "output_fate": "spoken"},
        ),
    ]
    generations = call.named("llm-completion")
    assert len(generations) == len(expected)
    for generation, ((start, end, first_token), messages, text, usage, cost, metadata) in zip(
        generations, expected, strict=True
    ):
        assert times(generation) == (at(start), at(end))
        attributes = observation_attributes(generation.attributes or {})
        pop_trace_attributes(attributes)
        assert attributes.pop(OBSERVATION_TYPE) == "generation"
        assert attributes.pop(MODEL) == "acme-llm"
        assert attributes.pop(INPUT) == messages
        assert attributes.pop(OUTPUT) == text
        assert attributes.pop(USAGE_DETAILS) == usage
        assert attributes.pop(COST_DETAILS) == cost
        # Start + TTFB: 2027-01-15T08:00:02.700000Z for the first.
        assert attributes.pop(COMPLETION_START_TIME) == f"2027-01-15T08:00:{first_token / 1000:09.6f}Z"
        assert attributes.pop(METADATA) == {
            "processor": llm.name,
            **BUILTIN_PRICE("acme-llm"),
            "system_prompt_sha256": SYSTEM_PROMPT_SHA256,
            **metadata,
        }
        assert attributes == {}, text


def test_tts_generations_are_exactly_the_characters_and_end_at_the_interruption(call: ExportedCall) -> None:
    tts = call.services.tts
    expected = [
        ((2760, 3800), "Yes, I am.", 10, {"turn": 1, "ttfb_s": 0.14}),
        ((7150, 8500), "Sure.", 5, {"turn": 2, "ttfb_s": 0.15}),  # closed by the barge-in at 8500
        ((9760, 10400), "Okay.", 5, {"turn": 3, "ttfb_s": 0.14}),
    ]
    generations = call.named("text-to-speech")
    assert len(generations) == len(expected)
    for generation, ((start, end), text, characters, metadata) in zip(generations, expected, strict=True):
        assert times(generation) == (at(start), at(end))
        attributes = observation_attributes(generation.attributes or {})
        pop_trace_attributes(attributes)
        assert attributes.pop(OBSERVATION_TYPE) == "generation"
        assert attributes.pop(MODEL) == "acme-tts"
        assert attributes.pop(MODEL_PARAMETERS) == {"voice": "acme-voice", "language": "en"}
        assert attributes.pop(INPUT) == text
        assert attributes.pop(USAGE_DETAILS) == {"input_characters": characters}
        cost = characters / 1e5  # $1e-5 per character
        assert attributes.pop(COST_DETAILS) == {"input_characters": cost, "total": cost}
        assert attributes.pop(METADATA) == {"processor": tts.name, **BUILTIN_PRICE("acme-tts"), **metadata}
        assert attributes == {}, text


def test_each_generation_is_a_child_of_the_turn_its_work_started_in(call: ExportedCall) -> None:
    turn_ids = [span_id(t) for t in call.turns]
    for name in ("speech-to-text", "llm-completion", "text-to-speech"):
        assert [parent_id(g) for g in call.named(name)] == turn_ids, name


def test_the_conversation_span_carries_the_call_totals_and_nothing_else(call: ExportedCall) -> None:
    attributes = observation_attributes(call.root.attributes or {})
    pop_trace_attributes(attributes)
    assert attributes.pop(OBSERVATION_TYPE) == "span"
    assert attributes.pop(AS_ROOT) is True
    assert attributes.pop(IS_APP_ROOT) is True
    assert attributes.pop(INPUT) == "Hi, are you there?"
    assert attributes.pop(OUTPUT) == "Okay."
    # Known once the first LLM call is seen: set on the root for the trace's metadata.
    assert attributes.pop("langfuse.trace.metadata.system_prompt_sha256") == SYSTEM_PROMPT_SHA256
    # 994 + 1154 + 800 ms of audio, 110 + 10 tokens, 20 characters:
    # 0.002948 + (0.00003 + 0.000046 + 0.000054) + 0.0002 = 0.003278 USD.
    assert attributes.pop(METADATA) == {
        "conversation_id": CONVERSATION_ID,
        "turns": 3,
        "interruptions": 1,
        "voice_to_voice_mean_ms": 1733.3,  # (1.8 + 2.0 + 1.4) / 3 s
        "voice_to_voice_p95_ms": 2000.0,  # nearest rank of three: the slowest
        "cost_stt_usd": 0.002948,
        "cost_llm_usd": 0.00013,
        "cost_tts_usd": 0.0002,
        "total_cost_usd": 0.003278,
        "errors": 0,
        "unrecovered_errors": 0,
    }
    assert attributes == {}
    assert len(call.spans) == 1 + 3 + 9
    assert {format(s.context.trace_id, "032x") for s in call.spans if s.context} == {call.trace_id}
    # The SDK parents the root on a span id of its own, outside the trace: Langfuse shows it at the root.
    assert parent_id(call.root) not in {span_id(s) for s in call.spans}


def test_the_summary_counts_each_usage_report_once(call: ExportedCall) -> None:
    summary = call.summary
    assert [(t.number, t.user_text, t.bot_text, t.interrupted) for t in summary.turns] == [
        (1, "Hi, are you there?", "Yes, I am.", False),
        (2, "Tell me everything.", "Sure. Let me", True),
        (3, "Stop, thanks.", "Okay.", False),
    ]
    assert [(m.kind, m.model, m.calls, m.usage) for m in summary.models] == [
        ("stt", "acme-stt", 3, {"input_audio_ms": 2948}),
        ("llm", "acme-llm", 3, {"input": 110, "output": 10, "total": 120}),
        ("tts", "acme-tts", 3, {"input_characters": 20}),
    ]


# -- A unit that receives no metrics -----------------------------------------------------------


async def play_units_without_metrics(script: Script, s: Services) -> None:
    unnamed = ScriptedLLM(model=None, name="UnnamedLLM")
    push = script.push
    await push(0, s.transport, StartFrame())
    await push(100, s.user_aggregator, context({"role": "user", "content": "Hello?"}))
    await push(200, s.llm, LLMFullResponseStartFrame())
    await push(300, s.llm, LLMTextFrame("Hi."))
    await push(400, s.llm, LLMFullResponseEndFrame())
    await push(500, s.tts, TTSStartedFrame(context_id="ctx-1"))
    await push(600, s.tts, tts_words("Hi.", context_id="ctx-1"))
    await push(700, s.tts, TTSStoppedFrame(context_id="ctx-1"))
    await push(800, unnamed, LLMFullResponseStartFrame())
    await push(900, unnamed, LLMFullResponseEndFrame())
    await push(1000, s.transport, EndFrame())


def test_a_unit_that_receives_no_metrics_carries_the_model_of_its_service(langfuse: InMemoryLangfuse) -> None:
    call = run_scripted_call(langfuse, play_units_without_metrics)

    llm, unnamed = call.named("llm-completion")
    (tts,) = call.named("text-to-speech")
    # The model comes from the service's settings.model, not from a metric.
    assert dict(llm.attributes or {})[MODEL] == "acme-llm"
    assert dict(tts.attributes or {})[MODEL] == "acme-tts"
    # A service with no model set is named after its class (not "UnnamedLLM", its processor's name),
    # so every instance of it, in every process, is one model to Langfuse and the price table.
    assert dict(unnamed.attributes or {})[MODEL] == "ScriptedLLM"
    # Neither LLM call reported usage (as when a stream is cut): both are estimated, and say so.
    # o200k_base: 3 per message + "system" (1) + "Be brief." (3) + "user" (1) + "Hello?" (2) + 3 = 16;
    # "Hi." is 2. The context reached the unnamed LLM too (each LLM a context reaches gets it once,
    # as both do in a ParallelPipeline); it produced no text.
    assert [(m.kind, m.model, m.calls, m.estimated_calls, m.usage) for m in call.summary.models] == [
        ("llm", "acme-llm", 1, 1, {"input": 16, "output": 2, "total": 18}),
        ("llm", "ScriptedLLM", 1, 1, {"input": 16, "output": 0, "total": 16}),
        ("tts", "acme-tts", 1, 0, {}),
    ]
    metadata = observation_attributes(llm.attributes or {})[METADATA]
    assert (metadata["usage_estimated"], metadata["usage_estimate_method"]) == (True, "o200k_base (approximation)")
