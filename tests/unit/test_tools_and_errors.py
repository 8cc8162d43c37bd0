"""Tool calls as ``tool`` observations, and service errors where they happened, on a scripted clock.

Real Pipecat frames from real service instances go to the tracer's observer at chosen pipeline
times; the real Langfuse client writes to memory (``tests.support.scripted_export``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pipecat.frames.frames import (
    EndFrame,
    ErrorCategory,
    ErrorFrame,
    FunctionCallCancelFrame,
    FunctionCallFromLLM,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext

from pipecat_langfuse import PriceTable
from tests.support.in_memory_langfuse import InMemoryLangfuse, in_memory_langfuse
from tests.support.langfuse_rules import (
    COST_DETAILS,
    INPUT,
    LEVEL,
    METADATA,
    OBSERVATION_TYPE,
    OUTPUT,
    STATUS_MESSAGE,
    USAGE_DETAILS,
)
from tests.support.scripted_call import (
    Script,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    Transport,
    llm_usage,
    stt_usage,
    tts_usage,
    tts_words,
)
from tests.support.scripted_export import Call, run_call

PUBLIC_KEY = "pk-lf-tools-and-errors"
ARGUMENTS = {"city": "London"}
CONTEXT = LLMContextFrame(context=LLMContext(messages=[{"role": "user", "content": "Time in London?"}]))  # type: ignore[list-item]


@pytest.fixture(scope="module")
def langfuse() -> Iterator[InMemoryLangfuse]:
    langfuse = in_memory_langfuse(PUBLIC_KEY)
    yield langfuse
    langfuse.close()


def play(langfuse: InMemoryLangfuse, script: Any) -> Call:
    return run_call(langfuse, script, PriceTable.load(), PUBLIC_KEY)


def calls_started(*ids: str) -> FunctionCallsStartedFrame:
    return FunctionCallsStartedFrame(
        function_calls=[FunctionCallFromLLM("get_time", i, ARGUMENTS, context=None) for i in ids]
    )


def in_progress(call_id: str) -> FunctionCallInProgressFrame:
    return FunctionCallInProgressFrame("get_time", call_id, ARGUMENTS)


def result(call_id: str, value: Any, error: str | None = None) -> FunctionCallResultFrame:
    return FunctionCallResultFrame("get_time", call_id, ARGUMENTS, value, error=error)


def turn_span_id(call: Call) -> int:
    (turn,) = call.named("turn 1")
    return int(turn["span_id"])


# -- Tool calls --------------------------------------------------------------------------------


async def play_tool_calls(script: Script) -> None:
    transport, llm = Transport(name="transport"), ScriptedLLM(model="gpt-4.1-mini", name="llm")
    await script.push(0, transport, StartFrame())
    await script.push(100, transport, CONTEXT)
    await script.push(200, llm, LLMFullResponseStartFrame())
    await script.push(400, llm, calls_started("call-ok", "call-raises", "call-cancelled", "call-unfinished"))
    await script.push(450, llm, llm_usage(llm, 50, 20), LLMFullResponseEndFrame())
    await script.push(500, llm, in_progress("call-ok"), in_progress("call-raises"), in_progress("call-cancelled"))
    await script.push(600, llm, in_progress("call-unfinished"))
    await script.push(900, llm, result("call-ok", {"time": "12:00"}))
    # A handler that raised: Pipecat pushes an error, then settles the call with it.
    raised = "Error executing function call [get_time]: no such city"
    await script.push(940, llm, ErrorFrame(raised, processor=llm, category=ErrorCategory.APPLICATION))
    await script.push(950, llm, result("call-raises", None, error="ValueError: no such city"))
    await script.push(1000, llm, FunctionCallCancelFrame("get_time", "call-cancelled"))
    await script.push(1100, llm, LLMFullResponseStartFrame(), LLMTextFrame("It is noon."))
    await script.push(1300, llm, llm_usage(llm, 80, 5), LLMFullResponseEndFrame())
    await script.push(3000, transport, EndFrame())


@pytest.fixture(scope="module")
def tools(langfuse: InMemoryLangfuse) -> Call:
    return play(langfuse, play_tool_calls)


def test_each_call_is_one_tool_observation_under_its_turn(tools: Call) -> None:
    calls = {t[METADATA]["tool_call_id"]: t for t in tools.named("get_time")}
    assert set(calls) == {"call-ok", "call-raises", "call-cancelled", "call-unfinished"}
    ok = calls["call-ok"]
    assert ok[OBSERVATION_TYPE] == "tool"
    assert ok["parent"] == turn_span_id(tools)
    assert ok["times_ms"] == (500, 900)
    assert (ok[INPUT], ok[OUTPUT]) == (ARGUMENTS, {"time": "12:00"})
    assert ok[METADATA] == {"tool_call_id": "call-ok", "turn": 1, "processor": "llm"}
    assert LEVEL not in ok


def test_a_call_that_failed_or_was_cancelled_says_so(tools: Call) -> None:
    calls = {t[METADATA]["tool_call_id"]: t for t in tools.named("get_time")}
    failed = ("call-cancelled", "call-raises", "call-unfinished")
    assert [(calls[i][LEVEL], calls[i][STATUS_MESSAGE], calls[i]["times_ms"]) for i in failed] == [
        ("WARNING", "cancelled", (500, 1000)),
        ("ERROR", "ValueError: no such city", (500, 950)),
        ("WARNING", "no result before the call ended", (600, 3000)),
    ]
    assert calls["call-cancelled"][METADATA]["cancelled"] is True


def test_the_generation_that_called_the_tools_shows_them_in_its_output(tools: Call) -> None:
    calling, answer = tools.generations("llm-completion")
    assert calling[OUTPUT] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": "get_time", "arguments": '{"city": "London"}'}}
            for i in ("call-ok", "call-raises", "call-cancelled", "call-unfinished")
        ],
    }
    assert calling[USAGE_DETAILS] == {"input": 50, "output": 20, "total": 70}
    assert answer[OUTPUT] == "It is noon."


def test_a_tool_handler_error_is_the_tools_not_the_generations(tools: Call) -> None:
    calling, answer = tools.generations("llm-completion")
    assert LEVEL not in calling  # it ended before the handler raised
    assert LEVEL not in answer
    (turn,) = tools.named("turn 1")
    assert LEVEL not in turn
    summary = tools.tracer.summary()
    assert (summary.errors, summary.unrecovered_errors) == (1, 0)  # the LLM answered afterwards


# -- Errors --------------------------------------------------------------------------------------


async def play_errors(script: Script) -> None:
    transport, stt = Transport(name="transport"), ScriptedSTT(model="nova-3", name="stt")
    llm, tts = ScriptedLLM(model="gpt-4.1-mini", name="llm"), ScriptedTTS(model="sonic-3", name="tts")
    await script.push(0, transport, StartFrame())
    await script.push(50, stt, ErrorFrame("Deepgram connection lost", processor=stt))  # before any STT work
    await script.push(100, stt, stt_usage(stt, 1.0), TranscriptionFrame("Hi", user_id="u", timestamp="t"))
    await script.push(150, transport, CONTEXT)
    # The first completion fails at the provider (HTTP 500): nothing generated, nothing billed.
    await script.push(200, llm, LLMFullResponseStartFrame())
    await script.push(250, llm, ErrorFrame("Error during completion: 500 Internal Server Error", processor=llm))
    await script.push(260, llm, LLMFullResponseEndFrame())
    # The TTS fails once, and never works again before the call ends.
    await script.push(300, tts, TTSStartedFrame(context_id="ctx-1"), tts_usage(tts, 10))
    await script.push(320, tts, tts_words("Hello", context_id="ctx-1"))
    await script.push(
        350, tts, ErrorFrame("Cartesia: context failed", processor=tts), TTSStoppedFrame(context_id="ctx-1")
    )
    # A retry of the LLM works: its earlier error recovered.
    await script.push(1000, llm, LLMFullResponseStartFrame(), LLMTextFrame("Hello!"))
    await script.push(1200, llm, llm_usage(llm, 30, 2), LLMFullResponseEndFrame())
    await script.push(2000, transport, EndFrame())


@pytest.fixture(scope="module")
def errors(langfuse: InMemoryLangfuse) -> Call:
    return play(langfuse, play_errors)


def test_a_failed_request_is_an_error_generation_with_nothing_billed_that_recovered(errors: Call) -> None:
    failed, retried = errors.generations("llm-completion")
    assert (failed[LEVEL], failed[STATUS_MESSAGE]) == ("ERROR", "Error during completion: 500 Internal Server Error")
    assert USAGE_DETAILS not in failed
    assert COST_DETAILS not in failed
    assert "usage_estimated" not in failed[METADATA]
    assert failed[METADATA]["error"] == {
        "message": "Error during completion: 500 Internal Server Error",
        "fatal": False,
        "recovered": True,
    }
    assert LEVEL not in retried
    assert retried[USAGE_DETAILS] == {"input": 30, "output": 2, "total": 32}


def test_an_error_nothing_recovered_from_is_marked_so(errors: Call) -> None:
    (tts,) = errors.generations("text-to-speech")
    assert (tts[LEVEL], tts[STATUS_MESSAGE]) == ("ERROR", "Cartesia: context failed")
    assert tts[METADATA]["error"] == {"message": "Cartesia: context failed", "fatal": False, "recovered": False}
    assert tts[USAGE_DETAILS] == {"input_characters": 10}  # what was submitted before the failure is billed


def test_an_error_before_any_work_of_its_service_marks_the_turn(errors: Call) -> None:
    (turn,) = errors.named("turn 1")
    assert (turn[LEVEL], turn[STATUS_MESSAGE]) == ("ERROR", "Deepgram connection lost")
    assert turn[METADATA]["errors"] == [
        {"processor": "stt", "message": "Deepgram connection lost", "fatal": False, "recovered": True}
    ]
    (stt,) = errors.generations("speech-to-text")
    assert LEVEL not in stt


def test_the_conversation_counts_errors_and_those_not_recovered(errors: Call) -> None:
    (root,) = errors.named("voice-conversation")
    assert (root[METADATA]["errors"], root[METADATA]["unrecovered_errors"]) == (3, 1)
    summary = errors.tracer.summary()
    assert (summary.errors, summary.unrecovered_errors) == (3, 1)
    assert "3 service error(s), 1 not recovered" in summary.render()
    # Every span started was ended: 1 root, 1 turn, 1 STT, 2 LLM and 1 TTS.
    assert sorted(s.name for s in errors.spans) == sorted(
        ["voice-conversation", "turn 1", "speech-to-text", "llm-completion", "llm-completion", "text-to-speech"]
    )
