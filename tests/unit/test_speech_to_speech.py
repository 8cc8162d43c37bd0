"""Speech-to-speech responses as Langfuse would receive them, on a scripted clock.

The frames are those Pipecat's realtime services push, in their order (``OpenAIRealtimeLLMService``
and ``GeminiLiveLLMService`` in Pipecat 1.14): the metadata frame that says the service is
realtime, the user's transcript pushed upstream, ``LLMFullResponseStartFrame``, the reply's audio
(``TTSStartedFrame``, ``TTSAudioRawFrame``) with its transcript (``LLMTextFrame`` and a sentence
``TTSTextFrame``), the usage report, then ``TTSStoppedFrame`` and ``LLMFullResponseEndFrame``;
after a barge-in the end frames come first and the usage after them.

The usage reports are gross and nested, as the providers send them. The numbers of the OpenAI
call are OpenAI's own example (community.openai.com, "help me understand the realtime usage
block"): 789 input tokens = 313 text + 476 audio, of which 640 cached = 256 text + 384 audio.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable
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
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMServiceMetadataFrame,
    LLMTextFrame,
    MetricsFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage, LLMUsageMetricsData
from pipecat.processors.frame_processor import FrameDirection

from pipecat_langfuse import ConversationSummary, PriceTable, TracingSettings, VoiceTracer, _observer
from pipecat_langfuse._usage import s2s_usage_details
from pipecat_langfuse.pricing import ModelPrice
from tests.support.in_memory_langfuse import InMemoryLangfuse, in_memory_langfuse
from tests.support.langfuse_rules import (
    COMPLETION_START_TIME,
    COST_DETAILS,
    INPUT,
    METADATA,
    MODEL,
    OUTPUT,
    USAGE_DETAILS,
    observation_attributes,
)
from tests.support.scripted_call import MS, Script, ScriptedLLM, Transport, ttfb

PUBLIC_KEY = "pk-lf-unit-speech-to-speech"
WALL_CLOCK_AT_START_NS = 1_800_000_000 * 10**9
SAMPLE_RATE = 24_000
OPENAI_MODEL = "gpt-realtime-2"
GEMINI_MODEL = "models/gemini-2.5-flash-native-audio-preview-12-2025"

# OpenAI's example: 789 in (313 text + 476 audio; 640 cached: 256 text + 384 audio); 120 out, 100 of it audio.
OPENAI_USAGE = LLMTokenUsage(
    prompt_tokens=789,
    completion_tokens=120,
    total_tokens=909,
    cache_read_input_tokens=640,
    input_audio_tokens=476,
    output_audio_tokens=100,
    cache_read_input_audio_tokens=384,
)
# A response cut by a barge-in: OpenAI still reports it, with what was generated before the cut.
OPENAI_CUT_USAGE = LLMTokenUsage(
    prompt_tokens=1100,
    completion_tokens=45,
    total_tokens=1145,
    cache_read_input_tokens=768,
    input_audio_tokens=700,
    output_audio_tokens=40,
    cache_read_input_audio_tokens=512,
)
# Gemini Live: prompt 522 = 332 text + 165 audio + 25 tokens of no modality; 300 out = 200 audio
# + 60 text + 40 thinking (reasoning is part of the completion); no cache.
GEMINI_USAGE = LLMTokenUsage(
    prompt_tokens=522,
    completion_tokens=300,
    total_tokens=822,
    reasoning_tokens=40,
    input_audio_tokens=165,
    output_audio_tokens=200,
)


@pytest.fixture(scope="module")
def langfuse() -> InMemoryLangfuse:
    return in_memory_langfuse(PUBLIC_KEY)


@dataclass
class Call:
    summary: ConversationSummary
    spans: list[ReadableSpan]

    def named(self, name: str) -> list[ReadableSpan]:
        return sorted((s for s in self.spans if s.name == name), key=lambda s: s.start_time or 0)

    def attributes(self, name: str) -> list[dict[str, Any]]:
        return [observation_attributes(s.attributes or {}) for s in self.named(name)]


Play = Callable[[Script, Transport, ScriptedLLM], Awaitable[None]]


def run(langfuse: InMemoryLangfuse, model: str | None, play: Play, prices: PriceTable | None = None) -> Call:
    langfuse.clear()
    settings = TracingSettings.from_env(
        {"ENABLE_TRACING": "true", "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY, "LANGFUSE_SECRET_KEY": "sk-lf-unit"}
    )
    tracer = VoiceTracer(settings, prices=prices or PriceTable.load(), client=langfuse.client)
    transport, s2s = Transport(name="transport"), ScriptedLLM(model=model, name="realtime")

    async def main() -> None:
        async with tracer.conversation():
            await play(Script(tracer.observer), transport, s2s)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_observer, "time", SimpleNamespace(time_ns=lambda: WALL_CLOCK_AT_START_NS))
        asyncio.run(main())
    return Call(summary=tracer.summary(), spans=langfuse.spans())


def audio(seconds: float) -> TTSAudioRawFrame:
    return TTSAudioRawFrame(audio=b"\0\0" * int(SAMPLE_RATE * seconds), sample_rate=SAMPLE_RATE, num_channels=1)


def usage(s2s: ScriptedLLM, value: LLMTokenUsage) -> MetricsFrame:
    model = s2s.settings.model if isinstance(s2s.settings.model, str) else ""
    return MetricsFrame(data=[LLMUsageMetricsData(processor=s2s.name, model=model, value=value)])


async def reply(
    script: Script, transport: Transport, s2s: ScriptedLLM, at_ms: int, heard: str, said: str, report: LLMTokenUsage
) -> None:
    """One exchange of OpenAI Realtime's: the caller speaks 1 s, the model answers 1 s of audio 500 ms later."""
    push = script.push
    await push(at_ms, transport, UserStartedSpeakingFrame())
    await push(at_ms + 1000, transport, UserStoppedSpeakingFrame())
    await push(at_ms + 1100, s2s, TranscriptionFrame(heard, "", "t"), direction=FrameDirection.UPSTREAM)
    await push(at_ms + 1200, s2s, LLMFullResponseStartFrame())
    await push(at_ms + 1500, s2s, ttfb(s2s, 0.5), TTSStartedFrame(), audio(1.0))
    await push(at_ms + 1550, s2s, LLMTextFrame(said), sentence(said))
    await push(at_ms + 1600, transport, BotStartedSpeakingFrame())
    await push(at_ms + 2500, s2s, usage(s2s, report), TTSStoppedFrame(), LLMFullResponseEndFrame())
    await push(at_ms + 2600, transport, BotStoppedSpeakingFrame())


