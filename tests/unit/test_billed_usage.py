"""What the provider bills, on a scripted clock: streamed STT audio by turn, cut LLM streams,
the model the provider answered with, token-billed speech and where each price came from.

Real Pipecat frames from real service instances are pushed to the tracer's observer at chosen
pipeline times (``tests.support.scripted_call``); the real Langfuse client writes to memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import bpe_openai  # type: ignore[import-untyped]  # ships no type information
import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    InputAudioRawFrame,
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
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext

from pipecat_langfuse import PriceTable
from tests.support.in_memory_langfuse import InMemoryLangfuse, in_memory_langfuse
from tests.support.langfuse_rules import COST_DETAILS, METADATA, MODEL, OUTPUT, USAGE_DETAILS
from tests.support.logs import captured_logs
from tests.support.scripted_call import (
    Script,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    Transport,
    llm_usage,
    stt_usage,
    ttfb,
    tts_usage,
    tts_words,
)
from tests.support.scripted_export import Call
from tests.support.scripted_export import run_call as run_scripted

PUBLIC_KEY = "pk-lf-billed-usage"
RATE = 16_000
CHUNK_MS = 20
CHUNK = b"\x00\x00" * (RATE * CHUNK_MS // 1000)
"""20 ms of 16 kHz mono silence: what a transport streams to a continuous STT service."""
O200K = bpe_openai.get_encoding("o200k_base")


def tokens(text: str) -> int:
    return len(O200K.encode(text))


@pytest.fixture(scope="module")
def langfuse() -> Iterator[InMemoryLangfuse]:
    langfuse = in_memory_langfuse(PUBLIC_KEY)
    yield langfuse
    langfuse.close()


def run_call(langfuse: InMemoryLangfuse, play: Callable[[Script], Awaitable[None]], prices: PriceTable) -> Call:
    return run_scripted(langfuse, play, prices, PUBLIC_KEY)


def context(*messages: dict[str, str]) -> LLMContextFrame:
    return LLMContextFrame(context=LLMContext(messages=list(messages)))  # type: ignore[arg-type]


# -- STT streamed continuously, billed by turn ----------------------------------------------


class StreamingCall:
    """A Deepgram-like call: audio streamed all the time, two finals for one utterance.

    Audio flows in 20 ms chunks from 0 to 8000 ms (8.0 s in all); the chunk pushed at ``t``
    is the audio up to ``t``. Turn 1: the user speaks from 1000; finals at 2000 ("Hello",
    2.0 s of audio since the start) and 2300 ("there.", 0.3 s); the bot speaks 3000-5000.
    Turn 2 starts when the user speaks again at 6000; the final at 7000 ("Bye.") reports the
    4.7 s since 2300: 3.7 s streamed in turn 1 (while the bot spoke, and after) and 1.0 s in
    turn 2. At the end the service reports the trailing 1.0 s (7000-8000).
    """

    def __init__(self) -> None:
        self.transport = Transport(name="transport")
        self.aggregator = Transport(name="user-aggregator")
        self.stt = ScriptedSTT(model="nova-3-general")
        self.events: dict[int, list[tuple[Any, Any]]] = {}

    def at(self, ms: int, source: Any, *frames: Any) -> None:
        self.events.setdefault(ms, []).extend((source, frame) for frame in frames)

    async def push_events(self, script: Script, ms: int) -> None:
        for source, frame in self.events.get(ms, []):
            await script.push(ms, source, frame)

    async def play(self, script: Script) -> None:
        s = self.stt
        self.at(1000, self.aggregator, UserStartedSpeakingFrame())
        self.at(2000, s, stt_usage(s, 2.0), TranscriptionFrame("Hello", user_id="u", timestamp="t"))
        self.at(2300, s, stt_usage(s, 0.3), TranscriptionFrame("there.", user_id="u", timestamp="t"))
        self.at(2400, self.aggregator, UserStoppedSpeakingFrame())
        self.at(2450, s, ttfb(s, 0.2))
        self.at(3000, self.transport, BotStartedSpeakingFrame())
        self.at(5000, self.transport, BotStoppedSpeakingFrame())
        self.at(6000, self.aggregator, UserStartedSpeakingFrame())
        self.at(7000, s, stt_usage(s, 4.7), TranscriptionFrame("Bye.", user_id="u", timestamp="t"))
        self.at(7100, s, ttfb(s, 0.1))
        self.at(8000, s, stt_usage(s, 1.0))
        await script.push(0, self.transport, StartFrame())
        for ms in range(CHUNK_MS, 8000 + CHUNK_MS, CHUNK_MS):
            for when in sorted(w for w in self.events if ms - CHUNK_MS < w < ms):
                await self.push_events(script, when)
            await script.push(ms, self.transport, InputAudioRawFrame(audio=CHUNK, sample_rate=RATE, num_channels=1))
            await self.push_events(script, ms)
        await script.push(8000, self.transport, EndFrame())


@pytest.fixture(scope="module")
def streaming(langfuse: InMemoryLangfuse) -> Call:
    return run_call(langfuse, StreamingCall().play, PriceTable.load())


def test_one_stt_generation_per_utterance_with_its_final_transcripts_merged(streaming: Call) -> None:
    generations = streaming.generations("speech-to-text")
    assert [(g[OUTPUT], g[METADATA]["turn"], g[METADATA]["transcripts"]) for g in generations] == [
        ("Hello there.", 1, 2),
        ("Bye.", 2, 1),
    ]


def test_audio_streamed_while_the_bot_speaks_stays_in_its_turn(streaming: Call) -> None:
    generations = streaming.generations("speech-to-text")
    # Turn 1: 2.0 + 0.3 + the 3.7 s streamed from 2300 to 6000; turn 2: 1.0 + the trailing 1.0 s.
    assert [g[USAGE_DETAILS] for g in generations] == [{"input_audio_ms": 6000}, {"input_audio_ms": 2000}]
    assert [g[METADATA]["audio_seconds"] for g in generations] == [6.0, 2.0]
    # nova-3 at $0.0048 per minute: 6 s = $0.00048, 2 s = $0.00016.
    assert [g[COST_DETAILS] for g in generations] == [
        {"input_audio_ms": 0.00048, "total": 0.00048},
        {"input_audio_ms": 0.00016, "total": 0.00016},
    ]


def test_the_calls_stt_total_is_exactly_the_audio_streamed(streaming: Call) -> None:
    (stt,) = streaming.tracer.summary().models
    assert (stt.model, stt.calls, stt.usage) == ("nova-3-general", 2, {"input_audio_ms": 8000})


def test_each_stt_generation_spans_its_utterance_and_has_its_ttfb(streaming: Call) -> None:
    generations = streaming.generations("speech-to-text")
    # From when the user started speaking to the last final transcript.
    assert [g["times_ms"] for g in generations] == [(1000, 2300), (6000, 7000)]
    assert [g[METADATA]["ttfb_s"] for g in generations] == [0.2, 0.1]


def test_stt_generations_say_where_their_price_came_from(streaming: Call) -> None:
    generations = streaming.generations("speech-to-text")
    assert [(g[MODEL], g[METADATA]["price_source"], g[METADATA]["price_entry"]) for g in generations] == [
        ("nova-3-general", "builtin", "nova-3"),
        ("nova-3-general", "builtin", "nova-3"),
    ]
    assert {g[METADATA]["price_date"] for g in generations} == {PriceTable.load().find("nova-3").date}  # type: ignore[union-attr]


# -- An LLM stream cut by a barge-in ----------------------------------------------------------

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Tell me about your menu."}


class DatedLLM(ScriptedLLM):
    """An LLM service that, like Pipecat's OpenAI ones, records the model the provider answered with."""

    def get_full_model_name(self) -> str:
        return "gpt-4.1-mini-2025-04-14"


