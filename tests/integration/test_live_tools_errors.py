"""Tool calls and errors of the live bot's services (Deepgram, OpenAI, Cartesia) against local fakes.

Issue 9, parts 4 (tool observations) and 5 (errors). Each scenario is one short real-time call
through ``app.live.create_live_services`` + ``app.bot.run_conversation`` (harness:
tests/support/live_call.py), with the fakes' error injection:

1. a tool call that succeeds;
2. a tool handler that raises (Pipecat settles the call with ``FunctionCallResultFrame.error``);
3. OpenAI answering HTTP 500 to the first completion (the client's retries included), then working;
4. Cartesia answering one context with its websocket error event, the next context working;
5. a tool call cancelled by the caller speaking again while it runs (``FunctionCallCancelFrame``).

The spec (asserted exactly):
- a tool call is one observation named after the function, ``langfuse.observation.type`` "tool",
  child of the turn span in which it started (same parent as that turn's generations), from the
  InProgress frame to the result/cancel frame; input = the arguments, output = the result,
  metadata {"tool_call_id", "turn", "processor"}; a handler that raised -> level ERROR,
  status_message = the frame's error; cancelled -> level WARNING, status_message "cancelled",
  metadata cancelled=true; the generation that made the call has output
  {"role": "assistant", "content": <text|null>, "tool_calls": [{"id", "type": "function",
  "function": {"name", "arguments": <JSON string>}}]};
- an ErrorFrame marks the failing service's generation then open: level ERROR, status_message =
  the error text, metadata error {"message", "fatal", "recovered"}; with no such generation the
  turn span gets level ERROR, status_message and metadata errors [{"processor", "message",
  "fatal", "recovered"}]; a failed LLM request has no usage_details and no cost_details; the root
  gets metadata errors / unrecovered_errors; every span is ended and exported.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pipecat.services.llm_service import FunctionCallParams

from app.offline import CallerScript, Utterance
from pipecat_langfuse import PriceTable
from tests.support.langfuse_rules import (
    COMPLETION_START_TIME,
    COST_DETAILS,
    INPUT,
    LEVEL,
    METADATA,
    MODEL,
    OBSERVATION_TYPE,
    OUTPUT,
    STATUS_MESSAGE,
    USAGE_DETAILS,
    json_attribute,
    observation_attributes,
)
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.live_call import LiveCall, returning, run_live_call
from tests.support.otel_global import fresh_global_tracer_provider
from tests.support.providers.cartesia import FakeCartesia
from tests.support.providers.openai import SERVER_ERROR_MESSAGE, FakeOpenAI, Reply, ToolCall

PRICES = PriceTable.load()
STT, LLM, TTS = "speech-to-text", "llm-completion", "text-to-speech"
LLM_MODEL = "gpt-4.1-mini"
TIME_TOLERANCE_NS = 50_000_000
"""Observation start/end vs the wall-clock time the witness saw the frame pushed."""
CLIENT_RETRIES = 2
"""The openai client's default ``max_retries``: a 5xx is retried twice before Pipecat sees it."""

TOOL = "get_time"
TOOL_ARGUMENTS = '{"timezone":"Europe/London"}'
TOOL_RESULT = {"time": "12:00"}
TOOL_SECONDS = 0.3
TOOL_SCRIPT = CallerScript(
    utterances=(Utterance("What time is it in London?", delay_secs=0.5),),
    replies=("It is noon in London.",),
    hangup_delay_secs=0.5,
)

RAISED = "clock unavailable"
RAISING_REPLIES = (
    Reply(tool_call=ToolCall(TOOL, TOOL_ARGUMENTS, id="call_raise_1")),
    Reply("Sorry, I cannot tell the time right now."),
)

LLM_FAILURE_SCRIPT = CallerScript(
    utterances=(
        Utterance("What are your opening hours?", delay_secs=0.5),
        Utterance("Hello? Are you there?", delay_secs=0.3),
    ),
    replies=("(never said: the request fails)", "Yes, we are open from nine to five."),
    hangup_delay_secs=0.5,
)
"""The first completion fails (no reply); the caller, after 1.5 s of silence, asks again."""