def sentence(text: str) -> TTSTextFrame:
    """The sentence ``TTSTextFrame`` a realtime service pushes with its transcript (1.13 renamed the field)."""
    names = {f.name for f in dataclasses.fields(TTSTextFrame)}
    kind = "text_type" if "text_type" in names else "aggregated_by"
    return TTSTextFrame(text, **{kind: "sentence"})


async def start_realtime(script: Script, transport: Transport, s2s: ScriptedLLM) -> None:
    """The call starts, and the service announces itself as a realtime (speech-to-speech) one, as Pipecat's do."""
    await script.push(0, transport, StartFrame())
    await script.push(0, s2s, LLMServiceMetadataFrame(service_name=s2s.name, is_realtime_service=True))


async def play_openai(script: Script, transport: Transport, s2s: ScriptedLLM) -> None:
    push = script.push
    await start_realtime(script, transport, s2s)
    await reply(script, transport, s2s, 1000, "What's the weather like?", "It is sunny and warm.", OPENAI_USAGE)
    # Turn 2: the caller cuts in; the end frames come at the cut, the usage report after them.
    await push(5000, transport, UserStartedSpeakingFrame())
    await push(6000, transport, UserStoppedSpeakingFrame())
    await push(6100, s2s, TranscriptionFrame("And tomorrow?", "", "t"), direction=FrameDirection.UPSTREAM)
    await push(6200, s2s, LLMFullResponseStartFrame())
    await push(6400, s2s, ttfb(s2s, 0.4), TTSStartedFrame(), audio(2.0))
    await push(6450, s2s, LLMTextFrame("Tomorrow will be rainy."), sentence("Tomorrow will be rainy."))
    await push(6500, transport, BotStartedSpeakingFrame())
    await push(7000, transport, UserStartedSpeakingFrame(), InterruptionFrame())
    await push(7000, s2s, LLMFullResponseEndFrame(), TTSStoppedFrame())
    await push(7100, s2s, usage(s2s, OPENAI_CUT_USAGE))
    await push(9000, transport, EndFrame())


