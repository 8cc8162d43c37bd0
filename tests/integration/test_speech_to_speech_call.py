"""A speech-to-speech call, traced with the real Langfuse SDK to a local OTLP endpoint.

``QUICK_SCRIPT`` (about 12 s of real time; its second utterance barges in) is played once per
flavour of the offline speech-to-speech service (OpenAI Realtime, Gemini Live) through the bot's
own pipeline, ``transport.input() -> user_aggregator -> s2s -> transport.output() ->
assistant_aggregator``, with Pipecat's tracing on and the tracer attached (``uv run bot --s2s``).

The first tests check the double: its frames and its usage are those of the real services (so the
rest is worth something); the others check what Langfuse received: one ``speech-to-speech``
generation per response, its usage exactly the provider's report split into Langfuse's realtime
keys, no token counted twice, its cost from the price table.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.metrics.metrics import LLMUsageMetricsData, MetricsData, TTFBMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.utils.text.base_text_aggregator import TextType

from app.bot import run_offline_call
from app.offline import (
    QUICK_SCRIPT,
    SIMULATED_S2S_MODELS,
    Flavor,
    OfflineS2SServices,
    count_tokens,
    create_offline_s2s_services,
    usage_totals,
)
from pipecat_langfuse import ConversationSummary, PriceTable, TracingSettings, VoiceTracer
from pipecat_langfuse._usage import s2s_usage_details
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
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.otel_global import fresh_global_tracer_provider

SYSTEM_PROMPT = "You are a friendly voice assistant. Keep answers short."
CALL_TIMEOUT_SECS = 60.0
PRICES = PriceTable.load()
S2S = "speech-to-speech"
SCHEMES: dict[str, str] = {"openai": "openai", "gemini": "gemini"}

# One letter per frame the service pushes (audio and transcript deltas collapse into "~"):
# I interruption (passed through), T user transcript (upstream), S/E LLM response start/end,
# s/e TTS started/stopped, U usage metric.
EXPECTED = {
    "openai": "I TSs~Ee I UETSs~UeE I TSs~UeE",
    "gemini": "I TsS~e I UTsS~eEU I TsS~eEU",
}


class _Recorder(BaseObserver):
    """The frames the service pushes (metrics included), and their letters."""

    def __init__(self, s2s: object) -> None:
        super().__init__()
        self.s2s = s2s
        self.letters: list[str] = []
        self.frames: list[tuple[Frame, FrameDirection]] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        if data.source is not self.s2s:
            return
        frame = data.frame
        letter = _letter(frame, data.direction)
        if letter is None and not isinstance(frame, MetricsFrame):
            return
        self.frames.append((frame, data.direction))
        if letter is None or (letter == "~" and self.letters and self.letters[-1] == "~"):
            return
        self.letters.append(letter)


def _letter(frame: Frame, direction: FrameDirection) -> str | None:
    if isinstance(frame, InterruptionFrame) and direction == FrameDirection.DOWNSTREAM:
        return " I "
    if isinstance(frame, TranscriptionFrame):
        return "T" if direction == FrameDirection.UPSTREAM else "T(down)"
    if isinstance(frame, (TTSAudioRawFrame, LLMTextFrame, TTSTextFrame)):
        return "~"
    for kind, letter in (
        (LLMFullResponseStartFrame, "S"),
        (LLMFullResponseEndFrame, "E"),
        (TTSStartedFrame, "s"),
        (TTSStoppedFrame, "e"),
    ):
        if isinstance(frame, kind):
            return letter
    if isinstance(frame, MetricsFrame) and any(isinstance(d, LLMUsageMetricsData) for d in frame.data):
        return "U"
    return None


def _metrics(recorder: _Recorder) -> list[MetricsData]:
    return [d for f, _ in recorder.frames if isinstance(f, MetricsFrame) for d in f.data]


@dataclass
class Played:
    services: OfflineS2SServices
    recorder: _Recorder
    tracer: VoiceTracer
    summary: ConversationSummary
    spans: list[ReceivedSpan]

    def generations(self) -> list[dict[str, Any]]:
        found = sorted((s for s in self.spans if s.name == S2S), key=lambda s: s.start_ns)
        return [observation_attributes(s.attributes) for s in found]


@pytest.fixture(scope="module", autouse=True)
def _first_langfuse_client_of_the_process() -> Iterator[None]:
    # Pipecat's spans reach the client whose provider is the global one: make it this module's.
    with fresh_global_tracer_provider():
        yield


@pytest.fixture(scope="module")
def server(module_local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return module_local_langfuse(public_key="pk-lf-speech-to-speech")  # the SDK keeps one client per key


@pytest.fixture(scope="module", params=["openai", "gemini"])
def played(request: pytest.FixtureRequest, server: LocalLangfuse) -> Played:
    flavor: Flavor = request.param
    services = create_offline_s2s_services(QUICK_SCRIPT, flavor=flavor, system_instruction=SYSTEM_PROMPT)
    recorder = _Recorder(services.s2s)
    settings = TracingSettings(
        enabled=True, public_key=server.public_key, secret_key=server.secret_key, base_url=server.url
    )
    tracer = VoiceTracer(settings, conversation_id=f"conv-s2s-{flavor}", prices=PRICES)
    before = len(server.spans)
    run = run_offline_call(services, tracer, observers=[recorder])
    summary = asyncio.run(asyncio.wait_for(run, CALL_TIMEOUT_SECS))
    spans = [s for s in server.spans[before:] if s.trace_id == tracer.trace_id]
    return Played(services, recorder, tracer, summary, spans)


def test_frame_sequence(played: Played) -> None:
    services, recorder = played.services, played.recorder
    assert "".join(recorder.letters).split() == EXPECTED[services.s2s.flavor].split()


def test_transcripts_and_text_frames(played: Played) -> None:
    services, recorder = played.services, played.recorder
    transcripts = [f.text for f, d in recorder.frames if isinstance(f, TranscriptionFrame)]
    assert transcripts == [u.text for u in QUICK_SCRIPT.utterances]
    assert all(f.user_id == "" for f, _ in recorder.frames if isinstance(f, TranscriptionFrame))
    llm_text = [f for f, _ in recorder.frames if type(f) is LLMTextFrame]
    tts_text = [f for f, _ in recorder.frames if isinstance(f, TTSTextFrame)]
    assert llm_text
    assert all(not f.append_to_context for f in llm_text)
    assert all(f.text_type == TextType.SENTENCE and f.includes_inter_frame_spaces for f in tts_text)
    assert [f.text for f in llm_text] == [f.text for f in tts_text]
    # The uncut replies are spoken whole; the cut one only in part.
    spoken = "".join(f.text for f in llm_text)
    assert spoken.endswith(QUICK_SCRIPT.replies[1] + QUICK_SCRIPT.replies[2])
    assert [e["text_generated"] for e in services.s2s.ledger[1:]] == list(QUICK_SCRIPT.replies[1:])
    assert 0 < len(services.s2s.ledger[0]["text_generated"]) < len(QUICK_SCRIPT.replies[0])


def test_one_usage_report_per_response_with_the_model(played: Played) -> None:
    services, recorder = played.services, played.recorder
    ledger = services.s2s.ledger
    assert [e["interrupted"] for e in ledger] == [True, False, False]
    reports = [
        d
        for f, _ in recorder.frames
        if isinstance(f, MetricsFrame)
        for d in f.data
        if isinstance(d, LLMUsageMetricsData)
    ]
    assert [r.value for r in reports] == [e["usage"] for e in ledger]
    assert {r.model for r in reports} == {SIMULATED_S2S_MODELS[services.s2s.flavor]}


def test_usage_as_the_provider_bills(played: Played) -> None:
    services = played.services
    ledger = services.s2s.ledger
    system = count_tokens(SYSTEM_PROMPT)
    for i, entry in enumerate(ledger):
        usage, raw = entry["usage"], entry["raw"]
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        earlier = ledger[:i]
        if services.s2s.flavor == "openai":
            user_audio = [math.ceil(round(e["user_audio_secs"] * 10, 6)) for e in [*earlier, entry]]
            bot_audio = [math.ceil(round(e["assistant_audio_secs"] * 20, 6)) for e in earlier]
            bot_text = [count_tokens(e["text_generated"]) for e in earlier]
            assert usage.input_audio_tokens == sum(user_audio) + sum(bot_audio)
            assert usage.prompt_tokens == system + sum(bot_text) + usage.input_audio_tokens
            assert usage.output_audio_tokens == math.ceil(round(entry["assistant_audio_secs"] * 20, 6))
            assert usage.completion_tokens == count_tokens(entry["text_generated"]) + usage.output_audio_tokens
            previous = ledger[i - 1]["usage"].prompt_tokens if i else 0
            assert usage.cache_read_input_tokens == 64 * (previous // 64)
            details = raw["input_token_details"]
            assert details["cached_tokens_details"]["audio_tokens"] == usage.cache_read_input_audio_tokens
            # The cached prefix, in conversation order: system text, then per earlier response
            # its user audio, assistant text and assistant audio.
            prefix = [("text", system)]
            for ua, at, aa in zip(user_audio, bot_text, bot_audio, strict=False):
                prefix += [("audio", ua), ("text", at), ("audio", aa)]
            left, cached_text = usage.cache_read_input_tokens, 0
            for modality, tokens in prefix:
                take = min(tokens, left)
                cached_text += take if modality == "text" else 0
                left -= take
            assert left == 0
            assert details["cached_tokens_details"]["text_tokens"] == cached_text
            assert cached_text + usage.cache_read_input_audio_tokens == usage.cache_read_input_tokens
            assert usage.reasoning_tokens is None
        else:
            user_audio = [math.ceil(round(e["user_audio_secs"] * 25, 6)) for e in [*earlier, entry]]
            bot_audio = [math.ceil(round(e["assistant_audio_secs"] * 25, 6)) for e in earlier]
            assert usage.input_audio_tokens == sum(user_audio) + sum(bot_audio)
            assert usage.prompt_tokens == system + usage.input_audio_tokens
            assert usage.output_audio_tokens == math.ceil(round(entry["assistant_audio_secs"] * 25, 6))
            assert usage.reasoning_tokens is not None
            assert usage.reasoning_tokens > 0
            assert usage.completion_tokens == usage.output_audio_tokens + usage.reasoning_tokens
            assert usage.cache_read_input_tokens is None
            assert usage.cache_read_input_audio_tokens is None
    totals = usage_totals(ledger)
    assert totals["total_tokens"] == totals["prompt_tokens"] + totals["completion_tokens"]
    # User audio per turn: the committed buffer, about the speech plus pre-roll and turn-end delays.
    for entry, utterance in zip(ledger, QUICK_SCRIPT.utterances, strict=True):
        assert entry["user_audio_secs"] == pytest.approx(QUICK_SCRIPT.speech_secs(utterance) + 1.0, abs=0.15)


def test_ttfb_per_response(played: Played) -> None:
    recorder = played.recorder
    ttfb = [
        d.value
        for f, _ in recorder.frames
        if isinstance(f, MetricsFrame)
        for d in f.data
        if isinstance(d, TTFBMetricsData)
    ]
    assert len(ttfb) == 3
    assert all(t > 0 for t in ttfb)
    # Each generation says it, from the end of the caller's speech to the first audio.
    assert [g[METADATA]["ttfb_s"] for g in played.generations()] == [round(t, 4) for t in ttfb]


# -- What Langfuse received ------------------------------------------------------------------


def test_each_response_is_one_speech_to_speech_generation_under_its_turn(played: Played) -> None:
    ledger = played.services.s2s.ledger
    generations = played.generations()
    assert len(generations) == len(ledger) == 3
    assert [s.name for s in played.spans if s.name == "llm-completion"] == []  # not also an LLM completion
    model = SIMULATED_S2S_MODELS[played.services.s2s.flavor]
    assert [g[MODEL] for g in generations] == [model] * 3
    assert [g[METADATA]["turn"] for g in generations] == [1, 2, 3]
    assert [g[METADATA]["processor"] for g in generations] == [played.services.s2s.name] * 3
    # In: what the model heard, as it transcribed it. Out: what it said (the cut reply in part).
    assert [g[INPUT] for g in generations] == [u.text for u in QUICK_SCRIPT.utterances]
    assert [g[OUTPUT] for g in generations] == [e["text_generated"] for e in ledger]
    assert [g[METADATA]["output_fate"] for g in generations] == ["cut_off", "spoken", "spoken"]
    spans = sorted((s for s in played.spans if s.name == S2S), key=lambda s: s.start_ns)
    for span, generation in zip(spans, generations, strict=True):  # its first audio, inside the response
        first_audio = datetime.fromisoformat(generation[COMPLETION_START_TIME]).timestamp() * 1e9
        assert span.start_ns - 1e3 <= first_audio <= span.end_ns + 1e3


def test_usage_is_the_providers_report_split_once_into_langfuses_realtime_keys(played: Played) -> None:
    flavor = played.services.s2s.flavor
    ledger = played.services.s2s.ledger
    generations = played.generations()
    for generation, entry in zip(generations, ledger, strict=True):
        reported = entry["usage"]
        assert generation[USAGE_DETAILS] == s2s_usage_details(reported, SCHEMES[flavor])
        buckets = {k: v for k, v in generation[USAGE_DETAILS].items() if k != "total"}
        assert sum(buckets.values()) == reported.total_tokens  # no token counted twice, none lost
    keys = {key for g in generations for key in g[USAGE_DETAILS]}
    if flavor == "openai":
        assert keys == {
            "input_text_tokens",
            "input_cached_text_tokens",
            "input_audio_tokens",
            "input_cached_audio_tokens",
            "output_text_tokens",
            "output_audio_tokens",
            "total",
        }
    else:
        assert keys == {"input_text", "input_audio", "output_text", "output_audio", "total"}
    totals = usage_totals(ledger)
    (model_usage,) = played.summary.models
    assert model_usage.kind == "s2s"
    assert model_usage.usage["total"] == totals["total_tokens"]


def test_cost_is_the_price_tables_for_each_key(played: Played) -> None:
    model = SIMULATED_S2S_MODELS[played.services.s2s.flavor]
    price = PRICES.find(model, "s2s")
    assert price is not None
    for generation in played.generations():
        assert generation[COST_DETAILS] == price.cost(generation[USAGE_DETAILS])
        assert generation[METADATA]["price_entry"] == price.name
    # By hand, the first OpenAI response: gpt-realtime-2 at 4 / 0.40 / 24 (text in, cached, out) and
    # 32 / 0.40 / 64 (audio) USD per 1M tokens.
    if played.services.s2s.flavor == "openai":
        first = played.generations()[0][USAGE_DETAILS]
        by_hand = (
            first["input_text_tokens"] * 4
            + first.get("input_cached_text_tokens", 0) * 0.4
            + first["input_audio_tokens"] * 32
            + first.get("input_cached_audio_tokens", 0) * 0.4
            + first["output_text_tokens"] * 24
            + first["output_audio_tokens"] * 64
        ) / 1e6
        assert played.generations()[0][COST_DETAILS]["total"] == pytest.approx(by_hand, abs=1e-10)
    total = sum(g[COST_DETAILS]["total"] for g in played.generations())
    assert played.summary.total_cost_usd == pytest.approx(total, abs=1e-9)


def test_pipecats_realtime_response_spans_are_folded_into_the_generations(played: Played) -> None:
    assert played.tracer.merged_with_pipecat
    names = {s.name for s in played.spans}
    assert "llm_response" not in names  # its gen_ai.usage.audio.* would price nothing: the generation says it all
    assert "stt" not in names
    turns = sorted((s for s in played.spans if s.name.startswith("turn ")), key=lambda s: s.start_ns)
    generations = sorted((s for s in played.spans if s.name == S2S), key=lambda s: s.start_ns)
    assert [g.parent_span_id for g in generations] == [t.span_id for t in turns[:3]]