TTS_FAILURE_SCRIPT = CallerScript(
    utterances=(
        Utterance("What are your opening hours?", delay_secs=0.5),
        Utterance("Sorry, say again?", delay_secs=0.4),
    ),
    replies=("We are open from nine to five, every day.", "Nine to five."),
    hangup_delay_secs=0.5,
)
CARTESIA_ERROR = "Internal server error: synthesis failed"

CANCEL_SCRIPT = CallerScript(
    utterances=(
        Utterance("What time is it in London?", delay_secs=0.5),
        Utterance("Never mind, thanks.", delay_secs=0.2),
    ),
    replies=("(never said: the tool is cancelled)", "Okay."),
    hangup_delay_secs=0.5,
)
"""The tool runs for 5 s; the caller, after 1.2 s of silence, speaks again and interrupts it."""


# -- Calls ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _first_langfuse_client_of_the_process() -> Iterator[None]:
    with fresh_global_tracer_provider():
        yield


@pytest.fixture(scope="module")
def server(module_local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return module_local_langfuse(public_key="pk-lf-live-tools-errors")


@pytest.fixture(scope="module")
def tool_ok(server: LocalLangfuse) -> LiveCall:
    replies = (
        Reply(tool_call=ToolCall(TOOL, TOOL_ARGUMENTS, id="call_time_1")),
        Reply("It is noon in London."),
    )
    return run_live_call(
        server,
        TOOL_SCRIPT,
        conversation_id="live-tool-ok",
        prices=PRICES,
        openai=FakeOpenAI(replies),
        tools={TOOL: returning(TOOL_RESULT, after_s=TOOL_SECONDS)},
    )


@pytest.fixture(scope="module")
def tool_raises(server: LocalLangfuse) -> LiveCall:
    async def get_time(params: FunctionCallParams) -> None:
        await asyncio.sleep(0.1)
        raise ValueError(RAISED)

    return run_live_call(
        server,
        TOOL_SCRIPT,
        conversation_id="live-tool-raises",
        prices=PRICES,
        openai=FakeOpenAI(RAISING_REPLIES),
        tools={TOOL: get_time},
    )


@pytest.fixture(scope="module")
def llm_failure(server: LocalLangfuse) -> LiveCall:
    return run_live_call(
        server,
        LLM_FAILURE_SCRIPT,
        conversation_id="live-llm-500",
        prices=PRICES,
        openai=FakeOpenAI((Reply(LLM_FAILURE_SCRIPT.replies[1]),), failures=1 + CLIENT_RETRIES),
        patience_s=1.5,
    )


@pytest.fixture(scope="module")
def tts_failure(server: LocalLangfuse) -> LiveCall:
    return run_live_call(
        server,
        TTS_FAILURE_SCRIPT,
        conversation_id="live-cartesia-error",
        prices=PRICES,
        cartesia=FakeCartesia(fail_context=0, fail_after_chunks=2, error_text=CARTESIA_ERROR),
        patience_s=3.0,
    )


@pytest.fixture(scope="module")
def tool_cancelled(server: LocalLangfuse) -> LiveCall:
    replies = (Reply(tool_call=ToolCall(TOOL, TOOL_ARGUMENTS, id="call_cancel_1")), Reply("Okay."))
    return run_live_call(
        server,
        CANCEL_SCRIPT,
        conversation_id="live-tool-cancelled",
        prices=PRICES,
        openai=FakeOpenAI(replies),
        tools={TOOL: returning(TOOL_RESULT, after_s=5.0)},
        patience_s=1.2,
    )


# -- Helpers ----------------------------------------------------------------------------------------


def metadata(span: ReceivedSpan) -> dict[str, Any]:
    value: dict[str, Any] = observation_attributes(span.attributes).get(METADATA, {})
    return value


def level(span: ReceivedSpan) -> tuple[Any, Any]:
    return span.attributes.get(LEVEL), span.attributes.get(STATUS_MESSAGE)


def not_flagged(span: ReceivedSpan) -> bool:
    return span.attributes.get(LEVEL) in (None, "DEFAULT") and STATUS_MESSAGE not in span.attributes


def assert_close(actual_ns: int, expected_ns: int, what: str) -> None:
    assert abs(actual_ns - expected_ns) <= TIME_TOLERANCE_NS, (what, (actual_ns - expected_ns) / 1e6, "ms")


def assert_every_span_ended_and_exported(call: LiveCall) -> None:
    spans = call.ours()
    ids = {s.span_id for s in spans}
    assert len(ids) == len(spans), "each span exported once"
    root = call.root()
    for span in spans:
        assert 0 < span.start_ns <= span.end_ns, span.name
        if span is not root:
            assert span.parent_span_id in ids, (span.name, "its parent was exported")
    assert len(call.turns()) == len(call.summary.turns)


def tool_call_output(call_id: str, content: Any = None) -> dict[str, Any]:
    """The spec's output of a generation that made a call (arguments compared parsed: see below)."""
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": TOOL, "arguments": TOOL_ARGUMENTS}}],
    }