def test_openai_realtime_usage_splits_into_disjoint_buckets_that_add_up_to_the_bill() -> None:
    assert s2s_usage_details(OPENAI_USAGE) == {
        "input_text_tokens": 57,  # 789 - 476 audio - (640 - 384) cached text
        "input_cached_text_tokens": 256,
        "input_audio_tokens": 92,  # 476 - 384 cached audio
        "input_cached_audio_tokens": 384,
        "output_text_tokens": 20,
        "output_audio_tokens": 100,
        "total": 909,  # = total_tokens: no token counted twice
    }


def test_gemini_usage_uses_langfuses_gemini_keys_and_keeps_unlabelled_tokens_as_text() -> None:
    assert s2s_usage_details(GEMINI_USAGE, "gemini") == {
        "input_text": 357,  # 522 - 165 audio: 332 text + 25 of no modality
        "input_audio": 165,
        "output_text": 100,  # 300 - 200 audio: 60 text + 40 thinking
        "output_audio": 200,
        "total": 822,
    }


def test_each_openai_realtime_response_is_one_priced_speech_to_speech_generation(langfuse: InMemoryLangfuse) -> None:
    call = run(langfuse, OPENAI_MODEL, play_openai)

    assert call.named("llm-completion") == []  # a realtime response is not also an LLM completion
    first, cut = call.attributes("speech-to-speech")
    assert first[MODEL] == OPENAI_MODEL
    assert first[INPUT] == "What's the weather like?"  # what the model heard, as it transcribed it
    assert first[OUTPUT] == "It is sunny and warm."
    assert first[USAGE_DETAILS] == s2s_usage_details(OPENAI_USAGE)
    # gpt-realtime-2, USD per 1M: text 4 / cached 0.40 / out 24; audio 32 / cached 0.40 / out 64.
    assert first[COST_DETAILS] == {
        "input_text_tokens": 0.000228,  # 57 x 4
        "input_cached_text_tokens": 0.0001024,  # 256 x 0.40
        "input_audio_tokens": 0.002944,  # 92 x 32
        "input_cached_audio_tokens": 0.0001536,  # 384 x 0.40
        "output_text_tokens": 0.00048,  # 20 x 24
        "output_audio_tokens": 0.0064,  # 100 x 64
        "total": 0.010308,
    }
    (first_span, cut_span) = call.named("speech-to-speech")
    assert first_span.start_time == WALL_CLOCK_AT_START_NS + 2200 * MS  # LLMFullResponseStartFrame
    assert first_span.end_time == WALL_CLOCK_AT_START_NS + 3500 * MS  # LLMFullResponseEndFrame
    assert cut_span.end_time == WALL_CLOCK_AT_START_NS + 7000 * MS  # the cut, not the late usage report
    assert first[COMPLETION_START_TIME] == "2027-01-15T08:00:02.500000Z"  # its first audio
    assert first[METADATA]["ttfb_s"] == 0.5  # from the end of the caller's speech
    metadata = first[METADATA]
    assert metadata["processor"] == "realtime"
    assert metadata["turn"] == 1
    assert metadata["output_audio_s"] == 1.0
    assert metadata["price_entry"] == "gpt-realtime-2"
    assert metadata["output_fate"] == "spoken"

    # The cut response: the report that came after its end is its own, on its turn.
    assert cut[INPUT] == "And tomorrow?"
    assert cut[OUTPUT] == "Tomorrow will be rainy."  # generated; the turn says what was heard
    assert cut[USAGE_DETAILS] == {
        "input_text_tokens": 144,  # 1100 - 700 - (768 - 512)
        "input_cached_text_tokens": 256,
        "input_audio_tokens": 188,
        "input_cached_audio_tokens": 512,
        "output_text_tokens": 5,
        "output_audio_tokens": 40,
        "total": 1145,
    }
    assert cut[METADATA]["turn"] == 2
    assert cut[METADATA]["output_fate"] == "cut_off"

    (model,) = call.summary.models
    assert (model.kind, model.model, model.calls) == ("s2s", OPENAI_MODEL, 2)
    assert dict(model.usage) == {
        key: s2s_usage_details(OPENAI_USAGE)[key] + s2s_usage_details(OPENAI_CUT_USAGE)[key]
        for key in s2s_usage_details(OPENAI_USAGE)
    }
    assert model.usage["total"] == 909 + 1145
    assert model.cost_usd == pytest.approx(0.010308 + first_cost_of(cut), abs=1e-12)
    assert "audio +" in model.describe_usage()


