"""The live bot's own services (Deepgram, OpenAI, Cartesia) against local fakes of their wire protocols.

The services are built by ``app.live.create_live_services`` from ``BotSettings`` pointing at fakes on
127.0.0.1 (tests/support/providers/), and run by ``app.bot.run_conversation`` with the scripted caller
transport and the tracer exporting to the local Langfuse endpoint (the harness in
tests/support/live_call.py). Each fake keeps a ledger of what its provider would bill; the tests
assert that the usage Langfuse receives equals it exactly, per generation and in total.

Three short real-time calls, one per module fixture: a normal 3-turn call, a tool call whose usage has
cached and reasoning tokens, and a barge-in that cuts a streamed LLM response and cancels the Cartesia
context. Assertions marked NEW are the spec the observer is being changed to meet.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pipecat.metrics.metrics import LLMUsageMetricsData, TTFBMetricsData

from app.config import SYSTEM_PROMPT
from app.offline import CallerScript, StartAnchor, Utterance
from pipecat_langfuse import PriceTable
from pipecat_langfuse._usage import llm_usage_details
from tests.support.langfuse_rules import (
    COST_DETAILS,
    INPUT,
    METADATA,
    METADATA_PREFIX,
    MODEL,
    OUTPUT,
    USAGE_DETAILS,
    json_attribute,
    observation_attributes,
    observation_type,
)
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.live_call import LiveCall, returning, run_live_call
from tests.support.otel_global import fresh_global_tracer_provider
from tests.support.providers.cartesia import FakeCartesia
from tests.support.providers.deepgram import FakeDeepgram, split_in_two
from tests.support.providers.openai import FakeOpenAI, Reply, ToolCall, count_tokens, prompt_tokens

PRICES = PriceTable.load()
STT, LLM, TTS = "speech-to-text", "llm-completion", "text-to-speech"
STT_MODEL, LLM_MODEL, TTS_MODEL = "nova-3-general", "gpt-4.1-mini", "sonic-3.6"
DATED_LLM_MODEL = "gpt-4.1-mini-2025-04-14"
FRAME_MS = 20  # the scripted caller streams 20 ms chunks


# -- Scripts ---------------------------------------------------------------------------------------

NORMAL = CallerScript(
    utterances=(
        Utterance("Hi, are you there?", delay_secs=0.5),
        Utterance("What are your opening hours?", delay_secs=0.4),
        Utterance("Great, thanks. Bye!", delay_secs=0.4),
    ),
    replies=(
        "Yes, I am here. How can I help you today?",
        "We are open from nine to five, every day.",
        "Goodbye!",
    ),
    hangup_delay_secs=0.5,
)
"""A 3-turn call (about 11 s) without interruptions."""

TOOL_ARGUMENTS = '{"timezone":"Europe/London"}'
TOOL_SCRIPT = CallerScript(
    utterances=(Utterance("What time is it in London?", delay_secs=0.5),),
    replies=("It is noon in London.",),
    hangup_delay_secs=0.5,
)
TOOL_REPLIES = (
    Reply(tool_call=ToolCall("get_time", TOOL_ARGUMENTS, id="call_time_1"), cached_tokens=32, reasoning_tokens=21),
    Reply("It is noon in London.", cached_tokens=64, reasoning_tokens=7),
)
"""One utterance answered by a tool call, then by the reply that uses its result."""

LONG_REPLY = (
    "Sure. Let me tell you about our opening hours, our menu, the specials of the day, "
    "the wine list, the desserts, and the terrace that opens when the weather is kind."
)
BARGE_IN = CallerScript(
    utterances=(
        Utterance("Tell me everything.", delay_secs=0.5),
        Utterance("Stop, thanks.", delay_secs=0.6, anchor=StartAnchor.BOT_STARTED),
    ),
    replies=(LONG_REPLY, "Okay."),
    hangup_delay_secs=0.5,
)
"""The caller barges in while the first reply is still streaming from the LLM (about 7 s)."""
BARGE_IN_TOKEN_DELAY_S = 0.12


# -- Calls ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _first_langfuse_client_of_the_process() -> Iterator[None]:
    with fresh_global_tracer_provider():
        yield


@pytest.fixture(scope="module")
def server(module_local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return module_local_langfuse(public_key="pk-lf-live-services")


@pytest.fixture(scope="module")
def normal(server: LocalLangfuse) -> LiveCall:
    return run_live_call(server, NORMAL, conversation_id="live-normal", prices=PRICES)


@pytest.fixture(scope="module")
def tool_call(server: LocalLangfuse) -> LiveCall:
    return run_live_call(
        server,
        TOOL_SCRIPT,
        conversation_id="live-tool",
        prices=PRICES,
        openai=FakeOpenAI(TOOL_REPLIES),
        tools={"get_time": returning({"time": "12:00"})},
    )


@pytest.fixture(scope="module")
def barge_in(server: LocalLangfuse) -> LiveCall:
    return run_live_call(
        server,
        BARGE_IN,
        conversation_id="live-barge-in",
        prices=PRICES,
        openai=FakeOpenAI(tuple(Reply(r) for r in BARGE_IN.replies), token_delay_s=BARGE_IN_TOKEN_DELAY_S),
    )


def usage(span: ReceivedSpan) -> dict[str, int]:
    value: dict[str, int] = json_attribute(span, USAGE_DETAILS)
    return value


def metadata(span: ReceivedSpan) -> dict[str, Any]:
    value: dict[str, Any] = observation_attributes(span.attributes).get(METADATA, {})
    return value


def summed(spans: list[ReceivedSpan]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for span in spans:
        totals.update(usage(span))
    return totals


def stt_audio_ms_per_turn(call: LiveCall) -> list[int]:
    """Audio the fake Deepgram received within each exported turn (turns partition the call)."""
    starts = [t.start_ns for t in call.turns()]
    bounds = [None, *starts[1:], None]
    return [call.deepgram.ledger.audio_ms_between(bounds[i], bounds[i + 1]) for i in range(len(starts))]


# == The fakes speak the wire protocols the live services use ======================================


def test_the_call_is_short_and_every_turn_is_answered(normal: LiveCall) -> None:
    assert normal.seconds < 25
    assert [(t.number, t.user_text, t.bot_text, t.interrupted) for t in normal.summary.turns] == [
        (i + 1, u.text, r, False) for i, (u, r) in enumerate(zip(NORMAL.utterances, NORMAL.replies, strict=True))
    ]


def test_deepgram_got_the_stream_the_service_opens_and_answered_split_finals(normal: LiveCall) -> None:
    ledger = normal.deepgram.ledger
    (query,) = ledger.connections
    assert {k: query[k] for k in ("encoding", "sample_rate", "channels", "interim_results", "model", "language")} == {
        "encoding": "linear16",
        "sample_rate": "16000",
        "channels": "1",
        "interim_results": "true",
        "model": STT_MODEL,
        "language": "en",
    }
    assert set(ledger.authorizations) == {f"Token {normal.deepgram.api_key}"}
    # Two FINAL results per utterance: the first at the fake's endpointing, the last answering the
    # Finalize the service sends at the VAD stop (from_finalize, speech_final).
    expected = []
    for utterance in NORMAL.utterances:
        first, last = split_in_two(utterance.text)
        expected += [(first, False, False), (last, True, True)]
    assert [(r.transcript, r.speech_final, r.from_finalize) for r in ledger.finals] == expected
    assert ledger.interims, "interim results were sent while the caller spoke"
    assert ledger.control.count("Finalize") == len(NORMAL.utterances)
    assert ledger.control[-1] == "CloseStream"
    # Every chunk is one 20 ms frame of the scripted caller, speech or silence.
    assert {c.nbytes for c in ledger.chunks} == {16000 * 2 * FRAME_MS // 1000}
    assert ledger.audio_ms == len(ledger.chunks) * FRAME_MS


def test_openai_got_streamed_requests_and_answered_with_the_dated_model(normal: LiveCall) -> None:
    ledger = normal.openai.ledger
    assert set(ledger.authorizations) == {f"Bearer {normal.openai.api_key}"}
    assert [c.requested_model for c in ledger.completions] == [LLM_MODEL] * 3
    assert [c.model for c in ledger.completions] == [DATED_LLM_MODEL] * 3
    assert [c.text_sent for c in ledger.completions] == list(NORMAL.replies)
    assert all(c.finished and not c.cut for c in ledger.completions)
    for i, completion in enumerate(ledger.completions):
        users = [m["content"] for m in completion.messages if m["role"] == "user"]
        assert users == [u.text for u in NORMAL.utterances[: i + 1]]  # split finals merged by the aggregator
        # The system prompt once: the LLM's system_instruction, no (deprecated) "system" context message.
        assert completion.messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert [m["role"] for m in completion.messages].count("system") == 1
        assert completion.prompt_tokens == prompt_tokens(completion.messages)
        assert completion.sent_tokens == count_tokens(NORMAL.replies[i])


def test_cartesia_got_one_context_per_reply_and_finished_each(normal: LiveCall) -> None:
    ledger = normal.cartesia.ledger
    assert {h["x-api-key"] for h in ledger.headers} == {normal.cartesia.api_key}
    contexts = ledger.billed()
    assert [" ".join(c.transcripts) for c in contexts] == list(NORMAL.replies)  # one sentence per message
    assert all(c.closed and c.done and not c.cancelled for c in contexts)
    assert {c.model_id for c in contexts} == {TTS_MODEL}
    assert {c.sample_rate for c in contexts} == {24000}
    assert ledger.cancels == []


def test_the_caller_audio_streams_while_the_bot_speaks(normal: LiveCall) -> None:
    windows = normal.witness.speaking_windows()
    assert len(windows) == len(NORMAL.replies)
    chunks = normal.deepgram.ledger.chunks
    for start, stop in windows:
        during = [c for c in chunks if start <= c.received_ns < stop]
        # The microphone keeps sending 20 ms frames (silence: the caller listens) while the bot talks.
        assert len(during) >= 0.8 * (stop - start) / (FRAME_MS * 1e6), (start, stop, len(during))
        assert not any(c.voiced for c in during)


# == Usage exported == the fakes' ledgers ===========================================================


def test_llm_usage_equals_the_openai_ledger_per_generation_and_in_total(normal: LiveCall) -> None:
    generations = normal.generations(LLM)
    completions = normal.openai.ledger.completions
    assert len(generations) == len(completions) == 3
    for generation, completion, reply in zip(generations, completions, NORMAL.replies, strict=True):
        attributes = observation_attributes(generation.attributes)
        assert observation_type(generation) == "GENERATION"
        assert attributes[MODEL] == LLM_MODEL  # the requested model stays the model
        assert attributes[OUTPUT] == reply
        assert attributes[USAGE_DETAILS] == completion.langfuse_usage
        assert attributes[COST_DETAILS] == PRICES.cost(LLM_MODEL, completion.langfuse_usage)
    assert summed(generations) == Counter(normal.openai.ledger.totals())
    by_model = {m.model: m for m in normal.summary.models}
    assert by_model[LLM_MODEL].usage == normal.openai.ledger.totals()


def test_llm_generations_name_the_response_model_and_the_price_source(normal: LiveCall) -> None:
    """NEW: metadata response_model (the dated model that answered) and price_source."""
    for number, generation in enumerate(normal.generations(LLM), start=1):
        meta = metadata(generation)
        assert {k: meta.get(k) for k in ("processor", "turn", "response_model", "price_source")} == {
            "processor": normal.processors["llm"],
            "turn": number,
            "response_model": DATED_LLM_MODEL,
            "price_source": "builtin",
        }
        assert "usage_estimated" not in meta
        assert json_attribute(generation, MODEL) == LLM_MODEL


def test_tts_usage_equals_the_characters_cartesia_billed_per_context_and_in_total(normal: LiveCall) -> None:
    generations = normal.generations(TTS)
    contexts = normal.cartesia.ledger.billed()
    assert len(generations) == len(contexts) == 3
    for generation, context, reply in zip(generations, contexts, NORMAL.replies, strict=True):
        assert json_attribute(generation, MODEL) == TTS_MODEL
        assert json_attribute(generation, INPUT) == reply
        assert usage(generation)["input_characters"] == context.characters
        assert json_attribute(generation, COST_DETAILS) == PRICES.cost(TTS_MODEL, usage(generation))
    assert summed(generations)["input_characters"] == normal.cartesia.ledger.characters
    by_model = {m.model: m for m in normal.summary.models}
    assert by_model[TTS_MODEL].usage["input_characters"] == normal.cartesia.ledger.characters


def test_tts_output_audio_equals_the_audio_cartesia_sent(normal: LiveCall) -> None:
    """NEW (found in the observer being changed): output_audio_ms per context = the audio the fake sent."""
    contexts = normal.cartesia.ledger.billed()
    assert [usage(g) for g in normal.generations(TTS)] == [
        {"input_characters": c.characters, "output_audio_ms": c.audio_ms} for c in contexts
    ]


def test_stt_total_equals_the_audio_deepgram_received(normal: LiveCall) -> None:
    generations = normal.generations(STT)
    assert summed(generations) == {"input_audio_ms": normal.deepgram.ledger.audio_ms}
    by_model = {m.model: m for m in normal.summary.models}
    assert by_model[STT_MODEL].usage == {"input_audio_ms": normal.deepgram.ledger.audio_ms}


def test_one_stt_generation_per_utterance_with_its_finals_merged(normal: LiveCall) -> None:
    """NEW: one speech-to-text generation per user utterance; output = its final parts joined by spaces."""
    generations = normal.generations(STT)
    assert [normal.turn_number(g) for g in generations] == [1, 2, 3]
    assert [json_attribute(g, OUTPUT) for g in generations] == [u.text for u in NORMAL.utterances]
    assert [json_attribute(g, MODEL) for g in generations] == [STT_MODEL] * 3


def test_stt_usage_of_each_turn_is_the_audio_streamed_in_that_turn(normal: LiveCall) -> None:
    """NEW: audio streamed while the bot speaks belongs to the turn it was streamed in."""
    generations = normal.generations(STT)
    expected = stt_audio_ms_per_turn(normal)
    assert sum(expected) == normal.deepgram.ledger.audio_ms
    assert [usage(g) for g in generations] == [{"input_audio_ms": ms} for ms in expected]
    for generation in generations:
        assert json_attribute(generation, COST_DETAILS) == PRICES.cost(STT_MODEL, usage(generation))


def test_stt_generations_have_a_duration_ttfb_and_price_source(normal: LiveCall) -> None:
    """NEW: end > start, metadata ttfb_s (Pipecat's STT TTFB of the utterance) and price_source."""
    generations = normal.generations(STT)
    ttfb = normal.witness.reported(TTFBMetricsData, normal.processors["stt"])
    assert len(ttfb) == len(NORMAL.utterances)
    for generation, ttfb_s in zip(generations, ttfb, strict=True):
        assert generation.end_ns > generation.start_ns
        assert metadata(generation)["ttfb_s"] == round(ttfb_s, 4)
        assert metadata(generation)["price_source"] == "builtin"
    for generation in normal.generations(TTS):
        assert metadata(generation)["price_source"] == "builtin"


# == A tool call, with cached and reasoning tokens ================================================


def test_tool_call_usage_with_cached_and_reasoning_tokens_equals_the_ledger(tool_call: LiveCall) -> None:
    completions = tool_call.openai.ledger.completions
    assert tool_call.tool_calls == [json.loads(TOOL_ARGUMENTS)]
    assert len(completions) == 2
    assert all(c.finished for c in completions)
    call, answer = completions
    # The second request carries the tool call and its result.
    assert [m["role"] for m in answer.messages[-2:]] == ["assistant", "tool"]
    function = answer.messages[-2]["tool_calls"][0]["function"]
    assert function["name"] == "get_time"
    assert json.loads(function["arguments"]) == json.loads(TOOL_ARGUMENTS)  # Pipecat re-serializes them
    assert json.loads(answer.messages[-1]["content"]) == {"time": "12:00"}
    assert (call.cached_tokens, answer.cached_tokens) == (32, 64)  # as scripted: both prompts are longer
    assert call.langfuse_usage == {
        "input": call.prompt_tokens - 32,
        "output": count_tokens("get_time") + count_tokens(TOOL_ARGUMENTS),  # the 21 reasoning tokens apart
        "input_cached_tokens": 32,
        "output_reasoning_tokens": 21,
        "total": call.prompt_tokens + count_tokens("get_time") + count_tokens(TOOL_ARGUMENTS) + 21,
    }
    reported = [llm_usage_details(u) for u in tool_call.witness.usage(LLMUsageMetricsData)]  # type: ignore[arg-type]
    assert reported == [call.langfuse_usage, answer.langfuse_usage]

    generations = tool_call.generations(LLM)
    assert [usage(g) for g in generations] == [call.langfuse_usage, answer.langfuse_usage]
    assert [json_attribute(g, COST_DETAILS) for g in generations] == [
        PRICES.cost(LLM_MODEL, call.langfuse_usage),
        PRICES.cost(LLM_MODEL, answer.langfuse_usage),
    ]
    assert set(PRICES.cost(LLM_MODEL, call.langfuse_usage) or {}) >= {"input", "input_cached_tokens", "output"}
    assert json_attribute(generations[1], OUTPUT) == "It is noon in London."
    assert summed(generations) == Counter(tool_call.openai.ledger.totals())


def test_tool_call_generations_name_the_response_model(tool_call: LiveCall) -> None:
    """NEW: response_model on both completions of the tool-call turn."""
    assert [metadata(g).get("response_model") for g in tool_call.generations(LLM)] == [DATED_LLM_MODEL] * 2


def test_tool_call_stt_and_tts_usage_equal_the_ledgers(tool_call: LiveCall) -> None:
    assert summed(tool_call.generations(STT)) == {"input_audio_ms": tool_call.deepgram.ledger.audio_ms}
    assert summed(tool_call.generations(TTS))["input_characters"] == tool_call.cartesia.ledger.characters


# == A barge-in cuts a streamed LLM response and cancels the Cartesia context ========================


def test_the_barge_in_cuts_the_stream_before_its_usage_chunk(barge_in: LiveCall) -> None:
    cut, answer = barge_in.openai.ledger.completions
    assert cut.cut
    assert not cut.finished
    assert 0 < cut.sent_tokens < cut.planned_tokens == count_tokens(LONG_REPLY)
    assert LONG_REPLY.startswith(cut.text_sent)
    assert answer.finished
    assert answer.text_sent == "Okay."
    # Pipecat reports no usage for the cut stream: only the second completion's.
    reported = [llm_usage_details(u) for u in barge_in.witness.usage(LLMUsageMetricsData)]  # type: ignore[arg-type]
    assert reported == [answer.langfuse_usage]
    assert [t.interrupted for t in barge_in.summary.turns] == [True, False]


def test_the_cut_stream_gets_estimated_usage_equal_to_the_ledger(barge_in: LiveCall) -> None:
    """NEW: usage estimated for a cut stream: input = the fake's prompt count, output = the tokens sent."""
    cut, answer = barge_in.openai.ledger.completions
    first, second = barge_in.generations(LLM)
    assert barge_in.turn_number(first) == 1
    assert usage(first) == {"input": cut.prompt_tokens, "output": cut.sent_tokens, "total": cut.total_tokens}
    assert usage(first) == cut.langfuse_usage
    assert metadata(first)["usage_estimated"] is True
    assert json_attribute(first, COST_DETAILS) == PRICES.cost(LLM_MODEL, cut.langfuse_usage)
    assert usage(second) == answer.langfuse_usage
    assert "usage_estimated" not in metadata(second)
    assert summed([first, second]) == Counter(barge_in.openai.ledger.totals())


def test_cartesia_context_is_cancelled_on_the_interruption_and_billed(barge_in: LiveCall) -> None:
    ledger = barge_in.cartesia.ledger
    cancelled, spoken = ledger.billed()
    assert ledger.cancels == [cancelled.context_id]
    assert cancelled.cancelled
    assert not cancelled.done
    assert LONG_REPLY.startswith(" ".join(cancelled.transcripts))
    assert spoken.done
    assert not spoken.cancelled
    assert spoken.text == "Okay."
    generations = barge_in.generations(TTS)
    assert [barge_in.turn_number(g) for g in generations] == [1, 2]
    # The cancelled context's characters were submitted, so they are billed, and reported.
    assert [usage(g)["input_characters"] for g in generations] == [cancelled.characters, spoken.characters]
    assert summed(generations)["input_characters"] == ledger.characters
    assert json_attribute(barge_in.turns()[0], f"{METADATA_PREFIX}interrupted") is True


def test_tts_output_audio_after_a_cancel_is_at_most_what_cartesia_sent(barge_in: LiveCall) -> None:
    """NEW (output_audio_ms, found in the observer being changed): audio sent after the cancel never plays."""
    cancelled, spoken = barge_in.cartesia.ledger.billed()
    first, second = barge_in.generations(TTS)
    assert usage(second).get("output_audio_ms") == spoken.audio_ms
    assert 0 < usage(first).get("output_audio_ms", 0) <= cancelled.audio_ms


def test_caller_speech_during_the_bot_reply_is_billed_once(barge_in: LiveCall) -> None:
    chunks = barge_in.deepgram.ledger.chunks
    (window, *_) = barge_in.witness.speaking_windows()
    assert any(c.voiced for c in chunks if window[0] <= c.received_ns < window[1]), "the caller spoke over the bot"
    assert summed(barge_in.generations(STT)) == {"input_audio_ms": barge_in.deepgram.ledger.audio_ms}


def test_barge_in_stt_usage_per_turn(barge_in: LiveCall) -> None:
    """NEW: one STT generation per utterance, each with the audio streamed in its turn."""
    generations = barge_in.generations(STT)
    assert [json_attribute(g, OUTPUT) for g in generations] == [u.text for u in BARGE_IN.utterances]
    assert [usage(g) for g in generations] == [{"input_audio_ms": ms} for ms in stt_audio_ms_per_turn(barge_in)]


# == The fakes alone, driven by the real client libraries (fast: no real-time pipeline) ============


def _pcm(seconds: float, amplitude: int) -> bytes:
    samples = int(16000 * seconds)
    if amplitude == 0:
        return bytes(2 * samples)
    wave = [amplitude if (i // 20) % 2 else -amplitude for i in range(samples)]
    return b"".join(v.to_bytes(2, "little", signed=True) for v in wave)


def test_fake_deepgram_speaks_the_sdk_protocol_with_vad_events_utterance_end_and_finalize() -> None:
    from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
    from deepgram.listen.v1.types import (
        ListenV1KeepAlive,
        ListenV1Results,
        ListenV1SpeechStarted,
        ListenV1UtteranceEnd,
    )

    async def session(fake: FakeDeepgram) -> list[object]:
        ws = f"ws://127.0.0.1:{fake.port}"
        environment = DeepgramClientEnvironment(base=ws, production=ws, agent=ws, agent_rest=ws)
        client = AsyncDeepgramClient(api_key=fake.api_key, environment=environment)
        received: list[object] = []
        async with client.listen.v1.connect(
            model="nova-3-general",
            encoding="linear16",
            sample_rate="16000",
            channels="1",
            interim_results="true",
            vad_events="true",
            utterance_end_ms="1000",
        ) as connection:
            for chunk in (_pcm(0.6, 3000), _pcm(0.3, 0), _pcm(1.2, 0)):  # speech, then silence
                for start in range(0, len(chunk), 640):
                    await connection.send_media(chunk[start : start + 640])
            await connection.send_keep_alive(ListenV1KeepAlive(type="KeepAlive"))  # no audio: not billed
            await connection.send_finalize()  # nothing left to finalize: an empty from_finalize result
            await connection.send_close_stream()
            async for message in connection:
                received.append(message)
        return received

    with FakeDeepgram(["Hello there, how are you?"]) as fake:
        received = asyncio.run(session(fake))
    ledger = fake.ledger
    assert ledger.audio_ms == 2100
    assert ledger.speech_started == 1
    assert ledger.utterance_ends == 1
    kinds = [type(m).__name__ for m in received]
    assert kinds[0] == "ListenV1SpeechStarted"
    assert isinstance(received[0], ListenV1SpeechStarted)
    results = [m for m in received if isinstance(m, ListenV1Results)]
    finals = [(r.channel.alternatives[0].transcript, r.speech_final, r.from_finalize) for r in results if r.is_final]
    # No Finalize during the speech: the rest came at the fallback endpoint, then the Finalize got an empty answer.
    assert finals == [("Hello there, how", False, False), ("are you?", True, False), ("", False, True)]
    assert any(not r.is_final and r.channel.alternatives[0].transcript == "Hello" for r in results)
    assert sum(isinstance(m, ListenV1UtteranceEnd) for m in received) == 1
    assert kinds[-1] == "ListenV1Metadata"
    assert ledger.control == ["KeepAlive", "Finalize", "CloseStream"]


def test_fake_deepgram_rejects_a_wrong_key() -> None:
    from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment

    async def connect(fake: FakeDeepgram) -> None:
        ws = f"ws://127.0.0.1:{fake.port}"
        environment = DeepgramClientEnvironment(base=ws, production=ws, agent=ws, agent_rest=ws)
        async with AsyncDeepgramClient(api_key="wrong", environment=environment).listen.v1.connect(model="nova-3"):
            pass

    with FakeDeepgram([]) as fake, pytest.raises(Exception, match="401"):
        asyncio.run(connect(fake))
    assert fake.ledger.authorizations == ["Token wrong"]


def test_fake_openai_bills_a_stream_the_client_abandons() -> None:
    from openai import AsyncOpenAI

    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Talk."}]

    async def abandon_after(fake: FakeOpenAI, chunks: int) -> list[str]:
        client = AsyncOpenAI(api_key=fake.api_key, base_url=fake.base_url)
        stream = await client.chat.completions.create(
            model="gpt-4.1-mini", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        pieces = []
        async for chunk in stream:
            assert chunk.model == DATED_LLM_MODEL
            pieces.append(chunk.choices[0].delta.content or "")
            if len(pieces) == chunks:
                break
        await stream.close()
        await asyncio.sleep(0.3)  # the fake notices at its next token
        await client.close()
        return pieces

    with FakeOpenAI([Reply(LONG_REPLY)], token_delay_s=0.05) as fake:
        pieces = asyncio.run(abandon_after(fake, 6))
    (completion,) = fake.ledger.completions
    assert completion.cut
    assert not completion.finished
    assert completion.text_sent == "".join(pieces)  # the role chunk, then 5 tokens
    assert completion.sent_tokens == 5
    assert completion.prompt_tokens == prompt_tokens(messages)
    assert completion.langfuse_usage == {
        "input": completion.prompt_tokens,
        "output": 5,
        "total": completion.prompt_tokens + 5,
    }


def test_fake_openai_streams_a_tool_call_and_the_usage_chunk() -> None:
    from openai import AsyncOpenAI

    tools: Any = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]

    async def complete(fake: FakeOpenAI) -> list[Any]:
        client = AsyncOpenAI(api_key=fake.api_key, base_url=fake.base_url)
        stream = await client.chat.completions.create(
            model="gpt-4.1-mini",
            messages=[{"role": "user", "content": "Time?"}],
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        await client.close()
        return chunks

    reply = Reply(tool_call=ToolCall("get_time", TOOL_ARGUMENTS, id="call_1"), cached_tokens=8, reasoning_tokens=5)
    with FakeOpenAI([reply]) as fake:
        chunks = asyncio.run(complete(fake))
    (completion,) = fake.ledger.completions
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0].id == "call_1"
    assert calls[0].function is not None
    assert calls[0].function.name == "get_time"
    assert "".join((c.function.arguments or "") for c in calls if c.function) == TOOL_ARGUMENTS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.model_dump(exclude_none=True) == completion.usage
    assert completion.prompt_tokens == prompt_tokens([{"role": "user", "content": "Time?"}], tools)
    assert completion.completion_tokens == count_tokens("get_time") + count_tokens(TOOL_ARGUMENTS) + 5


def test_fake_cartesia_stops_a_cancelled_context_and_bills_what_was_submitted() -> None:
    from websockets.asyncio.client import connect

    def message(text: str, context_id: str, *, keep_going: bool = True) -> str:
        output = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
        return json.dumps(
            {
                "transcript": text,
                "continue": keep_going,
                "context_id": context_id,
                "model_id": TTS_MODEL,
                "voice": {"mode": "id", "id": "v"},
                "output_format": output,
                "add_timestamps": True,
            }
        )

    async def session(fake: FakeCartesia) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        headers = {"X-API-Key": fake.api_key, "Cartesia-Version": "2025-04-16"}
        async with connect(fake.url, additional_headers=headers) as ws:
            await ws.send(message("A long sentence that takes a while to say.", "ctx-1"))
            received.append(json.loads(await ws.recv()))  # its timestamps
            received.append(json.loads(await ws.recv()))  # its first chunk
            await ws.send(json.dumps({"context_id": "ctx-1", "cancel": True}))
            await ws.send(message("Short.", "ctx-2"))
            await ws.send(message("", "ctx-2", keep_going=False))
            while not received or received[-1].get("type") != "done":
                received.append(json.loads(await ws.recv()))
        return received

    with FakeCartesia() as fake:
        received = asyncio.run(session(fake))
    first, second = fake.ledger.contexts.values()
    assert (first.characters, first.cancelled, first.done) == (42, True, False)
    assert (second.characters, second.cancelled, second.done) == (6, False, True)
    assert fake.ledger.characters == 48
    assert received[0]["type"] == "timestamps"
    assert received[0]["word_timestamps"]["words"][:2] == ["A", "long"]
    after_cancel = [m for m in received[2:] if m["context_id"] == "ctx-1"]
    assert len(after_cancel) <= 1  # at most a chunk already on its way
    assert [m["type"] for m in received if m["context_id"] == "ctx-2"][-1] == "done"
    assert second.audio_ms == 380  # 6 characters at 16 per second, in whole 10 ms


def test_after_the_barge_in_the_turn_says_what_the_caller_heard_of_the_cut_reply(barge_in: LiveCall) -> None:
    cut, _ = barge_in.openai.ledger.completions
    cancelled, _ = barge_in.cartesia.ledger.billed()
    turn_1, turn_2 = barge_in.turns()
    heard = json_attribute(turn_1, OUTPUT)
    generated = metadata(turn_1)["generated_text"]
    assert generated == cut.text_sent.strip()  # what the LLM streamed before the cut
    # Cartesia gives word timestamps: the words presented before the barge-in, a prefix of the reply.
    assert heard
    assert generated.startswith(heard)
    # Cartesia had timestamped more words than had been presented when the caller cut in.
    assert len(heard.split()) < len(" ".join(cancelled.transcripts).split()) < len(LONG_REPLY.split())
    assert json_attribute(turn_2, OUTPUT) == "Okay."
    first, second = barge_in.generations(LLM)
    assert (metadata(first)["output_fate"], metadata(second)["output_fate"]) == ("cut_off", "spoken")
