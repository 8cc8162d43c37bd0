"""The live bot's Anthropic LLM and ElevenLabs TTS, against local fakes of their wire protocols.

The services are built by ``app.live`` from ``BotSettings`` pointing at the fakes, so the live
bot's own code runs; the caller is the offline scripted transport with its offline STT. Two
real-time calls run once for the module (about 10 s each):

- ``normal``: two turns, Anthropic prompt caching on: the second request reads the cache the
  first one wrote and writes the rest.
- ``cut``: the caller barges in while Anthropic is still streaming the first reply and
  ElevenLabs still speaking it; the second turn is ordinary. The LLM is left as ``app.live``
  builds it (prompt caching off today).

Every test compares what the local Langfuse received (through the real SDK) with the fakes'
ledgers, exactly. Tests marked NEW assert behaviour the observer is being changed to have.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pipecat.metrics.metrics import LLMUsageMetricsData, TTSUsageMetricsData

from app.bot import run_conversation
from app.config import DEFAULT_ANTHROPIC_MODEL, DEFAULT_ELEVENLABS_VOICE_ID, SYSTEM_PROMPT, BotSettings
from app.live import create_llm, create_tts
from app.offline import CallerScript, StartAnchor, Utterance, create_offline_services
from pipecat_langfuse import ConversationSummary, PriceTable, TracingSettings, VoiceTracer
from tests.support.conversation import Witness
from tests.support.langfuse_rules import (
    COST_DETAILS,
    INPUT,
    METADATA,
    MODEL,
    OUTPUT,
    USAGE_DETAILS,
    json_attribute,
    observation_attributes,
)
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.otel_global import fresh_global_tracer_provider
from tests.support.providers.anthropic import (
    API_KEY as ANTHROPIC_KEY,
)
from tests.support.providers.anthropic import (
    DATED_MODELS,
    FakeAnthropic,
    MessagesRequest,
    count_tokens,
    reply_deltas,
)
from tests.support.providers.elevenlabs import API_KEY as ELEVENLABS_KEY
from tests.support.providers.elevenlabs import FakeElevenLabs, TTSContext

PRICES = PriceTable.load()
LLM, TTS = "llm-completion", "text-to-speech"
ELEVENLABS_MODEL = "eleven_flash_v2_5"  # ElevenLabsTTSService's default

NORMAL_SCRIPT = CallerScript(
    utterances=(
        Utterance("Hi, are you there?", delay_secs=0.6),
        Utterance("What can you do?", delay_secs=0.4),
    ),
    replies=(
        "Yes, I am here. How can I help you today?",
        "I can answer questions and book tables.",
    ),
)
LONG_FIRST_SENTENCE = "Sure, let me tell you about everything we offer here."
CUT_SCRIPT = CallerScript(
    utterances=(
        Utterance("Tell me everything.", delay_secs=0.6),
        Utterance("Stop, thanks.", delay_secs=0.6, anchor=StartAnchor.BOT_STARTED),
    ),
    replies=(
        LONG_FIRST_SENTENCE + " Our opening hours, our menu, the specials of the day, the wine list, "
        "the desserts, and the terrace that opens when the weather is kind.",
        "Okay.",
    ),
)


@pytest.fixture(scope="module", autouse=True)
def _first_langfuse_client_of_the_process() -> Iterator[None]:
    with fresh_global_tracer_provider():
        yield


@pytest.fixture(scope="module")
def server(module_local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return module_local_langfuse(public_key="pk-lf-live-providers-more")


@dataclass
class LiveCall:
    """One call through the live Anthropic and ElevenLabs services, and what everyone saw."""

    summary: ConversationSummary
    witness: Witness
    spans: list[ReceivedSpan]
    anthropic: FakeAnthropic
    elevenlabs: FakeElevenLabs
    llm_name: str
    tts_name: str

    def generations(self, name: str) -> list[ReceivedSpan]:
        return sorted((s for s in self.spans if s.name == name), key=lambda s: s.start_ns)

    def turns(self) -> list[ReceivedSpan]:
        return sorted(
            (s for s in self.spans if s.name.startswith("turn ")),
            key=lambda s: s.start_ns,
        )

    def contexts(self) -> list[TTSContext]:
        """The ElevenLabs contexts that were spoken in (the ledger), in opening order."""
        return [c for c in self.elevenlabs.contexts.values() if c.texts]


def run_live_call(
    server: LocalLangfuse,
    script: CallerScript,
    *,
    conversation_id: str,
    token_delay_s: float,
    prompt_caching: bool | None,
) -> LiveCall:
    """Run ``script`` with the bot's Anthropic LLM and ElevenLabs TTS against fresh fakes.

    ``prompt_caching`` True turns Anthropic's prompt caching on; None leaves the service as
    ``app.live`` builds it.
    """
    with FakeAnthropic(script.replies, token_delay_s=token_delay_s) as anthropic, FakeElevenLabs() as elevenlabs:
        settings = BotSettings.from_env(
            {
                "LLM_PROVIDER": "anthropic",
                "TTS_PROVIDER": "elevenlabs",
                "DEEPGRAM_API_KEY": "unused-offline-stt",
                "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
                "ELEVENLABS_API_KEY": ELEVENLABS_KEY,
                "ANTHROPIC_BASE_URL": anthropic.base_url,
                "ELEVENLABS_URL": elevenlabs.url,
            }
        )
        llm, tts = create_llm(settings), create_tts(settings)
        if prompt_caching is not None:
            # app.live leaves Anthropic's prompt caching off and Pipecat has no public switch before the
            # call (only LLMEnablePromptCachingFrame, through the pipeline).
            llm.settings.enable_prompt_caching = prompt_caching  # type: ignore[attr-defined]
        offline = create_offline_services(script)
        tracer = VoiceTracer(
            TracingSettings(
                enabled=True, public_key=server.public_key, secret_key=server.secret_key, base_url=server.url
            ),
            conversation_id=conversation_id,
            prices=PRICES,
        )
        witness = Witness()
        spans_before = len(server.spans)
        summary = asyncio.run(
            run_conversation(
                transport=offline.transport,
                stt=offline.stt,
                llm=llm,
                tts=tts,
                tracer=tracer,
                user_params=offline.user_params,
                observers=[witness],
            )
        )
    return LiveCall(
        summary=summary,
        witness=witness,
        spans=server.spans[spans_before:],
        anthropic=anthropic,
        elevenlabs=elevenlabs,
        llm_name=llm.name,
        tts_name=tts.name,
    )


@pytest.fixture(scope="module")
def normal(server: LocalLangfuse) -> LiveCall:
    return run_live_call(
        server, NORMAL_SCRIPT, conversation_id="live-more-normal", token_delay_s=0.02, prompt_caching=True
    )


@pytest.fixture(scope="module")
def cut(server: LocalLangfuse) -> LiveCall:
    return run_live_call(server, CUT_SCRIPT, conversation_id="live-more-cut", token_delay_s=0.15, prompt_caching=None)


# -- Expected values, from the ledgers ------------------------------------------------------------


def ledger_usage(request: MessagesRequest) -> dict[str, int]:
    """The Langfuse usage_details a request's bill must be exported as."""
    usage = {"input": request.input_tokens, "output": request.output_tokens}
    if request.cache_read_input_tokens:
        usage["input_cached_tokens"] = request.cache_read_input_tokens
    if request.cache_creation_input_tokens:
        usage["input_cache_creation_tokens"] = request.cache_creation_input_tokens
    usage["total"] = (
        request.input_tokens
        + request.cache_read_input_tokens
        + request.cache_creation_input_tokens
        + request.output_tokens
    )
    return usage