def first_cost_of(attributes: dict[str, Any]) -> float:
    total = attributes[COST_DETAILS]["total"]
    assert isinstance(total, float)
    return total


def test_turns_of_a_speech_to_speech_call_carry_the_transcripts(langfuse: InMemoryLangfuse) -> None:
    call = run(langfuse, OPENAI_MODEL, play_openai)

    # The barge-in at 7 s starts turn 3, in which the caller hangs up.
    turn1, turn2, _turn3 = (
        observation_attributes(s.attributes or {})
        for s in sorted((s for s in call.spans if s.name.startswith("turn ")), key=lambda s: s.start_time or 0)
    )
    assert (turn1[INPUT], turn1[OUTPUT]) == ("What's the weather like?", "It is sunny and warm.")
    assert turn2[INPUT] == "And tomorrow?"
    # The bot played 0.5 s of the 2 s reply before the caller cut in: the first of its four words.
    assert turn2[OUTPUT] == "Tomorrow"
    assert turn2[METADATA]["generated_text"] == "Tomorrow will be rainy."
    assert [t.user_text for t in call.summary.turns] == ["What's the weather like?", "And tomorrow?", ""]


async def play_gemini(script: Script, transport: Transport, s2s: ScriptedLLM) -> None:
    await start_realtime(script, transport, s2s)
    await reply(script, transport, s2s, 1000, "Book a table.", "For how many people?", GEMINI_USAGE)
    await script.push(6000, transport, EndFrame())


def test_gemini_live_is_priced_with_its_own_keys(langfuse: InMemoryLangfuse) -> None:
    call = run(langfuse, GEMINI_MODEL, play_gemini)

    (generation,) = call.attributes("speech-to-speech")
    assert generation[MODEL] == GEMINI_MODEL
    assert generation[USAGE_DETAILS] == s2s_usage_details(GEMINI_USAGE, "gemini")
    # gemini-2.5-flash-native-audio, USD per 1M: text 0.50 in / 2.00 out, audio 3.00 in / 12.00 out.
    assert generation[COST_DETAILS] == {
        "input_text": 0.0001785,  # 357 x 0.50
        "input_audio": 0.000495,  # 165 x 3
        "output_text": 0.0002,  # 100 x 2
        "output_audio": 0.0024,  # 200 x 12
        "total": 0.0032735,
    }
    assert generation[METADATA]["reasoning_tokens"] == 40  # inside output_text, shown apart