async def play_cut_stream(script: Script) -> None:
    transport, llm = Transport(name="transport"), DatedLLM(model="gpt-4.1-mini")
    await script.push(0, transport, StartFrame())
    await script.push(100, transport, context(SYSTEM, USER))
    await script.push(200, llm, LLMFullResponseStartFrame())
    await script.push(300, llm, LLMTextFrame("Sure, we have"), LLMTextFrame(" pasta and"))
    await script.push(400, transport, BotStartedSpeakingFrame())
    await script.push(500, transport, UserStartedSpeakingFrame(), InterruptionFrame())
    await script.push(510, llm, LLMFullResponseEndFrame())  # cancelled: no usage was ever reported
    await script.push(2000, transport, EndFrame())


@pytest.fixture(scope="module")
def cut(langfuse: InMemoryLangfuse) -> Call:
    return run_call(langfuse, play_cut_stream, PriceTable.load())


def test_a_cut_stream_is_estimated_with_the_models_tokenizer_and_flagged(cut: Call) -> None:
    (generation,) = cut.generations("llm-completion")
    # Chat format: 3 per message + its values, + 3 to prime the reply.
    prompt = 3 + (3 + tokens("system") + tokens("Be brief.")) + (3 + tokens("user") + tokens(USER["content"]))
    output = tokens("Sure, we have pasta and")
    assert (prompt, output) == (20, 6)
    assert generation[USAGE_DETAILS] == {"input": 20, "output": 6, "total": 26}
    # gpt-4.1-mini: $0.40 in, $1.60 out per 1M tokens.
    assert generation[COST_DETAILS] == {"input": 8e-06, "output": 9.6e-06, "total": 1.76e-05}
    metadata = generation[METADATA]
    assert (metadata["usage_estimated"], metadata["usage_estimate_method"]) == (True, "o200k_base")


