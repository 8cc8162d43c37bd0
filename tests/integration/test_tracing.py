"""A real offline conversation, traced with the real Langfuse SDK to a local OTLP endpoint.

One call of the quick script (3 turns, the second barges in) is run once for the module;
each test asserts one aspect of what Langfuse received.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import pytest
from langfuse import Langfuse
from pipecat.metrics.metrics import LLMUsageMetricsData, STTUsageMetricsData, TTSUsageMetricsData

from app.offline import (
    QUICK_SCRIPT,
    SIMULATED_LLM_MODEL,
    SIMULATED_STT_MODEL,
    SIMULATED_TTS_MODEL,
    CallerScript,
    OfflineLLMService,
    OfflineServices,
    OfflineSTTService,
    OfflineTransport,
    OfflineTTSService,
    StartAnchor,
    Utterance,
    count_tokens,
    create_offline_services,
    offline_user_turn_strategies,
)
from pipecat_langfuse import PriceTable, TracingSettings, VoiceTracer
from pipecat_langfuse._observer import GENERATION_NAMES, llm_usage_details
from pipecat_langfuse.pricing import USAGE_INPUT_AUDIO_MS, USAGE_INPUT_CHARACTERS, USAGE_OUTPUT
from tests.support.conversation import TracedCall, run_traced_call
from tests.support.langfuse_rules import counts_in_model_usage, json_attribute, observation_type
from tests.support.langfuse_server import OTLP_PATH, LocalLangfuse, ReceivedSpan

pytestmark = pytest.mark.integration

CONVERSATION_ID = "conv-quick-1"
PRICES = PriceTable.load()


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLangfuse]:
    server = LocalLangfuse(public_key="pk-lf-tracing-tests").start()  # the SDK keeps one client per key
    yield server
    server.stop()


def settings_for(server: LocalLangfuse) -> TracingSettings:
    return TracingSettings(
        enabled=True,
        public_key=server.public_key,
        secret_key=server.secret_key,
        base_url=server.url,
        user_id="caller-42",
        tags=("ci",),
        environment="ci",
        release="1.2.3",
    )


@pytest.fixture(scope="module")
def call(server: LocalLangfuse) -> TracedCall:
    tracer = VoiceTracer(settings_for(server), conversation_id=CONVERSATION_ID, tags=("simulated",))
    return run_traced_call(server, tracer, create_offline_services(QUICK_SCRIPT))


def ours(call: TracedCall) -> list[ReceivedSpan]:
    return [s for s in call.spans if s.scope == "langfuse-sdk"]


def root_of(call: TracedCall) -> ReceivedSpan:
    (root,) = [s for s in ours(call) if s.name == "voice-conversation"]
    return root


def turns_of(call: TracedCall) -> list[ReceivedSpan]:
    return sorted((s for s in ours(call) if s.name.startswith("turn ")), key=lambda s: s.start_ns)


def generations_of(call: TracedCall, name: str) -> list[ReceivedSpan]:
    return sorted((s for s in ours(call) if s.name == name), key=lambda s: s.start_ns)


# -- One trace ---------------------------------------------------------------------------


def test_every_exported_span_of_the_conversation_shares_one_trace_id(call: TracedCall) -> None:
    assert call.tracer.trace_id == Langfuse.create_trace_id(seed=CONVERSATION_ID)
    assert {s.trace_id for s in call.spans} == {call.tracer.trace_id}
    assert Counter(s.scope for s in call.spans) == {"langfuse-sdk": 1 + 3 + 9, "pipecat.turn": 1 + 3, "pipecat": 9}


def test_trace_name_session_user_tags_environment_and_release_are_set(call: TracedCall) -> None:
    root = root_of(call)
    assert root.attributes["langfuse.trace.name"] == "voice-conversation"
    assert root.attributes["langfuse.environment"] == "ci"
    assert root.attributes["langfuse.release"] == "1.2.3"
    assert json_attribute(root, "langfuse.observation.input") == "Hi, are you there?"
    assert json_attribute(root, "langfuse.observation.output") == "Goodbye!"
    assert json_attribute(root, "langfuse.observation.metadata.turns") == 3
    assert json_attribute(root, "langfuse.observation.metadata.interruptions") == 1
    for span in call.spans:  # Pipecat's spans carry the trace attributes too
        assert span.attributes["session.id"] == CONVERSATION_ID, span.name
        assert span.attributes["user.id"] == "caller-42", span.name
        assert span.attributes["langfuse.trace.tags"] == ["ci", "simulated"], span.name
        assert span.attributes["langfuse.trace.name"] == "voice-conversation", span.name


def test_pipecat_spans_nest_under_the_conversation(call: TracedCall) -> None:
    (pipecat_conversation,) = [s for s in call.spans if s.scope == "pipecat.turn" and s.name == "conversation"]
    assert pipecat_conversation.parent_span_id == root_of(call).span_id
    assert pipecat_conversation.attributes["conversation.id"] == CONVERSATION_ID


def test_every_request_uses_basic_auth_of_the_key_pair(call: TracedCall, server: LocalLangfuse) -> None:
    expected = "Basic " + base64.b64encode(f"{server.public_key}:{server.secret_key}".encode()).decode()
    otlp = [r for r in call.requests if r.path == OTLP_PATH]
    assert otlp
    assert {r.headers["authorization"] for r in otlp} == {expected}
    assert {r.headers["content-encoding"] for r in otlp} == {"gzip"}


# -- Turns -------------------------------------------------------------------------------


def test_one_span_per_turn_under_the_conversation(call: TracedCall) -> None:
    turns = turns_of(call)
    assert [t.name for t in turns] == ["turn 1", "turn 2", "turn 3"]
    assert {t.parent_span_id for t in turns} == {root_of(call).span_id}
    assert [json_attribute(t, "langfuse.observation.input") for t in turns] == [u.text for u in QUICK_SCRIPT.utterances]
    assert [json_attribute(t, "langfuse.observation.output") for t in turns] == list(QUICK_SCRIPT.replies)
    assert [json_attribute(t, "langfuse.observation.metadata.turn") for t in turns] == [1, 2, 3]
    # The caller barges in on the first reply.
    assert [json_attribute(t, "langfuse.observation.metadata.interrupted") for t in turns] == [True, False, False]
    latencies = [json_attribute(t, "langfuse.observation.metadata.voice_to_voice_latency_s") for t in turns]
    assert latencies == [t.voice_to_voice_s and round(t.voice_to_voice_s, 4) for t in call.summary.turns]
    assert all(0.5 < latency < 5 for latency in latencies)


def test_summary_matches_the_script(call: TracedCall) -> None:
    assert [(t.number, t.user_text, t.bot_text, t.interrupted) for t in call.summary.turns] == [
        (1, "Hi, are you there?", QUICK_SCRIPT.replies[0], True),
        (2, "What time is it?", "It is noon.", False),
        (3, "Thanks, bye.", "Goodbye!", False),
    ]
    assert call.summary.trace_id == call.tracer.trace_id
    assert call.summary.total_cost_usd == pytest.approx(sum(m.cost_usd or 0 for m in call.summary.models))


# -- Generations -------------------------------------------------------------------------


def test_each_turn_has_one_priced_generation_per_service(call: TracedCall) -> None:
    turn_ids = [t.span_id for t in turns_of(call)]
    for name, model in (
        (GENERATION_NAMES["stt"], SIMULATED_STT_MODEL),
        (GENERATION_NAMES["llm"], SIMULATED_LLM_MODEL),
        (GENERATION_NAMES["tts"], SIMULATED_TTS_MODEL),
    ):
        generations = generations_of(call, name)
        assert [g.parent_span_id for g in generations] == turn_ids, name
        for generation in generations:
            assert observation_type(generation) == "GENERATION"
            assert generation.attributes["langfuse.observation.model.name"] == model
            usage = json_attribute(generation, "langfuse.observation.usage_details")
            assert all(type(v) is int and v >= 0 for v in usage.values())
            assert json_attribute(generation, "langfuse.observation.cost_details") == PRICES.cost(model, usage)
            assert generation.start_ns < generation.end_ns


def test_stt_usage_is_the_summed_audio_in_milliseconds(call: TracedCall) -> None:
    generations = generations_of(call, GENERATION_NAMES["stt"])
    # 1.0 s of pre-roll + the speech + 0.5 s of trailing silence, per utterance.
    assert [json_attribute(g, "langfuse.observation.usage_details") for g in generations] == [
        {USAGE_INPUT_AUDIO_MS: 2780},
        {USAGE_INPUT_AUDIO_MS: 2640},
        {USAGE_INPUT_AUDIO_MS: 2360},
    ]
    assert [round(u.audio_seconds * 1000) for u in call.witness.usage(STTUsageMetricsData)] == [2780, 2640, 2360]
    assert [json_attribute(g, "langfuse.observation.output") for g in generations] == [
        u.text for u in QUICK_SCRIPT.utterances
    ]
    # nova-3 streaming at $0.0048 per minute.
    assert json_attribute(generations[0], "langfuse.observation.cost_details") == {
        USAGE_INPUT_AUDIO_MS: 0.0002224,
        "total": 0.0002224,
    }


def test_llm_usage_and_cost_are_exact(call: TracedCall) -> None:
    generations = generations_of(call, GENERATION_NAMES["llm"])
    reported = [llm_usage_details(u) for u in call.witness.usage(LLMUsageMetricsData)]
    assert [json_attribute(g, "langfuse.observation.usage_details") for g in generations] == reported
    assert [u[USAGE_OUTPUT] for u in reported] == [count_tokens(r) for r in QUICK_SCRIPT.replies]
    assert [json_attribute(g, "langfuse.observation.output") for g in generations] == list(QUICK_SCRIPT.replies)
    first = generations[0]
    assert json_attribute(first, "langfuse.observation.usage_details") == {"input": 39, "output": 15, "total": 54}
    # gpt-4.1-mini: $0.40 / $1.60 per million input / output tokens.
    assert json_attribute(first, "langfuse.observation.cost_details") == {
        "input": 1.56e-05,
        "output": 2.4e-05,
        "total": 3.96e-05,
    }
    messages = json_attribute(first, "langfuse.observation.input")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == "Hi, are you there?"
    for generation in generations:
        ttft = datetime.fromisoformat(json_attribute(generation, "langfuse.observation.completion_start_time"))
        assert generation.start_ns < ttft.timestamp() * 1e9 < generation.end_ns


def test_tts_usage_is_the_characters_synthesized(call: TracedCall) -> None:
    generations = generations_of(call, GENERATION_NAMES["tts"])
    assert [json_attribute(g, "langfuse.observation.usage_details") for g in generations] == [
        {USAGE_INPUT_CHARACTERS: 53},  # "Yes." + "I can hear you clearly, how can I help you today?"
        {USAGE_INPUT_CHARACTERS: 11},
        {USAGE_INPUT_CHARACTERS: 8},
    ]
    assert [json_attribute(g, "langfuse.observation.input") for g in generations] == list(QUICK_SCRIPT.replies)
    assert all(json_attribute(g, "langfuse.observation.metadata.ttfb_s") > 0 for g in generations)


def test_model_usage_counts_each_usage_report_exactly_once(call: TracedCall) -> None:
    counted = [s for s in call.spans if counts_in_model_usage(s)]
    # Only our generations are generation-like; Pipecat's llm/stt/tts spans are plain spans.
    assert Counter(s.name for s in counted) == Counter(dict.fromkeys(GENERATION_NAMES.values(), 3))
    assert {s.scope for s in counted} == {"langfuse-sdk"}
    demoted = [s for s in call.spans if s.scope == "pipecat" and s.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(demoted) == 3
    assert {observation_type(s) for s in demoted} == {"SPAN"}

    totals: Counter[str] = Counter()
    for span in counted:
        totals.update(json_attribute(span, "langfuse.observation.usage_details"))
    expected: Counter[str] = Counter()
    for usage in call.witness.usage(LLMUsageMetricsData):
        expected.update(llm_usage_details(usage))
    expected[USAGE_INPUT_CHARACTERS] = sum(call.witness.usage(TTSUsageMetricsData))
    expected[USAGE_INPUT_AUDIO_MS] = sum(round(u.audio_seconds * 1000) for u in call.witness.usage(STTUsageMetricsData))
    assert totals == expected
    by_model = {m.model: m for m in call.summary.models}
    assert by_model[SIMULATED_TTS_MODEL].usage == {USAGE_INPUT_CHARACTERS: 72}
    assert by_model[SIMULATED_STT_MODEL].usage == {USAGE_INPUT_AUDIO_MS: 7780}


# -- Usage after an interruption --------------------------------------------------------------

LONG_REPLY = (
    "Sure. Let me tell you about our opening hours, our menu, the specials of the day, "
    "the wine list, the desserts, and the terrace that opens when the weather is kind."
)
BARGE_IN_SCRIPT = CallerScript(
    utterances=(
        Utterance("Tell me everything.", delay_secs=0.5),
        Utterance("Stop, thanks.", delay_secs=0.5, anchor=StartAnchor.BOT_STARTED),
    ),
    replies=(LONG_REPLY, "Okay."),
)


def slow_llm_services(script: CallerScript) -> OfflineServices:
    """Offline services whose LLM is still streaming when the caller barges in."""
    from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams

    return OfflineServices(
        script=script,
        transport=OfflineTransport(script),
        stt=OfflineSTTService(script),
        llm=OfflineLLMService(script, token_delay_secs=(0.12, 0.12)),
        tts=OfflineTTSService(chars_per_sec=script.chars_per_sec),
        user_params=LLMUserAggregatorParams(user_turn_strategies=offline_user_turn_strategies()),
    )


def test_usage_reported_after_an_interruption_lands_on_its_own_turn(server: LocalLangfuse) -> None:
    tracer = VoiceTracer(settings_for(server), conversation_id="conv-barge-in")
    call = run_traced_call(server, tracer, slow_llm_services(BARGE_IN_SCRIPT))

    names = [name for name, _ in call.witness.events]
    second_turn_starts = [i for i, name in enumerate(names) if name == "user_started"][1]
    first_usage = names.index(LLMUsageMetricsData.__name__)
    assert first_usage > second_turn_starts, "the LLM should report its usage after the barge-in"

    turn_1, turn_2 = turns_of(call)
    llm_1, llm_2 = generations_of(call, GENERATION_NAMES["llm"])
    assert llm_1.parent_span_id == turn_1.span_id
    assert llm_2.parent_span_id == turn_2.span_id
    cut_short = json_attribute(llm_1, "langfuse.observation.usage_details")
    assert cut_short == llm_usage_details(call.witness.usage(LLMUsageMetricsData)[0])
    assert 0 < cut_short[USAGE_OUTPUT] < count_tokens(LONG_REPLY)
    assert json_attribute(turn_1, "langfuse.observation.metadata.interrupted") is True