def test_a_model_without_a_price_gets_langfuses_keys_and_no_cost(langfuse: InMemoryLangfuse) -> None:
    call = run(langfuse, "models/gemini-3.8-live", play_gemini)

    (generation,) = call.attributes("speech-to-speech")
    assert generation[USAGE_DETAILS] == s2s_usage_details(GEMINI_USAGE, "gemini")
    assert COST_DETAILS not in generation  # Langfuse prices it, if it knows the model
    assert generation[METADATA]["price_source"] == "unpriced"


ULTRAVOX = PriceTable(
    [
        ModelPrice(
            name="ultravox",
            kind="s2s",
            pattern=re.compile("(?i)ultravox.*"),
            unit_prices={"session_ms": 0.05 / 60_000},
            source="test",
            date="2026-01-01",
        )
    ]
)


async def play_timed_session(script: Script, transport: Transport, s2s: ScriptedLLM) -> None:
    push = script.push
    await start_realtime(script, transport, s2s)
    for at_ms in (1000, 10_000):  # Ultravox reports no usage: each reply only speaks
        await push(at_ms, transport, UserStartedSpeakingFrame())
        await push(at_ms + 1000, transport, UserStoppedSpeakingFrame())
        await push(at_ms + 1200, s2s, LLMFullResponseStartFrame(), TTSStartedFrame(), audio(1.0))
        await push(at_ms + 1300, s2s, LLMTextFrame("Sure."))
        await push(at_ms + 1300, transport, BotStartedSpeakingFrame())
        await push(at_ms + 2200, s2s, TTSStoppedFrame(), LLMFullResponseEndFrame())
        await push(at_ms + 2300, transport, BotStoppedSpeakingFrame())
    await push(20_000, transport, EndFrame())


def test_a_model_billed_by_the_minute_is_priced_by_session_time(langfuse: InMemoryLangfuse) -> None:
    call = run(langfuse, "ultravox-v0.7", play_timed_session, prices=ULTRAVOX)

    first, second = call.attributes("speech-to-speech")
    # The session is split at the end of each turn: turn 1 ends 2.5 s after the bot stopped
    # speaking (3.3 s), as Pipecat's turn tracking ends it; the last reply's share runs to the end
    # of the call. The shares add up to the call's 20 s.
    assert first[USAGE_DETAILS] == {"session_ms": 5_800}
    assert second[USAGE_DETAILS] == {"session_ms": 14_200}
    assert first[COST_DETAILS] == {"session_ms": 0.0048333333, "total": 0.0048333333}  # 5.8 s at $0.05/min
    (model,) = call.summary.models
    assert model.usage == {"session_ms": 20_000}
    assert "usage_missing" not in first[METADATA]


NOVA_USAGE = LLMTokenUsage(prompt_tokens=900, completion_tokens=300, total_tokens=1200)  # speech and text together


async def play_nova(script: Script, transport: Transport, s2s: ScriptedLLM) -> None:
    await start_realtime(script, transport, s2s)
    await reply(script, transport, s2s, 1000, "Hello?", "Hi there.", NOVA_USAGE)
    await script.push(6000, transport, EndFrame())


def test_usage_a_realtime_service_does_not_split_is_priced_as_text_and_flagged(langfuse: InMemoryLangfuse) -> None:
    call = run(langfuse, "amazon.nova-2-sonic-v1:0", play_nova)

    (generation,) = call.attributes("speech-to-speech")
    assert generation[USAGE_DETAILS] == {
        "input_text_tokens": 900,
        "input_audio_tokens": 0,
        "output_text_tokens": 300,
        "output_audio_tokens": 0,
        "total": 1200,
    }
    # Nova 2 Sonic, USD per 1M: text 0.33 in / 2.75 out.
    assert generation[COST_DETAILS] == {
        "input_text_tokens": 0.000297,
        "input_audio_tokens": 0.0,
        "output_text_tokens": 0.000825,
        "output_audio_tokens": 0.0,
        "total": 0.001122,
    }
    assert generation[METADATA]["usage_estimated"] is True
    assert (
        generation[METADATA]["usage_estimate_method"] == "audio and text not split by the service: all counted as text"
    )
    assert call.summary.models[0].estimated_calls == 1