def test_the_summary_says_how_many_calls_were_estimated(cut: Call) -> None:
    (llm,) = cut.tracer.summary().models
    assert (llm.calls, llm.estimated_calls, llm.usage) == (1, 1, {"input": 20, "output": 6, "total": 26})
    rendered = cut.tracer.summary().render()
    assert "20 in / 6 out tokens (1 estimated)" in rendered
    assert "1 call(s) ended without a usage report from the provider" in rendered


def test_the_model_the_provider_answered_with_is_recorded_beside_the_requested_one(cut: Call) -> None:
    (generation,) = cut.generations("llm-completion")
    assert generation[MODEL] == "gpt-4.1-mini"
    assert generation[METADATA]["response_model"] == "gpt-4.1-mini-2025-04-14"
    assert generation[METADATA]["price_entry"] == "gpt-4.1-mini"


# -- Provenance: PRICING_FILE, self-hosted, unpriced; token-billed TTS --------------------------

USER_PRICES = """
[[model]]
name = "acme-stt"
kind = "stt"
usd_per_hour = 0.36
source = "https://example.com/acme"
date = "2026-11-01"

[[model]]
name = "piper"
kind = "tts"
match = "(?i)^piper$"
self_hosted = true
source = "https://github.com/rhasspy/piper"
date = "2026-11-29"

[[model]]
name = "acme-tokens-tts"
kind = "tts"
usd_per_million_tokens = { input = 0.60, output_audio_tokens = 12.0 }
audio_tokens_per_second = 20
source = "https://example.com/acme-tts"
date = "2026-11-02"
"""