def with_parsed_arguments(output: Any) -> Any:
    """``output`` with each tool call's ``arguments`` JSON string parsed (whitespace is not the spec)."""
    if not isinstance(output, dict):
        return output
    calls = [
        {**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
        for c in output.get("tool_calls", [])
    ]
    return {**output, "tool_calls": calls}


# == 1. A tool call that succeeds ==================================================================


def test_tool_ok_the_call_ran_once_with_the_streamed_arguments(tool_ok: LiveCall) -> None:
    assert tool_ok.seconds < 12
    assert tool_ok.tool_calls == [json.loads(TOOL_ARGUMENTS)]
    assert [(f.kind, f.tool_call_id) for f in tool_ok.witness.function_frames] == [
        ("in_progress", "call_time_1"),
        ("result", "call_time_1"),
    ]
    assert tool_ok.witness.errors == []
    assert [c.finished for c in tool_ok.openai.ledger.completions] == [True, True]


def test_tool_ok_is_one_tool_observation_under_the_turn_of_its_generations(tool_ok: LiveCall) -> None:
    (tool,) = tool_ok.named(TOOL)
    assert tool.attributes[OBSERVATION_TYPE] == "tool"
    (turn,) = tool_ok.turns()
    generations = tool_ok.generations(LLM)
    assert len(generations) == 2
    assert tool.parent_span_id == turn.span_id
    assert {g.parent_span_id for g in generations} == {tool.parent_span_id}


def test_tool_ok_spans_from_in_progress_to_result(tool_ok: LiveCall) -> None:
    (tool,) = tool_ok.named(TOOL)
    started = tool_ok.witness.function_frame("in_progress", "call_time_1")
    result = tool_ok.witness.function_frame("result", "call_time_1")
    assert_close(tool.start_ns, started.at_ns, "start = InProgress")
    assert_close(tool.end_ns, result.at_ns, "end = result")
    assert tool.end_ns - tool.start_ns >= TOOL_SECONDS * 1e9 * 0.9


def test_tool_ok_input_output_and_metadata(tool_ok: LiveCall) -> None:
    (tool,) = tool_ok.named(TOOL)
    assert json_attribute(tool, INPUT) == json.loads(TOOL_ARGUMENTS)
    assert json_attribute(tool, OUTPUT) == TOOL_RESULT
    assert metadata(tool) == {"tool_call_id": "call_time_1", "turn": 1, "processor": tool_ok.processors["llm"]}
    assert not_flagged(tool)


def test_tool_ok_the_calling_generation_outputs_the_tool_call(tool_ok: LiveCall) -> None:
    calling, answer = tool_ok.generations(LLM)
    output = json_attribute(calling, OUTPUT)
    assert isinstance(output, dict)
    assert isinstance(output["tool_calls"][0]["function"]["arguments"], str)
    assert with_parsed_arguments(output) == with_parsed_arguments(tool_call_output("call_time_1"))
    assert json_attribute(answer, OUTPUT) == "It is noon in London."
    assert not_flagged(calling)
    assert not_flagged(answer)


def test_tool_ok_root_counts_no_error(tool_ok: LiveCall) -> None:
    meta = metadata(tool_ok.root())
    assert (meta.get("errors", 0), meta.get("unrecovered_errors", 0)) == (0, 0)
    assert all(not_flagged(s) for s in tool_ok.ours())
    assert_every_span_ended_and_exported(tool_ok)


# == 2. A tool handler that raises =================================================================


def test_tool_raises_pipecat_settles_the_call_with_its_error(tool_raises: LiveCall) -> None:
    assert tool_raises.seconds < 12
    result = tool_raises.witness.function_frame("result", "call_raise_1")
    assert result.error == f"ValueError: {RAISED}"
    assert result.result == f"The function `{TOOL}` failed and returned no result."
    # Pipecat also pushes an ErrorFrame from the LLM service (category APPLICATION).
    (error,) = tool_raises.witness.errors
    assert (error.error, error.fatal, error.processor) == (
        f"Error executing function call [{TOOL}]: {RAISED}",
        False,
        tool_raises.processors["llm"],
    )
    assert [c.finished for c in tool_raises.openai.ledger.completions] == [True, True]


def test_tool_raises_the_tool_observation_is_error(tool_raises: LiveCall) -> None:
    (tool,) = tool_raises.named(TOOL)
    assert tool.attributes[OBSERVATION_TYPE] == "tool"
    assert level(tool) == ("ERROR", f"ValueError: {RAISED}")
    assert json_attribute(tool, INPUT) == json.loads(TOOL_ARGUMENTS)
    assert json_attribute(tool, OUTPUT) == f"The function `{TOOL}` failed and returned no result."
    assert metadata(tool) == {"tool_call_id": "call_raise_1", "turn": 1, "processor": tool_raises.processors["llm"]}
    (turn,) = tool_raises.turns()
    assert tool.parent_span_id == turn.span_id
    started = tool_raises.witness.function_frame("in_progress", "call_raise_1")
    result = tool_raises.witness.function_frame("result", "call_raise_1")
    assert_close(tool.start_ns, started.at_ns, "start = InProgress")
    assert_close(tool.end_ns, result.at_ns, "end = result")


def test_tool_raises_the_handlers_error_frame_is_the_tools_alone(tool_raises: LiveCall) -> None:
    """Pipecat pushes the handler's error (category "application") while the call is in progress, between
    the calling completion's end and the next one's start: the tool observation carries it, not a
    generation (the calling one had ended) nor the turn; it counts once, recovered (the LLM answered)."""
    (error,) = tool_raises.witness.errors
    ends = [at for kind, at in tool_raises.witness.llm_responses if kind == "end"]
    starts = [at for kind, at in tool_raises.witness.llm_responses if kind == "start"]
    assert len(starts) == len(ends) == 2
    assert ends[0] < error.at_ns < starts[1], "precondition: no LLM response open at the error"
    (turn,) = tool_raises.turns()
    assert not_flagged(turn)
    assert "errors" not in metadata(turn)
    for generation in tool_raises.generations(LLM):
        assert not_flagged(generation)
        assert "error" not in metadata(generation)


def test_tool_raises_the_calling_generation_outputs_the_tool_call(tool_raises: LiveCall) -> None:
    calling, answer = tool_raises.generations(LLM)
    assert with_parsed_arguments(json_attribute(calling, OUTPUT)) == with_parsed_arguments(
        tool_call_output("call_raise_1")
    )
    assert json_attribute(answer, OUTPUT) == RAISING_REPLIES[1].text


def test_tool_raises_root_counts_one_recovered_error(tool_raises: LiveCall) -> None:
    meta = metadata(tool_raises.root())
    assert (meta.get("errors"), meta.get("unrecovered_errors")) == (1, 0)
    assert_every_span_ended_and_exported(tool_raises)


# == 3. OpenAI answers HTTP 500, then works ========================================================

LLM_ERROR = f"Error during completion: Error code: 500 - {SERVER_ERROR_MESSAGE}"


def test_llm_failure_the_first_request_failed_after_the_client_retries(llm_failure: LiveCall) -> None:
    assert llm_failure.seconds < 14
    ledger = llm_failure.openai.ledger
    assert [f.status for f in ledger.failures] == [500] * (1 + CLIENT_RETRIES)
    assert len(ledger.completions) == 1
    assert ledger.completions[0].finished
    (error,) = llm_failure.witness.errors
    assert (error.error, error.fatal, error.processor) == (LLM_ERROR, False, llm_failure.processors["llm"])
    # The observer's turn model, not the spec: the bot never answered the first utterance, so the
    # second one continues turn 1 (the summary has ONE turn with both utterances). The assertions
    # below hold either way: the failure in the first turn, the answer in the last.
    assert llm_failure.summary.turns[0].user_text.startswith(LLM_FAILURE_SCRIPT.utterances[0].text)
    assert llm_failure.summary.turns[-1].bot_text == LLM_FAILURE_SCRIPT.replies[1]


def test_llm_failure_the_failed_generation_is_error_without_usage_or_cost(llm_failure: LiveCall) -> None:
    failed, answered = llm_failure.generations(LLM)
    assert llm_failure.turn_number(failed) == 1
    assert llm_failure.turn_number(answered) == len(llm_failure.turns())
    assert failed.end_ns <= answered.start_ns
    assert level(failed) == ("ERROR", LLM_ERROR)
    assert USAGE_DETAILS not in failed.attributes
    assert COST_DETAILS not in failed.attributes
    assert "usage_estimated" not in metadata(failed)
    assert metadata(failed)["error"] == {"message": LLM_ERROR, "fatal": False, "recovered": True, "category": "server"}
    assert json_attribute(failed, MODEL) == LLM_MODEL


def test_llm_failure_the_next_generation_is_billed_and_clean(llm_failure: LiveCall) -> None:
    (completion,) = llm_failure.openai.ledger.completions
    _, answered = llm_failure.generations(LLM)
    assert not_flagged(answered)
    assert "error" not in metadata(answered)
    assert json_attribute(answered, USAGE_DETAILS) == completion.langfuse_usage
    assert json_attribute(answered, COST_DETAILS) == PRICES.cost(LLM_MODEL, completion.langfuse_usage)
    assert json_attribute(answered, OUTPUT) == LLM_FAILURE_SCRIPT.replies[1]


def test_llm_failure_the_turn_itself_is_not_flagged(llm_failure: LiveCall) -> None:
    """A generation carries the error, so the turn span does not repeat it."""
    for turn in llm_failure.turns():
        assert not_flagged(turn)
        assert "errors" not in metadata(turn)
    assert [llm_failure.turn_number(g) for g in llm_failure.generations(TTS)] == [len(llm_failure.turns())]


def test_llm_failure_the_failed_generation_has_no_completion_start_time(llm_failure: LiveCall) -> None:
    """FOUND (beyond the spec): no token came, so no completion start. The failed request's TTFB timer
    is never stopped by the service; the InterruptionFrame of the caller's next utterance stops it
    (FrameProcessor: InterruptionFrame -> stop_all_metrics), so Pipecat reports a TTFB of ~1.5 s that
    ends after the generation itself, and the observer turns it into completion_start_time
    (pipecat_langfuse/_observer.py: completion_start_ns = start + ttfb_s)."""
    failed, _ = llm_failure.generations(LLM)
    assert COMPLETION_START_TIME not in failed.attributes


def test_llm_failure_root_counts_one_recovered_error_and_every_span_ended(llm_failure: LiveCall) -> None:
    meta = metadata(llm_failure.root())
    assert (meta.get("errors"), meta.get("unrecovered_errors")) == (1, 0)
    assert_every_span_ended_and_exported(llm_failure)


# == 4. Cartesia answers one context with an error =================================================


def cartesia_error_text(call: LiveCall) -> str:
    (event,) = call.cartesia.ledger.errors
    return f"Error: {event}"  # Pipecat's CartesiaTTSService: push_error(error_msg=f"Error: {msg}")


def test_tts_failure_cartesia_failed_the_first_context_only(tts_failure: LiveCall) -> None:
    assert tts_failure.seconds < 12
    ledger = tts_failure.cartesia.ledger
    failed, spoken = ledger.billed()
    assert failed.error == {
        "type": "error",
        "context_id": failed.context_id,
        "status_code": 500,
        "done": True,
        "error": CARTESIA_ERROR,
    }
    assert (failed.chunks_sent, failed.done) == (2, False)
    assert (spoken.error, spoken.done, spoken.text) == (None, True, TTS_FAILURE_SCRIPT.replies[1])
    (error,) = tts_failure.witness.errors
    assert (error.error, error.fatal, error.processor) == (
        cartesia_error_text(tts_failure),
        False,
        tts_failure.processors["tts"],
    )


def test_tts_failure_the_failed_tts_generation_is_error_and_recovered(tts_failure: LiveCall) -> None:
    failed, spoken = tts_failure.generations(TTS)
    assert [tts_failure.turn_number(g) for g in (failed, spoken)] == [1, 2]
    message = cartesia_error_text(tts_failure)
    assert level(failed) == ("ERROR", message)
    assert metadata(failed)["error"] == {"message": message, "fatal": False, "recovered": True, "category": "unknown"}
    assert not_flagged(spoken)
    assert "error" not in metadata(spoken)
    # Usage is still what Cartesia billed and sent: all characters submitted, the 2 chunks before the error.
    contexts = tts_failure.cartesia.ledger.billed()
    assert [json_attribute(g, USAGE_DETAILS) for g in (failed, spoken)] == [
        {"input_characters": c.characters, "output_audio_ms": c.audio_ms} for c in contexts
    ]
    assert contexts[0].audio_ms == 200


def test_tts_failure_no_other_observation_is_flagged(tts_failure: LiveCall) -> None:
    failed, _ = tts_failure.generations(TTS)
    for span in tts_failure.ours():
        if span.span_id != failed.span_id and span.name != "voice-conversation":
            assert not_flagged(span), span.name
            assert "errors" not in metadata(span), span.name


def test_tts_failure_root_counts_one_recovered_error_and_every_span_ended(tts_failure: LiveCall) -> None:
    meta = metadata(tts_failure.root())
    assert (meta.get("errors"), meta.get("unrecovered_errors")) == (1, 0)
    assert_every_span_ended_and_exported(tts_failure)


# == 5. A tool call cancelled by the caller speaking again =========================================


def test_tool_cancelled_pipecat_cancelled_the_call(tool_cancelled: LiveCall) -> None:
    assert tool_cancelled.seconds < 12
    assert [(f.kind, f.tool_call_id) for f in tool_cancelled.witness.function_frames] == [
        ("in_progress", "call_cancel_1"),
        ("cancel", "call_cancel_1"),
    ]


def test_tool_cancelled_the_tool_observation_is_a_cancelled_warning(tool_cancelled: LiveCall) -> None:
    (tool,) = tool_cancelled.named(TOOL)
    assert tool.attributes[OBSERVATION_TYPE] == "tool"
    assert level(tool) == ("WARNING", "cancelled")
    assert metadata(tool) == {
        "tool_call_id": "call_cancel_1",
        "turn": 1,
        "processor": tool_cancelled.processors["llm"],
        "cancelled": True,
    }
    assert json_attribute(tool, INPUT) == json.loads(TOOL_ARGUMENTS)
    assert tool_cancelled.turn_number(tool) == 1
    started = tool_cancelled.witness.function_frame("in_progress", "call_cancel_1")
    cancel = tool_cancelled.witness.function_frame("cancel", "call_cancel_1")
    assert_close(tool.start_ns, started.at_ns, "start = InProgress")
    assert_close(tool.end_ns, cancel.at_ns, "end = cancel")
    assert_every_span_ended_and_exported(tool_cancelled)