def ledger_totals(anthropic: FakeAnthropic) -> Counter[str]:
    """The Langfuse usage the whole Anthropic bill must add up to (zero kinds left out)."""
    totals: Counter[str] = Counter()
    for request in anthropic.requests:
        totals.update(ledger_usage(request))
    return totals


def input_usage(usage: dict[str, int]) -> dict[str, int]:
    """The input kinds of a usage_details: uncached, cache read, cache write."""
    return {k: v for k, v in usage.items() if k.startswith("input")}


def message_tokens(role: str, text: str) -> int:
    """The fake's price of one message: 3 + its role + its text (OpenAI's cookbook formula)."""
    return 3 + count_tokens(role) + count_tokens(text)


def exported_totals(spans: list[ReceivedSpan]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for span in spans:
        totals.update(json_attribute(span, USAGE_DETAILS) or {})
    return totals


def metadata_of(span: ReceivedSpan) -> dict[str, Any]:
    metadata: dict[str, Any] = observation_attributes(span.attributes).get(METADATA, {})
    return metadata


# -- The fakes saw what the live services really send ---------------------------------------------


def test_anthropic_got_the_bots_requests(normal: LiveCall) -> None:
    first, second = normal.anthropic.requests
    assert normal.anthropic.rejected == []
    for request in (first, second):
        assert request.headers["x-api-key"] == ANTHROPIC_KEY
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert request.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
        assert request.model == DEFAULT_ANTHROPIC_MODEL
        assert request.body["stream"] is True
        assert request.body["system"] == [
            {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
        ]
        assert request.completed
    assert [m["role"] for m in second.body["messages"]] == ["user", "assistant", "user"]
    # The fake's own count, recomputed: system + first utterance + reply priming.
    assert first.prompt_tokens == (
        message_tokens("system", SYSTEM_PROMPT) + message_tokens("user", NORMAL_SCRIPT.utterances[0].text) + 3
    )


def test_anthropic_cache_is_read_then_extended(normal: LiveCall) -> None:
    first, second = normal.anthropic.requests
    # Turn 1 writes the prompt up to its last breakpoint (the first utterance): only the priming is uncached.
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation_input_tokens == first.prompt_tokens - 3
    assert first.input_tokens == 3
    # Turn 2 reads what turn 1 wrote and writes the reply and the new utterance.
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == second.prompt_tokens - 3 - first.cache_creation_input_tokens
    assert second.input_tokens == 3
    assert second.cache_creation_input_tokens > 0


def test_elevenlabs_got_one_context_per_reply_opened_and_closed(normal: LiveCall) -> None:
    (connection,) = normal.elevenlabs.connections
    assert normal.elevenlabs.errors == []
    assert connection.voice_id == DEFAULT_ELEVENLABS_VOICE_ID
    assert connection.headers["xi-api-key"] == ELEVENLABS_KEY
    assert connection.query["model_id"] == ELEVENLABS_MODEL
    assert connection.query["output_format"] == "pcm_24000"
    contexts = normal.contexts()
    assert len(contexts) == 2
    for context, reply in zip(contexts, NORMAL_SCRIPT.replies, strict=True):
        assert " ".join(context.texts) == reply  # sentence by sentence, no trailing spaces
        # init, the sentences, then the end of the reply: flush and close_context; isFinal came back.
        assert context.events[0] == "init"
        assert context.events[-2:] == ["flush", "close"]
        assert set(context.events[1:-2]) == {"text"}
        assert context.final_sent


# -- Normal call: usage == ledger, per generation and in total ------------------------------------


def test_llm_generations_are_exactly_the_anthropic_bill(normal: LiveCall) -> None:
    generations = normal.generations(LLM)
    requests = normal.anthropic.requests
    assert len(generations) == len(requests) == 2
    for generation, request, reply in zip(generations, requests, NORMAL_SCRIPT.replies, strict=True):
        attributes = observation_attributes(generation.attributes)
        assert attributes[MODEL] == DEFAULT_ANTHROPIC_MODEL
        assert attributes[OUTPUT] == reply == request.text_sent
        usage = attributes[USAGE_DETAILS]
        assert usage == ledger_usage(request)
        assert attributes.get(COST_DETAILS) == PRICES.cost(DEFAULT_ANTHROPIC_MODEL, usage)
    # The second turn read the cache: Langfuse gets the three input kinds separately.
    assert set(json_attribute(generations[1], USAGE_DETAILS)) == {
        "input",
        "input_cached_tokens",
        "input_cache_creation_tokens",
        "output",
        "total",
    }


def test_llm_input_is_the_prompt_anthropic_received_system_prompt_once(normal: LiveCall) -> None:
    """The exported prompt holds the system prompt once, as Anthropic got it (``system``, once)."""
    for generation, request in zip(normal.generations(LLM), normal.anthropic.requests, strict=True):
        messages = json_attribute(generation, INPUT)
        assert [m["content"] for m in messages if m["role"] == "system"] == [SYSTEM_PROMPT]
        assert [m["content"] for m in messages if m["role"] != "system"] == [
            m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in request.body["messages"]
        ]


def test_llm_usage_in_total_is_the_anthropic_bill(normal: LiveCall) -> None:
    totals = exported_totals(normal.generations(LLM))
    ledger = normal.anthropic.totals()
    assert totals["input"] == ledger["input_tokens"]
    assert totals["input_cached_tokens"] == ledger["cache_read_input_tokens"]
    assert totals["input_cache_creation_tokens"] == ledger["cache_creation_input_tokens"]
    assert totals["output"] == ledger["output_tokens"]
    assert totals["total"] == sum(ledger.values())
    (model,) = [m for m in normal.summary.models if m.kind == "llm"]
    assert model.usage == {k: v for k, v in totals.items() if v}


def test_tts_generations_are_exactly_the_characters_per_context(normal: LiveCall) -> None:
    generations = normal.generations(TTS)
    contexts = normal.contexts()
    assert len(generations) == len(contexts) == 2
    for generation, context, reply in zip(generations, contexts, NORMAL_SCRIPT.replies, strict=True):
        attributes = observation_attributes(generation.attributes)
        assert attributes[MODEL] == ELEVENLABS_MODEL
        assert attributes[INPUT] == reply
        usage = attributes[USAGE_DETAILS]
        assert usage["input_characters"] == context.characters
        # The audio ElevenLabs sent for the context, when the tracer records it (all of it was played).
        assert usage == {"input_characters": context.characters} | (
            {"output_audio_ms": context.audio_ms} if "output_audio_ms" in usage else {}
        )
        assert attributes[COST_DETAILS] == PRICES.cost(ELEVENLABS_MODEL, usage)
    assert exported_totals(generations)["input_characters"] == normal.elevenlabs.characters()
    assert sum(normal.witness.usage(TTSUsageMetricsData)) == normal.elevenlabs.characters()  # type: ignore[arg-type]


def test_llm_generations_name_the_requested_model_and_no_response_model_anthropic_never_reads(
    normal: LiveCall,
) -> None:
    # Anthropic answers with its snapshot (message.model), but Pipecat 1.14 reads only the usage of
    # message_start (services/anthropic/llm.py), so there is no response model to record; OpenAI's
    # is recorded (tests/integration/test_live_services.py).
    assert {request.response_model for request in normal.anthropic.requests} == {DATED_MODELS[DEFAULT_ANTHROPIC_MODEL]}
    for generation in normal.generations(LLM):
        assert json_attribute(generation, MODEL) == DEFAULT_ANTHROPIC_MODEL
        assert "response_model" not in metadata_of(generation)


def test_generations_say_where_their_price_came_from(normal: LiveCall) -> None:
    for generation in normal.generations(TTS):
        assert {k: v for k, v in metadata_of(generation).items() if k.startswith("price_")} == {
            "price_source": "builtin",
            "price_entry": "eleven_flash",
            "price_date": "2026-10-06",
        }
    for generation in normal.generations(LLM):
        assert {k: v for k, v in metadata_of(generation).items() if k.startswith("price_")} == {
            "price_source": "builtin",
            "price_entry": "claude-haiku-4-5",
            "price_date": "2026-06-01",
        }


# -- A barge-in: ElevenLabs context closed, Anthropic stream cut ---------------------------------------


def test_barge_in_cuts_the_anthropic_stream(cut: LiveCall) -> None:
    first, second = cut.anthropic.requests
    assert not first.completed
    assert 0 < len(first.deltas_sent) < len(reply_deltas(CUT_SCRIPT.replies[0]))
    assert first.text_sent.startswith(LONG_FIRST_SENTENCE)  # the first sentence was out, and spoken
    assert first.output_tokens == count_tokens(first.text_sent)
    # The tracer's LLM output is exactly what was streamed before the cut.
    assert json_attribute(cut.generations(LLM)[0], OUTPUT) == first.text_sent
    assert second.completed
    assert second.text_sent == CUT_SCRIPT.replies[1]
    (turn_1, turn_2) = cut.turns()
    assert json_attribute(turn_1, "langfuse.observation.metadata.interrupted") is True
    assert json_attribute(turn_2, "langfuse.observation.metadata.interrupted") is False


def test_barge_in_closes_the_elevenlabs_context_it_interrupts(cut: LiveCall) -> None:
    assert cut.elevenlabs.errors == []
    interrupted, answer = cut.contexts()
    assert interrupted.events[:2] == ["init", "text"]
    assert interrupted.texts[0] == LONG_FIRST_SENTENCE
    # The interruption always closes the context it cuts. The cancelled LLM's LLMFullResponseEndFrame
    # may reach the TTS before the InterruptionFrame (a race in Pipecat): then the partial sentence
    # is sent and billed too, and the reply's own flush + close_context come before the interruption's.
    if "flush" in interrupted.events:
        assert interrupted.events[2:] == ["text", "flush", "close", "close"]
        assert interrupted.texts[1] == cut.anthropic.requests[0].text_sent.removeprefix(LONG_FIRST_SENTENCE).strip()
    else:
        assert interrupted.events[2:] == ["close"]
    assert interrupted.final_sent
    assert answer.events[-2:] == ["flush", "close"]
    assert answer.texts == [CUT_SCRIPT.replies[1]]


def test_cut_call_tts_usage_is_the_characters_billed_cancelled_context_included(cut: LiveCall) -> None:
    generations = cut.generations(TTS)
    contexts = cut.contexts()
    assert len(generations) == len(contexts) == 2
    assert [json_attribute(g, USAGE_DETAILS)["input_characters"] for g in generations] == [
        c.characters for c in contexts
    ]
    assert exported_totals(generations)["input_characters"] == cut.elevenlabs.characters()


def test_cut_call_llm_input_is_the_prompt_billed(cut: LiveCall) -> None:
    """Anthropic's message_start carries the input count, so even the cut stream's input is exact."""
    generations = cut.generations(LLM)
    first, second = cut.anthropic.requests
    assert len(generations) == 2
    assert input_usage(json_attribute(generations[0], USAGE_DETAILS)) == input_usage(ledger_usage(first))
    assert first.input_tokens + first.cache_read_input_tokens + first.cache_creation_input_tokens == first.prompt_tokens
    assert json_attribute(generations[1], USAGE_DETAILS) == ledger_usage(second)
    reported = cut.witness.usage(LLMUsageMetricsData)
    assert [u.prompt_tokens for u in reported] == [r.input_tokens for r in cut.anthropic.requests]  # type: ignore[attr-defined]


def test_new_cut_stream_usage_is_estimated_as_the_prompt_and_the_tokens_sent(cut: LiveCall) -> None:
    """NEW: the cut stream's usage: input = the prompt billed, output = the tokens sent."""
    first_generation = cut.generations(LLM)[0]
    first = cut.anthropic.requests[0]
    assert json_attribute(first_generation, USAGE_DETAILS) == ledger_usage(first)


def test_new_cut_stream_usage_is_flagged_estimated(cut: LiveCall) -> None:
    """NEW: metadata usage_estimated=true on the cut stream only."""
    cut_short, answered = cut.generations(LLM)
    assert metadata_of(cut_short).get("usage_estimated") is True
    assert "usage_estimated" not in metadata_of(answered)


def test_new_cut_call_llm_usage_in_total_is_the_anthropic_bill(cut: LiveCall) -> None:
    """NEW (through the estimate of the cut stream): the call's LLM total equals the ledger."""
    assert exported_totals(cut.generations(LLM)) == ledger_totals(cut.anthropic)