def tts_reply(script: Script, tts: ScriptedTTS, start_ms: int, text: str, audio_s: float) -> Awaitable[None]:
    async def play() -> None:
        context_id = f"ctx-{start_ms}"
        await script.push(start_ms, tts, TTSStartedFrame(context_id=context_id), tts_usage(tts, len(text)))
        await script.push(start_ms + 5, tts, tts_words(text, context_id=context_id))
        audio = b"\x00\x00" * round(24_000 * audio_s)
        await script.push(start_ms + 10, tts, TTSAudioRawFrame(audio=audio, sample_rate=24_000, num_channels=1))
        await script.push(start_ms + 20, tts, TTSStoppedFrame(context_id=context_id))

    return play()


@pytest.fixture(scope="module")
def provenance(langfuse: InMemoryLangfuse, tmp_path_factory: pytest.TempPathFactory) -> Call:
    user_file = tmp_path_factory.mktemp("prices") / "prices.toml"
    user_file.write_text(USER_PRICES, encoding="utf-8")

    async def play(script: Script) -> None:
        transport = Transport(name="transport")
        priced, unknown = ScriptedSTT(model="acme-stt"), ScriptedSTT(model="acme-unknown-stt")
        local, tokens_tts = ScriptedTTS(model="piper"), ScriptedTTS(model="acme-tokens-tts")
        await script.push(0, transport, StartFrame())
        await script.push(100, priced, stt_usage(priced, 10.0), TranscriptionFrame("Hi", user_id="u", timestamp="t"))
        await script.push(200, unknown, stt_usage(unknown, 5.0), TranscriptionFrame("Hi", user_id="u", timestamp="t"))
        await tts_reply(script, local, 300, "Hello there.", 1.0)
        await tts_reply(script, tokens_tts, 400, "Hello there.", 1.5)
        await script.push(1000, transport, EndFrame())

    return run_call(langfuse, play, PriceTable.load(user_file))


def test_a_price_from_the_pricing_file_says_so(provenance: Call) -> None:
    stt = {g[MODEL]: g for g in provenance.generations("speech-to-text")}["acme-stt"]
    # $0.36 per hour is $0.0001 per second: 10 s = $0.001.
    assert stt[COST_DETAILS] == {"input_audio_ms": 0.001, "total": 0.001}
    assert {k: v for k, v in stt[METADATA].items() if k.startswith("price_")} == {
        "price_source": "PRICING_FILE",
        "price_entry": "acme-stt",
        "price_date": "2026-11-01",
    }


def test_an_unknown_model_never_looks_free(provenance: Call) -> None:
    stt = {g[MODEL]: g for g in provenance.generations("speech-to-text")}["acme-unknown-stt"]
    assert stt[USAGE_DETAILS] == {"input_audio_ms": 5000}
    assert COST_DETAILS not in stt  # no cost at all, rather than $0
    assert stt[METADATA]["price_source"] == "unpriced"
    assert "price_entry" not in stt[METADATA]
    by_model = {m.model: m for m in provenance.tracer.summary().models}
    assert by_model["acme-unknown-stt"].cost_usd is None


def test_a_self_hosted_model_is_recorded_with_its_usage_at_an_explicit_zero(provenance: Call) -> None:
    tts = {g[MODEL]: g for g in provenance.generations("text-to-speech")}["piper"]
    assert tts[USAGE_DETAILS] == {"input_characters": 12, "output_audio_ms": 1000}
    assert tts[COST_DETAILS] == {"input_characters": 0.0, "total": 0.0}
    assert tts[METADATA]["price_source"] == "self-hosted"


def test_a_token_billed_tts_gets_its_audio_and_text_tokens(provenance: Call) -> None:
    tts = {g[MODEL]: g for g in provenance.generations("text-to-speech")}["acme-tokens-tts"]
    # 1.5 s of audio at 20 audio tokens per second; "Hello there." is 3 o200k_base tokens.
    assert tokens("Hello there.") == 3
    assert tts[USAGE_DETAILS] == {
        "input_characters": 12,
        "output_audio_ms": 1500,
        "output_audio_tokens": 30,
        "input": 3,
    }
    # 30 x $12 / 1M + 3 x $0.60 / 1M.
    assert tts[COST_DETAILS] == {"output_audio_tokens": 0.00036, "input": 1.8e-06, "total": 0.0003618}
    assert tts[METADATA]["usage_estimated"] is True
    assert tts[METADATA]["usage_estimate_method"] == "audio tokens at 20/s; text tokens: o200k_base (approximation)"


