"""Twenty conversations at once in one process, each with its own ``VoiceTracer``.

The calls run as tasks of one event loop, as Pipecat's development runner runs its sessions, through
the bot's own ``run_offline_call`` (one ``WorkerRunner`` per call), all tracing to one local Langfuse.
Each call plays the quick script, whose caller barges in on the first reply. One of them is made to
hit, every time, the race in Pipecat's output transport that load made calls hit now and then (the
bot's reply after the barge-in was generated but never reported spoken, and the caller hung up): see
``OfflineOutputTransport`` and ``tests.support.many_calls``.

The 20 calls take about as long as one, 12 to 20 s of real time; every test but the last asserts on
that run. The last runs 200 one-turn calls in a row through the same code path at full speed (about
15 s) and checks the process holds no more after them than after the first.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from opentelemetry import trace as otel_trace
from pipecat.metrics.metrics import LLMUsageMetricsData, STTUsageMetricsData, TTSUsageMetricsData

from app.offline import (
    QUICK_SCRIPT,
    SIMULATED_LLM_MODEL,
    SIMULATED_STT_MODEL,
    SIMULATED_TTS_MODEL,
    count_tokens,
    create_offline_services,
)
from pipecat_langfuse import ConversationSummary, SpanCounts, TracingSettings, VoiceTracer
from pipecat_langfuse._usage import llm_usage_details
from tests.support.conversation import Witness
from tests.support.langfuse_rules import (
    INPUT,
    METADATA,
    OUTPUT,
    SESSION_ID,
    USAGE_DETAILS,
    counts_in_model_usage,
    json_attribute,
    observation_attributes,
)
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.many_calls import (
    FAST_REPLY,
    FAST_STT_AUDIO_S,
    FAST_USER_TEXT,
    Call,
    ProcessResources,
    hold_a_chunk_until_the_barge_in,
    process_resources,
    run_concurrent_calls,
    run_fast_call,
)

CALLS = 20
RACED = 0
"""The call whose output transport takes a chunk off its queue before the barge-in and handles it after."""

ROOT = "voice-conversation"
LANGFUSE_SCOPE = "langfuse-sdk"
STT, LLM, TTS = "speech-to-text", "llm-completion", "text-to-speech"
EXPECTED_TURNS = [
    (1, QUICK_SCRIPT.utterances[0].text, QUICK_SCRIPT.replies[0], True),  # the caller barges in on it
    (2, QUICK_SCRIPT.utterances[1].text, QUICK_SCRIPT.replies[1], False),
    (3, QUICK_SCRIPT.utterances[2].text, QUICK_SCRIPT.replies[2], False),
]


@pytest.fixture(scope="module")
def server(module_local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return module_local_langfuse(public_key="pk-lf-many-calls")  # the SDK keeps one client per key


def settings_for(server: LocalLangfuse) -> TracingSettings:
    return TracingSettings(
        enabled=True, public_key=server.public_key, secret_key=server.secret_key, base_url=server.url
    )


def pipecat_spans_come_here(tracer: VoiceTracer) -> bool:
    """Whether Pipecat's own spans reach this client: only when its provider is the global one.

    The SDK installs the provider of the process's first client globally; a later client of another
    key (another test module's) gets a private one, and Pipecat's spans go to the first.
    """
    resources = tracer.client._resources if tracer.client is not None else None  # private (langfuse 5.0.4)
    assert resources is not None
    return resources.tracer_provider is otel_trace.get_tracer_provider()


@pytest.fixture(scope="module")
def calls(server: LocalLangfuse) -> list[Call]:
    settings = settings_for(server)
    calls = [
        Call(
            tracer=VoiceTracer(settings, conversation_id=f"many-calls-{i:02d}"),
            services=create_offline_services(QUICK_SCRIPT, seed=i),
            witness=Witness(),
        )
        for i in range(CALLS)
    ]
    hold_a_chunk_until_the_barge_in(calls[RACED].services.transport.output())
    asyncio.run(run_concurrent_calls(calls))
    return calls


def spans_of(server: LocalLangfuse, call: Call) -> list[ReceivedSpan]:
    assert call.tracer.trace_id is not None
    return server.spans_of_trace(call.tracer.trace_id)


def ours(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_ns)


def test_every_call_spoke_exactly_the_scripted_replies(calls: list[Call]) -> None:
    for call in calls:
        assert call.summary is not None
        got = [(t.number, t.user_text, t.bot_text, t.interrupted) for t in call.summary.turns]
        assert got == EXPECTED_TURNS, call.tracer.conversation_id
        assert all(t.voice_to_voice_s is not None for t in call.summary.turns), call.tracer.conversation_id
        assert call.summary.conversation_id == call.tracer.conversation_id
        assert call.summary.trace_id == call.tracer.trace_id


def test_the_raced_call_dropped_the_stale_chunk_and_the_others_had_none_forced(calls: list[Call]) -> None:
    # The bot's reply after the barge-in got its BotStartedSpeakingFrame (else the caller hangs up
    # and the test above fails); the chunk handled after the barge-in was dropped, not played.
    assert calls[RACED].services.transport.output().stale_chunks == 1


def test_each_summary_counts_exactly_the_spans_its_trace_received(calls: list[Call], server: LocalLangfuse) -> None:
    for call in calls:
        assert call.summary is not None
        # Pipecat's own spans are counted where they go: here when this client's provider is the global one.
        mine = [s for s in spans_of(server, call) if s.scope == LANGFUSE_SCOPE or pipecat_spans_come_here(call.tracer)]
        assert call.summary.spans == SpanCounts(sent=len(mine)), call.tracer.conversation_id


def test_each_call_has_its_own_trace_and_session(calls: list[Call], server: LocalLangfuse) -> None:
    trace_ids = [call.tracer.trace_id for call in calls]
    assert len(set(trace_ids)) == CALLS
    assert {s.trace_id for s in server.spans} == set(trace_ids)
    for call in calls:
        spans = spans_of(server, call)
        assert {s.attributes.get(SESSION_ID) for s in spans if s.scope == "langfuse-sdk"} == {
            call.tracer.conversation_id
        }


def test_every_span_is_exported_once_and_none_is_orphaned(calls: list[Call], server: LocalLangfuse) -> None:
    span_ids = [s.span_id for s in server.spans]
    assert len(span_ids) == len(set(span_ids))
    for call in calls:
        spans = spans_of(server, call)
        ids = {s.span_id for s in spans}
        # Only the root's parent is outside the trace: the synthetic parent the trace id was seeded with.
        outside = [s.name for s in spans if s.parent_span_id not in ids]
        assert outside == [ROOT], call.tracer.conversation_id


def test_each_trace_holds_exactly_one_calls_observations(calls: list[Call], server: LocalLangfuse) -> None:
    expected = Counter({ROOT: 1, "turn 1": 1, "turn 2": 1, "turn 3": 1, STT: 3, LLM: 3, TTS: 3})
    for call in calls:
        spans = spans_of(server, call)  # one tree: ours, and Pipecat's turns and llm calls when they come here
        assert Counter(s.name for s in spans) == expected, call.tracer.conversation_id
        (root,) = ours(spans, ROOT)
        turns = sorted((s for s in spans if s.name.startswith("turn ")), key=lambda s: s.start_ns)
        assert {t.parent_span_id for t in turns} == {root.span_id}
        for turn, (number, user_text, bot_text, interrupted) in zip(turns, EXPECTED_TURNS, strict=True):
            attributes = observation_attributes(turn.attributes)
            assert attributes[INPUT] == user_text
            if interrupted:  # the output is what the caller heard: the reply up to the barge-in
                assert attributes[METADATA]["generated_text"] == bot_text
                assert bot_text.startswith(attributes[OUTPUT])
                assert len(attributes[OUTPUT]) < len(bot_text)
            else:
                assert attributes[OUTPUT] == bot_text
            assert attributes[METADATA]["turn"] == number
            assert attributes[METADATA]["interrupted"] is interrupted
        turn_ids = [t.span_id for t in turns]
        for name in (STT, LLM, TTS):
            assert [g.parent_span_id for g in ours(spans, name)] == turn_ids, (call.tracer.conversation_id, name)


def test_each_traces_usage_is_its_own_calls_usage(calls: list[Call], server: LocalLangfuse) -> None:
    for call in calls:
        assert call.summary is not None
        generations = [s for s in spans_of(server, call) if counts_in_model_usage(s)]
        exported: Counter[str] = Counter()
        for generation in generations:
            exported.update(json_attribute(generation, USAGE_DETAILS))
        # What this call's own services reported to Pipecat ...
        reported: Counter[str] = Counter()
        for usage in call.witness.usage(LLMUsageMetricsData):
            reported.update(llm_usage_details(usage))  # type: ignore[arg-type]
        reported["input_characters"] = sum(call.witness.usage(TTSUsageMetricsData))  # type: ignore[arg-type]
        reported["input_audio_ms"] = round(  # rounded once, on the call's running total
            sum(u.audio_seconds for u in call.witness.usage(STTUsageMetricsData)) * 1000  # type: ignore[attr-defined]
        )
        reported["output_audio_ms"] = sum(call.witness.tts_audio_ms())
        assert exported == reported, call.tracer.conversation_id
        # ... is what its summary says ...
        summarized: Counter[str] = Counter()
        for model in call.summary.models:
            summarized.update(model.usage)
        assert summarized == exported, call.tracer.conversation_id
        # ... and what the script makes it.
        assert exported["output"] == sum(count_tokens(reply) for reply in QUICK_SCRIPT.replies)
        # "Yes." and "I can hear you clearly, how can I help you today?" (one request each), then
        # "It is noon." and "Goodbye!".
        assert exported["input_characters"] == 4 + 49 + 11 + 8
        # 2780 + 2640 + 2360 ms when the VAD fires on time (test_tracing checks it exactly, one call at a
        # time). With many calls on one loop it may fire a 20 ms chunk late, which shortens the segment
        # the STT bills; the exact equality with what the STT reported is asserted above.
        assert abs(exported["input_audio_ms"] - 7780) <= 5 * 20


# -- Two hundred calls in a row --------------------------------------------------------------------

IN_A_ROW = 200
OUR_FAST_SPANS = Counter({(LANGFUSE_SCOPE, name): 1 for name in (ROOT, "turn 1", STT, LLM, TTS)})
"""What one fast call exports when Pipecat's spans go elsewhere: our conversation, turn and generations."""
MERGED_FAST_SPANS = Counter(
    {
        (LANGFUSE_SCOPE, ROOT): 1,
        ("pipecat.turn", "turn 1"): 1,
        (LANGFUSE_SCOPE, STT): 1,
        (LANGFUSE_SCOPE, LLM): 1,  # FastLLM is not a @traced_llm service: Pipecat makes no llm span to adopt
        (LANGFUSE_SCOPE, TTS): 1,
    }
)
"""The same call merged with Pipecat's tracing: Pipecat's turn span is the turn."""


def test_two_hundred_calls_in_a_row_leave_nothing_behind(server: LocalLangfuse) -> None:
    settings = settings_for(server)  # the client of the calls above: one more call changes nothing
    tracers: list[VoiceTracer] = []
    summaries: list[ConversationSummary] = []
    after: dict[int, ProcessResources] = {}

    async def main() -> None:
        for i in range(1, IN_A_ROW + 1):
            tracer = VoiceTracer(settings, conversation_id=f"in-a-row-{i:03d}")
            tracers.append(tracer)
            summaries.append(await run_fast_call(tracer))
            if i in (1, IN_A_ROW):
                after[i] = process_resources(tracer.client)

    asyncio.run(main())

    assert after[IN_A_ROW] == after[1]
    assert after[1].langfuse_clients >= 1

    expected_turns = [(1, FAST_USER_TEXT, "".join(FAST_REPLY), False)]
    for tracer, summary in zip(tracers, summaries, strict=True):
        assert [(t.number, t.user_text, t.bot_text, t.interrupted) for t in summary.turns] == expected_turns
        assert {m.model: dict(m.usage) for m in summary.models} == {
            SIMULATED_STT_MODEL: {"input_audio_ms": round(FAST_STT_AUDIO_S * 1000)},
            # The system prompt and the question; the reply's words and its full stop.
            SIMULATED_LLM_MODEL: {"input": 38, "output": 4, "total": 42},
            SIMULATED_TTS_MODEL: {"input_characters": len("It is noon.")},
        }
        assert summary.trace_id == tracer.trace_id

    # Every span went out once, whatever the number of calls before it: no exporter was added per call.
    expected = MERGED_FAST_SPANS if pipecat_spans_come_here(tracers[0]) else OUR_FAST_SPANS
    trace_ids = {tracer.trace_id for tracer in tracers}
    spans = [s for s in server.spans if s.trace_id in trace_ids]
    assert len(spans) == IN_A_ROW * expected.total()
    assert len({s.span_id for s in server.spans}) == len(server.spans)
    for tracer in tracers:
        assert tracer.trace_id is not None
        trace = server.spans_of_trace(tracer.trace_id)
        assert Counter((s.scope, s.name) for s in trace) == expected, tracer.conversation_id
