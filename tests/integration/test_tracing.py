"""A real offline conversation, traced with the real Langfuse SDK to a local OTLP endpoint.

One call of the quick script (3 turns, the second barges in) is run once for the module;
each test asserts one aspect of what Langfuse received.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from langfuse import Langfuse
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import Span, SpanProcessor
from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    ProcessingMetricsData,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)

from app.config import SYSTEM_PROMPT
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
from pipecat_langfuse._pipecat import SharedObserverTask
from pipecat_langfuse._usage import llm_usage_details
from tests.support.conversation import TracedCall, price_metadata, run_traced_call
from tests.support.langfuse_rules import (
    COMPLETION_START_TIME,
    COST_DETAILS,
    ENVIRONMENT,
    GEN_AI_OPERATION,
    INPUT,
    METADATA,
    METADATA_PREFIX,
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
    counts_in_model_usage,
    json_attribute,
    observation_attributes,
    observation_type,
)
from tests.support.langfuse_rules import (
    CONVERSATION_ID as CONVERSATION_ID_KEY,
)
from tests.support.langfuse_server import OTLP_PATH, LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.otel_global import fresh_global_tracer_provider

CONVERSATION_ID = "conv-quick-1"
MS = 1_000_000
PRICES = PriceTable.load()
STT, LLM, TTS = "speech-to-text", "llm-completion", "text-to-speech"


@pytest.fixture(scope="module", autouse=True)
def _first_langfuse_client_of_the_process() -> Iterator[None]:
    # Pipecat's spans reach the client whose provider is the global one: make it this module's.
    with fresh_global_tracer_provider():
        yield


@pytest.fixture(scope="module")
def server(module_local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return module_local_langfuse(public_key="pk-lf-tracing-tests")  # the SDK keeps one client per key


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


class StartedSpans(SpanProcessor):
    """The names of the spans the global provider started as recording spans."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        self.names.append(span.name)


STARTED = StartedSpans()


@pytest.fixture(scope="module")
def call(server: LocalLangfuse) -> TracedCall:
    tracer = VoiceTracer(settings_for(server), conversation_id=CONVERSATION_ID, tags=("simulated",))
    otel_trace.get_tracer_provider().add_span_processor(STARTED)  # type: ignore[attr-defined]
    return run_traced_call(server, tracer, create_offline_services(QUICK_SCRIPT))


def ours(call: TracedCall) -> list[ReceivedSpan]:
    return [s for s in call.spans if s.scope == "langfuse-sdk"]


def root_of(call: TracedCall) -> ReceivedSpan:
    (root,) = [s for s in ours(call) if s.name == "voice-conversation"]
    return root


def turns_of(call: TracedCall) -> list[ReceivedSpan]:
    return sorted((s for s in call.spans if s.name.startswith("turn ")), key=lambda s: s.start_ns)


def generations_of(call: TracedCall, name: str) -> list[ReceivedSpan]:
    return sorted((s for s in call.spans if s.name == name), key=lambda s: s.start_ns)


def pop_trace_attributes(attributes: dict[str, object]) -> None:
    """Pop what every span of the call carries: trace name, session, user, tags, environment, release."""
    assert attributes.pop(SESSION_ID) == CONVERSATION_ID
    assert attributes.pop(USER_ID) == "caller-42"
    assert attributes.pop(TRACE_NAME) == "voice-conversation"
    assert attributes.pop(TRACE_TAGS) == ["ci", "simulated"]
    assert attributes.pop(ENVIRONMENT) == "ci"
    assert attributes.pop(RELEASE) == "1.2.3"