def test_the_pricing_file_example_loads(tmp_path: Path) -> None:
    user_file = tmp_path / "prices.toml"
    user_file.write_text(USER_PRICES, encoding="utf-8")
    table = PriceTable.load(user_file)
    assert [(e.name, e.provenance, e.listed) for e in table.entries[:3]] == [
        ("acme-stt", "PRICING_FILE", "usd_per_hour = 0.36"),
        ("piper", "self-hosted", "self_hosted = true"),
        (
            "acme-tokens-tts",
            "PRICING_FILE",
            "usd_per_million_tokens = { input = 0.6, output_audio_tokens = 12 }, audio_tokens_per_second = 20",
        ),
    ]


# -- A cut stream whose service guesses its output (Anthropic, Bedrock) ----------------------------


async def play_cut_anthropic_stream(script: Script) -> None:
    from pipecat.services.anthropic.llm import AnthropicLLMService

    transport = Transport(name="transport")
    llm = AnthropicLLMService(api_key="sk-ant-test", settings=AnthropicLLMService.Settings(model="claude-haiku-4-5"))
    await script.push(0, transport, StartFrame())
    await script.push(100, transport, context(USER))
    await script.push(200, llm, LLMFullResponseStartFrame())
    await script.push(300, llm, LLMTextFrame("Sure, we have"), LLMTextFrame(" pasta and"))
    await script.push(500, transport, UserStartedSpeakingFrame(), InterruptionFrame())
    # Cancelled: the prompt came with the stream's start (exact); the output is Pipecat's words x 1.3.
    await script.push(510, llm, LLMFullResponseEndFrame(), llm_usage(llm, 30, 7))
    await script.push(2000, transport, EndFrame())


def test_a_cut_stream_whose_service_guesses_its_output_gets_it_counted(langfuse: InMemoryLangfuse) -> None:
    call = run_call(langfuse, play_cut_anthropic_stream, PriceTable.load())
    (generation,) = call.generations("llm-completion")
    assert tokens("Sure, we have pasta and") == 6
    assert generation[USAGE_DETAILS] == {"input": 30, "output": 6, "total": 36}
    metadata = generation[METADATA]
    assert (metadata["usage_estimated"], metadata["usage_estimate_method"]) == (
        True,
        "output: o200k_base (approximation); input: reported",
    )
    assert call.tracer.summary().models[0].estimated_calls == 1


def test_work_without_a_usage_report_is_flagged_and_warned_about_once(langfuse: InMemoryLangfuse) -> None:
    async def play(script: Script) -> None:
        transport, stt = Transport(name="transport"), ScriptedSTT(model="nova-3", name="DeepgramSTTService#0")
        await script.push(0, transport, StartFrame())
        for ms, text in ((100, "Hi."), (200, "Still here.")):
            await script.push(ms, stt, TranscriptionFrame(text, user_id="u", timestamp="t"))
        await script.push(1000, transport, EndFrame())

    with captured_logs("WARNING") as warnings:
        call = run_call(langfuse, play, PriceTable.load())
    (generation,) = call.generations("speech-to-text")
    assert USAGE_DETAILS not in generation
    assert COST_DETAILS not in generation
    assert generation[METADATA]["usage_missing"] is True
    assert [w for w in warnings if "reported no usage" in w] == [
        "DeepgramSTTService#0 did work but reported no usage, so it is recorded without usage or cost (flagged "
        "'usage_missing'). Enable usage metrics: PipelineParams(enable_metrics=True, enable_usage_metrics=True); "
        "a service that never reports usage cannot be priced."
    ]