async def play_gemini_cut(script: Script, transport: Transport, s2s: ScriptedLLM) -> None:
    """Gemini Live's order: audio first, then the response start; when cut, only TTSStoppedFrame, then usage."""
    push = script.push
    await start_realtime(script, transport, s2s)
    await push(1000, transport, UserStartedSpeakingFrame())
    await push(2000, transport, UserStoppedSpeakingFrame())
    await push(2100, s2s, TranscriptionFrame("Tell me a story.", "", "t"), direction=FrameDirection.UPSTREAM)
    await push(2600, s2s, ttfb(s2s, 0.6), TTSStartedFrame(), LLMFullResponseStartFrame(), audio(3.0))
    await push(
        2650, s2s, LLMTextFrame("Once upon a time there was a fox."), sentence("Once upon a time there was a fox.")
    )
    await push(2700, transport, BotStartedSpeakingFrame())
    await push(3200, transport, UserStartedSpeakingFrame(), InterruptionFrame())  # the caller cuts in
    await push(3400, s2s, TTSStoppedFrame())
    await push(3500, s2s, usage(s2s, GEMINI_USAGE))
    await push(6000, transport, EndFrame())


def test_a_cut_gemini_reply_ends_at_the_cut_and_keeps_its_late_report(langfuse: InMemoryLangfuse) -> None:
    call = run(langfuse, GEMINI_MODEL, play_gemini_cut)

    (span,) = call.named("speech-to-speech")
    (generation,) = call.attributes("speech-to-speech")
    assert span.start_time == WALL_CLOCK_AT_START_NS + 2600 * MS
    assert span.end_time == WALL_CLOCK_AT_START_NS + 3200 * MS  # the barge-in, not its audio's stop
    assert generation[COMPLETION_START_TIME] == "2027-01-15T08:00:02.600000Z"
    assert generation[USAGE_DETAILS] == s2s_usage_details(GEMINI_USAGE, "gemini")
    assert generation[METADATA]["ttfb_s"] == 0.6
    assert generation[METADATA]["output_fate"] == "cut_off"


async def play_text_only_realtime(script: Script, transport: Transport, s2s: ScriptedLLM) -> None:
    """A realtime service answering in text (xAI, Azure Voice Live report no audio tokens to Pipecat)."""
    push = script.push
    await start_realtime(script, transport, s2s)
    await push(1000, transport, UserStartedSpeakingFrame())
    await push(2000, transport, UserStoppedSpeakingFrame())
    await push(2200, s2s, LLMFullResponseStartFrame(), LLMTextFrame("Hello."))
    await push(2500, s2s, usage(s2s, NOVA_USAGE), LLMFullResponseEndFrame())
    await push(6000, transport, EndFrame())


def test_a_service_that_says_it_is_realtime_is_speech_to_speech_even_in_text(langfuse: InMemoryLangfuse) -> None:
    call = run(langfuse, "grok-voice-latest", play_text_only_realtime)

    assert call.named("llm-completion") == []
    (generation,) = call.attributes("speech-to-speech")
    # xAI's voice agent is billed by the minute: the call's 6 s, whatever its tokens.
    assert generation[USAGE_DETAILS] == {**s2s_usage_details(NOVA_USAGE), "session_ms": 6000}
    assert generation[COST_DETAILS] == {"session_ms": 0.005, "total": 0.005}  # 0.1 min at $0.05/min