def iso(ns: int) -> str:
    """A time (ns since the epoch) as the SDK writes ``completion_start_time``."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


# -- One trace ---------------------------------------------------------------------------


def test_every_exported_span_of_the_conversation_shares_one_trace_id(call: TracedCall) -> None:
    assert call.tracer.trace_id == Langfuse.create_trace_id(seed=CONVERSATION_ID)
    assert {s.trace_id for s in call.spans} == {call.tracer.trace_id}
    # Our conversation and 6 STT/TTS generations; Pipecat's 3 turns and its 3 llm spans, which are
    # the LLM generations. Pipecat's own conversation span is ours; its stt/tts spans are folded.
    assert Counter(s.scope for s in call.spans) == {"langfuse-sdk": 1 + 6, "pipecat.turn": 3, "pipecat": 3}
    assert call.tracer.merged_with_pipecat


def test_pipecat_spans_that_are_folded_are_never_recorded(call: TracedCall) -> None:
    # The sampler drops Pipecat's stt/tts spans of a merged conversation at their start: no span
    # processor ever handles them. Its turn and llm spans are recorded (they are adopted).
    assert (STARTED.names.count("turn"), STARTED.names.count("llm")) == (3, 3)
    assert "stt" not in STARTED.names
    assert "tts" not in STARTED.names


def test_pipecat_observers_and_ours_share_one_task(call: TracedCall) -> None:
    # Pipecat puts every frame event on a queue per observer, for a task per observer: the main
    # cost of tracing. Its turn trace observer only used frames to start its own conversation
    # span, which it no longer does, so it gets none; its turn and latency tracking look at each
    # frame once, as ours does, so the three share one queue and one task.
    worker = call.tracer._worker
    (shared,) = [o for o in worker._observer._observers if isinstance(o, SharedObserverTask)]
    assert shared.observers == (worker.turn_tracking_observer, worker._user_bot_latency_observer, call.tracer.observer)
    assert [o for o in worker._observer._observers if o in (worker.turn_trace_observer, *shared.observers)] == []
    assert worker.turn_trace_observer is not None  # still there: Pipecat's turn spans come from it


def test_trace_name_session_user_tags_environment_and_release_are_set(call: TracedCall) -> None:
    root = root_of(call)
    assert root.attributes[TRACE_NAME] == "voice-conversation"
    assert root.attributes[ENVIRONMENT] == "ci"
    assert root.attributes[RELEASE] == "1.2.3"
    assert json_attribute(root, INPUT) == "Hi, are you there?"
    assert json_attribute(root, OUTPUT) == "Goodbye!"
    assert json_attribute(root, f"{METADATA_PREFIX}turns") == 3
    assert json_attribute(root, f"{METADATA_PREFIX}interruptions") == 1
    for span in call.spans:  # Pipecat's spans carry the trace attributes too
        assert span.attributes[SESSION_ID] == CONVERSATION_ID, span.name
        assert span.attributes[USER_ID] == "caller-42", span.name
        assert span.attributes[TRACE_TAGS] == ["ci", "simulated"], span.name
        assert span.attributes[TRACE_NAME] == "voice-conversation", span.name


def tree(spans: list[ReceivedSpan]) -> list[tuple[str, list[Any]]]:
    """The spans as a tree of names, children in start order; every span must be reachable."""
    exported = {span.span_id for span in spans}
    children: dict[str | None, list[ReceivedSpan]] = {}
    for span in sorted(spans, key=lambda s: (s.start_ns, s.name)):
        parent = span.parent_span_id if span.parent_span_id in exported else None
        children.setdefault(parent, []).append(span)

    def grow(span_id: str | None) -> list[tuple[str, list[Any]]]:
        return [(span.name, grow(span.span_id)) for span in children.pop(span_id, [])]

    return grow(None)


def test_the_conversation_is_one_tree_of_turns_and_their_generations(call: TracedCall) -> None:
    leaves: list[Any] = [(STT, []), (LLM, []), (TTS, [])]
    assert tree(call.spans) == [
        ("voice-conversation", [("turn 1", leaves), ("turn 2", leaves), ("turn 3", leaves)]),
    ]
    # The turns are Pipecat's own turn spans, with its numbering, boundaries and attributes.
    for number, turn in enumerate(turns_of(call), start=1):
        assert turn.scope == "pipecat.turn"
        assert turn.attributes["turn.number"] == number
        assert turn.attributes[CONVERSATION_ID_KEY] == CONVERSATION_ID
        assert turn.attributes["turn.was_interrupted"] is (number in (1, 3))  # 3: by the hang-up


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
    latencies = [t.voice_to_voice_s for t in call.summary.turns]
    assert all(latency is not None and 0.5 < latency < 5 for latency in latencies)
    for number, (turn, utterance, reply, latency) in enumerate(
        zip(turns, QUICK_SCRIPT.utterances, QUICK_SCRIPT.replies, latencies, strict=True), start=1
    ):
        attributes = observation_attributes(turn.attributes)
        pop_trace_attributes(attributes)
        # Pipecat's own attributes of its turn span.
        assert attributes.pop("turn.number") == number
        assert attributes.pop("turn.type") == "conversation"
        assert attributes.pop(CONVERSATION_ID_KEY) == CONVERSATION_ID
        # Pipecat also counts the hang-up during turn 3 as an interruption; our metadata does not.
        assert attributes.pop("turn.was_interrupted") is (number in (1, 3))
        assert attributes.pop("turn.duration_seconds") == pytest.approx((turn.end_ns - turn.start_ns) / 1e9, abs=0.01)
        assert attributes.pop("turn.user_bot_latency_seconds") == pytest.approx(latency, abs=0.05)
        assert attributes.pop(OBSERVATION_TYPE) == "span"
        assert attributes.pop(INPUT) == utterance.text
        heard = attributes.pop(OUTPUT)
        metadata = attributes.pop(METADATA)
        if number == 1:  # The caller barges in on the first reply: the output is what they heard of it.
            assert metadata.pop("generated_text") == reply
            assert heard.startswith("Yes. ")  # the first sentence, and part of the second
            assert reply.startswith(heard)
            assert len(heard) < len(reply)
        else:
            assert heard == reply
        assert metadata == {
            "turn": number,
            "interrupted": number == 1,
            "voice_to_voice_latency_s": round(latency or 0, 4),
            "endpointing_delay_ms": call.witness.endpointing_delays_ms()[number - 1],
            "endpointing_cause": "silence_timeout",
        }
        assert attributes == {}, turn.name


def test_turns_follow_each_other_and_hold_the_work_that_started_in_them(call: TracedCall) -> None:
    turns = turns_of(call)
    for turn in turns:
        assert turn.start_ns < turn.end_ns, turn.name
    for earlier, later in itertools.pairwise(turns):
        assert earlier.end_ns <= later.start_ns, (earlier.name, later.name)
    by_id = {t.span_id: t for t in turns}
    generations = [s for s in call.spans if s.name in (STT, LLM, TTS)]
    assert len(generations) == 9
    for generation in generations:
        turn = by_id[generation.parent_span_id or ""]
        assert turn.attributes["turn.number"] == json_attribute(generation, f"{METADATA_PREFIX}turn")
        # Work cut short by a barge-in may end after its turn, but it started in it. (Pipecat
        # stamps its turn when its own observer task sees the frame, a few ms after it was pushed.)
        assert turn.start_ns - 20 * MS <= generation.start_ns <= turn.end_ns, (generation.name, turn.name)


def test_each_turn_is_scored_with_its_latencies_endpointing_and_interruption(
    call: TracedCall, server: LocalLangfuse
) -> None:
    scores = [s for s in server.scores if s["traceId"] == call.tracer.trace_id]
    turns = turns_of(call)
    ttfb = {
        kind: call.witness.reported(TTFBMetricsData, service.name)
        for kind, service in (("stt", call.services.stt), ("llm", call.services.llm), ("tts", call.services.tts))
    }
    delays = call.witness.endpointing_delays_ms()
    assert len(delays) == 3
    for i, (turn, summary) in enumerate(zip(turns, call.summary.turns, strict=True)):
        mine = {s["name"]: s for s in scores if s.get("observationId") == turn.span_id}
        assert {name: s["value"] for name, s in mine.items()} == {
            "voice_to_voice_ms": round((summary.voice_to_voice_s or 0) * 1000, 1),
            "stt_ttfb_ms": round(ttfb["stt"][i] * 1000, 1),
            "llm_ttfb_ms": round(ttfb["llm"][i] * 1000, 1),
            "tts_ttfb_ms": round(ttfb["tts"][i] * 1000, 1),
            "endpointing_delay_ms": delays[i],
            "endpointing_cause": "silence_timeout",  # the offline bot's SpeechTimeoutUserTurnStopStrategy
            "interrupted": 1.0 if i == 0 else 0.0,
        }
        assert {name: s["dataType"] for name, s in mine.items()} == {
            **dict.fromkeys(("voice_to_voice_ms", "stt_ttfb_ms", "llm_ttfb_ms", "tts_ttfb_ms"), "NUMERIC"),
            "endpointing_delay_ms": "NUMERIC",
            "endpointing_cause": "CATEGORICAL",
            "interrupted": "BOOLEAN",
        }
        assert {s["environment"] for s in mine.values()} == {"ci"}
        assert delays[i] >= 500  # at least the 0.5 s silence timeout (then the transcript is awaited)
        assert json_attribute(turn, f"{METADATA_PREFIX}endpointing_delay_ms") == delays[i]


def test_each_llm_generation_is_scored_with_the_fate_of_its_output(call: TracedCall, server: LocalLangfuse) -> None:
    generations = generations_of(call, LLM)
    fates = {s["observationId"]: s for s in server.scores if s["name"] == "output_fate"}
    assert [fates[g.span_id]["value"] for g in generations] == ["cut_off", "spoken", "spoken"]
    assert {fates[g.span_id]["dataType"] for g in generations} == {"CATEGORICAL"}
    assert {fates[g.span_id]["traceId"] for g in generations} == {call.tracer.trace_id}


def test_the_conversation_is_scored_with_its_latency_turns_interruptions_and_cost_split(
    call: TracedCall, server: LocalLangfuse
) -> None:
    mine = {s["name"]: s for s in server.scores if s["traceId"] == call.tracer.trace_id and "observationId" not in s}
    latencies = sorted(t.voice_to_voice_s or 0 for t in call.summary.turns)
    by_kind = {k: sum(m.cost_usd or 0 for m in call.summary.models if m.kind == k) for k in ("stt", "llm", "tts")}
    expected = {
        "turns": 3.0,
        "interruptions": 1.0,
        "voice_to_voice_mean_ms": round(sum(latencies) / 3 * 1000, 1),
        "voice_to_voice_p95_ms": round(latencies[-1] * 1000, 1),  # nearest rank of 3 turns: the slowest
        **{f"cost_{kind}_usd": round(cost, 6) for kind, cost in by_kind.items()},
    }
    assert {name: s["value"] for name, s in mine.items()} == expected
    assert {s["dataType"] for s in mine.values()} == {"NUMERIC"}
    # The same numbers are the conversation's metadata.
    root = root_of(call)
    for name, value in expected.items():
        assert json_attribute(root, f"{METADATA_PREFIX}{name}") == value, name


def test_summary_matches_the_script(call: TracedCall) -> None:
    assert [(t.number, t.user_text, t.bot_text, t.interrupted) for t in call.summary.turns] == [
        (1, "Hi, are you there?", QUICK_SCRIPT.replies[0], True),
        (2, "What time is it?", "It is noon.", False),
        (3, "Thanks, bye.", "Goodbye!", False),
    ]
    assert call.summary.trace_id == call.tracer.trace_id
    assert call.summary.total_cost_usd == pytest.approx(sum(m.cost_usd or 0 for m in call.summary.models))


# -- Generations: every attribute is expected, and nothing else is there ---------------------


def test_each_turn_has_one_generation_per_service(call: TracedCall) -> None:
    turn_ids = [t.span_id for t in turns_of(call)]
    for name in (STT, LLM, TTS):
        generations = generations_of(call, name)
        assert [g.parent_span_id for g in generations] == turn_ids, name
        assert {observation_type(g) for g in generations} == {"GENERATION"}
        assert all(g.start_ns < g.end_ns for g in generations)


def test_stt_generations_are_exactly_the_summed_audio_in_milliseconds(call: TracedCall) -> None:
    stt = call.services.stt.name
    generations = generations_of(call, STT)
    audio = [u.audio_seconds for u in call.witness.usage(STTUsageMetricsData)]  # type: ignore[attr-defined]
    ttfb = call.witness.reported(TTFBMetricsData, stt)
    processing = call.witness.reported(ProcessingMetricsData, stt)
    # 1.0 s of pre-roll + the speech + 0.5 s of trailing silence, per utterance.
    assert [round(seconds * 1000) for seconds in audio] == [2780, 2640, 2360]
    expected_usage = [{"input_audio_ms": 2780}, {"input_audio_ms": 2640}, {"input_audio_ms": 2360}]
    for i, generation in enumerate(generations):
        attributes = observation_attributes(generation.attributes)
        pop_trace_attributes(attributes)
        assert attributes.pop(OBSERVATION_TYPE) == "generation"
        assert attributes.pop(MODEL) == SIMULATED_STT_MODEL
        assert attributes.pop(MODEL_PARAMETERS) == {"language": "en"}  # the settings Pipecat's stt span had
        assert attributes.pop(OUTPUT) == QUICK_SCRIPT.utterances[i].text
        usage = attributes.pop(USAGE_DETAILS)
        assert usage == expected_usage[i]
        assert attributes.pop(COST_DETAILS) == PRICES.cost(SIMULATED_STT_MODEL, usage)
        assert attributes.pop(METADATA) == {
            "processor": stt,
            "turn": i + 1,
            "transcripts": 1,
            **price_metadata(PRICES, SIMULATED_STT_MODEL),
            "ttfb_s": round(ttfb[i], 4),
            "processing_s": round(processing[i], 4),
            "audio_seconds": round(audio[i], 6),
        }
        assert attributes == {}, generation.name
    # nova-3 streaming at $0.0048 per minute.
    assert json_attribute(generations[0], COST_DETAILS) == {"input_audio_ms": 0.0002224, "total": 0.0002224}


def test_llm_generations_are_exactly_the_tokens_context_and_reply(call: TracedCall) -> None:
    llm = call.services.llm.name
    generations = generations_of(call, LLM)
    reported = [llm_usage_details(u) for u in call.witness.usage(LLMUsageMetricsData)]  # type: ignore[arg-type]
    ttfb = call.witness.reported(TTFBMetricsData, llm)
    processing = call.witness.reported(ProcessingMetricsData, llm)
    assert [u["output"] for u in reported] == [count_tokens(r) for r in QUICK_SCRIPT.replies]
    assert reported[0] == {"input": 39, "output": 15, "total": 54}
    for i, generation in enumerate(generations):
        attributes = observation_attributes(generation.attributes)
        pop_trace_attributes(attributes)
        assert attributes.pop(OBSERVATION_TYPE) == "generation"
        assert attributes.pop(MODEL) == SIMULATED_LLM_MODEL
        messages = attributes.pop(INPUT)
        assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert [m["content"] for m in messages if m["role"] == "user"] == [
            u.text for u in QUICK_SCRIPT.utterances[: i + 1]
        ]
        assert attributes.pop(OUTPUT) == QUICK_SCRIPT.replies[i]
        usage = attributes.pop(USAGE_DETAILS)
        assert usage == reported[i]
        assert attributes.pop(COST_DETAILS) == PRICES.cost(SIMULATED_LLM_MODEL, usage)
        # The first token came TTFB after the response started.
        assert attributes.pop(COMPLETION_START_TIME) == iso(generation.start_ns + int(ttfb[i] * 1e9))
        # The generation is Pipecat's own llm span of the call: its attributes stay, less what the
        # generation says itself (input, output, usage) and the settings Pipecat left unset.
        assert attributes.pop("metrics.ttfb") == pytest.approx(ttfb[i], abs=0.01)
        pipecat_attributes = [key for key in attributes if not key.startswith(("langfuse.", METADATA))]
        assert {key: attributes.pop(key) for key in pipecat_attributes} == {
            "gen_ai.provider.name": "offline",
            "gen_ai.request.model": SIMULATED_LLM_MODEL,
            "gen_ai.operation.name": "chat",
            "gen_ai.output.type": "text",
            "stream": True,
            "param.model": SIMULATED_LLM_MODEL,
            "param.filter_incomplete_user_turns": False,
            "param.use_provider_thinking_default": False,
        }
        assert attributes.pop(METADATA) == {
            "processor": llm,
            "turn": i + 1,
            **price_metadata(PRICES, SIMULATED_LLM_MODEL),
            # The bot's system prompt (its LLM's system_instruction), hashed.
            "system_prompt_sha256": hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest(),
            "processing_s": round(processing[i], 4),
            "output_fate": "cut_off" if i == 0 else "spoken",  # the caller cut the first reply short
        }
        assert attributes == {}, generation.name
    # gpt-4.1-mini: $0.40 / $1.60 per million input / output tokens.
    assert json_attribute(generations[0], COST_DETAILS) == {"input": 1.56e-05, "output": 2.4e-05, "total": 3.96e-05}


def test_tts_generations_are_exactly_the_characters_synthesized(call: TracedCall) -> None:
    tts = call.services.tts.name
    generations = generations_of(call, TTS)
    ttfb = call.witness.reported(TTFBMetricsData, tts)
    processing = call.witness.reported(ProcessingMetricsData, tts)
    # "Yes." + "I can hear you clearly, how can I help you today?", "It is noon.", "Goodbye!"
    characters = [53, 11, 8]
    audio_ms = call.witness.tts_audio_ms()
    assert len(audio_ms) == 3
    assert all(ms > 0 for ms in audio_ms)
    expected_usage = [
        {"input_characters": n, "output_audio_ms": ms} for n, ms in zip(characters, audio_ms, strict=True)
    ]
    assert len(ttfb) == len(generations)
    for i, generation in enumerate(generations):
        attributes = observation_attributes(generation.attributes)
        pop_trace_attributes(attributes)
        assert attributes.pop(OBSERVATION_TYPE) == "generation"
        assert attributes.pop(MODEL) == SIMULATED_TTS_MODEL
        assert attributes.pop(MODEL_PARAMETERS) == {"voice": "simulated-voice", "language": "en"}
        assert attributes.pop(INPUT) == QUICK_SCRIPT.replies[i]
        usage = attributes.pop(USAGE_DETAILS)
        assert usage == expected_usage[i]
        assert attributes.pop(COST_DETAILS) == PRICES.cost(SIMULATED_TTS_MODEL, usage)
        metadata = attributes.pop(METADATA)
        # A reply of several sentences reports its processing time per sentence; the last one is kept.
        assert metadata.pop("processing_s") in {round(p, 4) for p in processing}
        assert metadata == {
            "processor": tts,
            "turn": i + 1,
            **price_metadata(PRICES, SIMULATED_TTS_MODEL),
            "ttfb_s": round(ttfb[i], 4),
        }
        assert attributes == {}, generation.name


def test_model_usage_counts_each_usage_report_exactly_once(call: TracedCall) -> None:
    counted = [s for s in call.spans if counts_in_model_usage(s)]
    # Only our generations are generation-like; Pipecat's llm/stt/tts spans are folded into them.
    assert Counter(s.name for s in counted) == Counter(dict.fromkeys((STT, LLM, TTS), 3))
    # Pipecat's llm spans are the LLM generations: typed and priced by us, its gen_ai.* usage unused.
    assert {s.scope for s in counted if s.name != LLM} == {"langfuse-sdk"}
    assert [s.name for s in call.spans if s.attributes.get(GEN_AI_OPERATION)] == [LLM] * 3
    assert {observation_type(s) for s in call.spans if s.scope == "pipecat.turn"} == {"SPAN"}

    totals: Counter[str] = Counter()
    for span in counted:
        totals.update(json_attribute(span, USAGE_DETAILS))
    expected: Counter[str] = Counter()
    for usage in call.witness.usage(LLMUsageMetricsData):
        expected.update(llm_usage_details(usage))  # type: ignore[arg-type]
    expected["input_characters"] = sum(call.witness.usage(TTSUsageMetricsData))  # type: ignore[arg-type]
    expected["output_audio_ms"] = sum(call.witness.tts_audio_ms())
    # Rounded once, on the call's running total.
    expected["input_audio_ms"] = round(
        sum(u.audio_seconds for u in call.witness.usage(STTUsageMetricsData)) * 1000  # type: ignore[attr-defined]
    )
    assert totals == expected
    by_model = {m.model: m for m in call.summary.models}
    assert by_model[SIMULATED_TTS_MODEL].usage == {
        "input_characters": 72,
        "output_audio_ms": expected["output_audio_ms"],
    }
    assert by_model[SIMULATED_STT_MODEL].usage == {"input_audio_ms": 7780}


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

    leaves: list[Any] = [(STT, []), (LLM, []), (TTS, [])]
    assert tree(call.spans) == [("voice-conversation", [("turn 1", leaves), ("turn 2", leaves)])]
    turn_1, turn_2 = turns_of(call)
    assert {turn_1.scope, turn_2.scope} == {"pipecat.turn"}
    llm_1, llm_2 = generations_of(call, LLM)
    assert llm_1.parent_span_id == turn_1.span_id
    assert llm_2.parent_span_id == turn_2.span_id
    cut_short = json_attribute(llm_1, USAGE_DETAILS)
    assert cut_short == llm_usage_details(call.witness.usage(LLMUsageMetricsData)[0])  # type: ignore[arg-type]
    assert 0 < cut_short["output"] < count_tokens(LONG_REPLY)
    assert json_attribute(turn_1, f"{METADATA_PREFIX}interrupted") is True
    assert turn_1.end_ns <= turn_2.start_ns
    assert turn_1.start_ns <= llm_1.start_ns <= turn_1.end_ns < llm_1.end_ns  # the cut LLM outlasts its turn


def test_without_pipecat_tracing_the_tree_is_the_same_with_turns_of_our_own(server: LocalLangfuse) -> None:
    tracer = VoiceTracer(settings_for(server), conversation_id="conv-no-pipecat-tracing")
    call = run_traced_call(server, tracer, create_offline_services(QUICK_SCRIPT), pipecat_tracing=False)

    assert not call.tracer.merged_with_pipecat
    leaves: list[Any] = [(STT, []), (LLM, []), (TTS, [])]
    assert tree(call.spans) == [
        ("voice-conversation", [("turn 1", leaves), ("turn 2", leaves), ("turn 3", leaves)]),
    ]
    assert {s.scope for s in call.spans} == {"langfuse-sdk"}
    turns = turns_of(call)
    assert [json_attribute(t, INPUT) for t in turns] == [u.text for u in QUICK_SCRIPT.utterances]
    assert [json_attribute(t, OUTPUT) for t in turns][1:] == list(QUICK_SCRIPT.replies)[1:]  # 1: as heard
    # Pipecat's boundaries: turn 2 ended 2.5 s after the bot stopped, or when the caller spoke again.
    for earlier, later in itertools.pairwise(turns):
        assert earlier.end_ns <= later.start_ns
