"""Langfuse refuses connections, hangs, answers 503, 429 or 401, or is slow: the call never notices.

Each mode plays the same scripted two-turn call (real Pipecat frames on a scripted clock, no
real-time pipeline: ``tests.support.scripted_call``) through a ``VoiceTracer`` whose real SDK
client exports over HTTP to a local stand-in in that mode. The conversation's summary (turns,
usage, cost) is the healthy one, the final flush finishes within its bound (the exporter pauses
after the first failure, so a dead host costs one timeout), every span is accounted for (sent, or
kept in the spool), and each failure class is explained in exactly one warning with its fix.
The real-time end-to-end case (Langfuse down for a whole ``uv run bot`` call, then replayed) is
``tests/integration/test_spool.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext

from pipecat_langfuse import ConversationSummary, PriceTable, TracingSettings, VoiceTracer
from pipecat_langfuse._langfuse import spooling_exporter_of
from pipecat_langfuse._spool import FAILURE_PREFIX, reset_warnings
from pipecat_langfuse.summary import SpanCounts
from tests.support.langfuse_server import LocalLangfuse, StartLocalLangfuse, decode_export
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

SECRET_KEY = "sk-lf-fault-modes-secret"
CONVERSATION_ID = "conv-fault-modes"
TIMEOUT_S = 1
FLUSH_TIMEOUT_S = 8.0
SPANS_PER_CALL = 9  # the root, 2 turns, and an STT, LLM and TTS generation per turn

MODES: dict[str, dict[str, Any]] = {
    "refuses connections": {},
    "hangs": {"hang_s": 10},
    "503": {"otlp_status": 503},
    "429": {"otlp_status": 429, "retry_after": "30"},
    "401": {"otlp_status": 401},
    "slow": {"hang_s": 2},
}
EXPLANATION = {
    "refuses connections": "cannot be reached (connection refused or no route). The call goes on;",
    "hangs": f"did not answer within {TIMEOUT_S} s (LANGFUSE_TIMEOUT). The call goes on;",
    "503": "answered HTTP 503 (a server error). The call goes on;",
    "429": "answered HTTP 429 (too many requests): sending pauses for 30 s as it asked (Retry-After).",
    "401": "rejected the keys (HTTP 401). The call goes on;",
}
FIX = {
    "refuses connections": "Check that Langfuse is running and that LANGFUSE_BASE_URL is right",
    "hangs": "raise LANGFUSE_TIMEOUT for a slow link",
    "503": "Self-hosted: check the server's logs",
    "429": "Lower the traffic or ask for a higher rate limit",
    "401": "Fix LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY / LANGFUSE_BASE_URL",
}


@pytest.fixture(autouse=True)
def _warnings_once_per_test() -> Iterator[None]:
    reset_warnings()
    yield
    reset_warnings()


def context(*texts: str) -> LLMContextFrame:
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": text} for i, text in enumerate(texts)]
    return LLMContextFrame(context=LLMContext(messages=messages))  # type: ignore[arg-type]


async def play(script: Script) -> None:
    """Two turns, on a scripted clock."""
    transport, user = Transport(name="transport"), Transport(name="user-aggregator")
    stt, llm, tts = ScriptedSTT("nova-3"), ScriptedLLM("gpt-4.1-mini"), ScriptedTTS("sonic-3")  # priced
    push = script.push
    await push(0, transport, StartFrame())
    for n, (said, reply, start) in enumerate((("Hello?", "Hi there.", 1000), ("Bye.", "Goodbye.", 6000)), 1):
        await push(start, user, UserStartedSpeakingFrame())
        await push(start + 500, stt, stt_usage(stt, 0.5))
        await push(start + 600, transport, VADUserStoppedSpeakingFrame(stop_secs=0.2))
        await push(start + 700, stt, TranscriptionFrame(said, user_id="caller", timestamp="t"), ttfb(stt, 0.1))
        await push(
            start + 750, user, UserStoppedSpeakingFrame(), context(*(["Hello?", "Hi there."][: 2 * n - 2]), said)
        )
        await push(start + 800, llm, LLMFullResponseStartFrame(), ttfb(llm, 0.2))
        await push(start + 900, llm, LLMTextFrame(reply))
        await push(start + 950, tts, TTSStartedFrame(context_id=f"ctx-{n}"), tts_usage(tts, len(reply)))
        await push(start + 1000, llm, llm_usage(llm, 30 * n, 4), LLMFullResponseEndFrame())
        await push(start + 1100, tts, ttfb(tts, 0.1))
        await push(start + 1200, transport, BotStartedSpeakingFrame())
        await push(start + 1200, tts, tts_words(reply, context_id=f"ctx-{n}"))
        await push(start + 2000, tts, TTSStoppedFrame(context_id=f"ctx-{n}"))
        await push(start + 2100, transport, BotStoppedSpeakingFrame())
    await push(9000, transport, EndFrame())


@dataclasses.dataclass
class Run:
    tracer: VoiceTracer
    summary: ConversationSummary
    warnings: list[str]
    spool: Path


def run_call(server: LocalLangfuse, public_key: str, spool: Path, timeout_s: int = TIMEOUT_S) -> Run:
    settings = TracingSettings(
        enabled=True,
        public_key=public_key,
        secret_key=SECRET_KEY,
        base_url=server.url,
        timeout_s=timeout_s,
        flush_timeout_s=FLUSH_TIMEOUT_S,
        spool_dir=spool,
    )
    tracer = VoiceTracer(settings, conversation_id=CONVERSATION_ID, prices=PriceTable.load())

    async def call() -> None:
        async with tracer.conversation():
            await play(Script(tracer.observer))

    with captured_logs("WARNING") as warnings:
        asyncio.run(call())
    return Run(tracer, tracer.summary(), warnings, spool)


def spooled_spans(spool: Path) -> list[Any]:
    return [span for path in sorted(spool.rglob("*.pb")) for span in decode_export(path.read_bytes())]


@pytest.fixture(scope="module")
def healthy(module_local_langfuse: StartLocalLangfuse, tmp_path_factory: pytest.TempPathFactory) -> Run:
    server = module_local_langfuse(public_key="pk-lf-fault-healthy", secret_key=SECRET_KEY)
    reset_warnings()
    return run_call(server, "pk-lf-fault-healthy", tmp_path_factory.mktemp("healthy-spool"))


def test_a_healthy_call_sends_every_span(healthy: Run) -> None:
    assert healthy.summary.spans == SpanCounts(sent=SPANS_PER_CALL)
    assert healthy.tracer.flushed is True
    assert healthy.warnings == []
    assert [t.user_text for t in healthy.summary.turns] == ["Hello?", "Bye."]
    assert [t.bot_text for t in healthy.summary.turns] == ["Hi there.", "Goodbye."]
    assert "Langfuse: 9 spans sent, 0 spooled, 0 dropped" in healthy.summary.render()


@pytest.mark.parametrize("mode", list(MODES))
def test_the_call_is_the_healthy_one_and_every_span_is_accounted_for(
    mode: str, healthy: Run, local_langfuse: StartLocalLangfuse, tmp_path: Path
) -> None:
    public_key = f"pk-lf-fault-{re.sub(r'[^a-z0-9]+', '-', mode)}"  # the SDK keeps one client per key
    server = local_langfuse(public_key=public_key, secret_key=SECRET_KEY, **MODES[mode])
    if mode == "refuses connections":
        server.go_down()

    # Slow: 2 s per request, within the default LANGFUSE_TIMEOUT of 5 s.
    run = run_call(server, public_key, tmp_path, timeout_s=5 if mode == "slow" else TIMEOUT_S)

    # The same conversation: turns, texts, usage and cost.
    assert dataclasses.replace(run.summary, trace_id=None, spans=None) == dataclasses.replace(
        healthy.summary, trace_id=None, spans=None
    )
    # The final flush finished within its bound: no span was still queued.
    assert run.tracer.flushed is True
    if mode == "slow":
        assert run.summary.spans == SpanCounts(sent=SPANS_PER_CALL)
        assert run.warnings == []
        assert list(run.spool.rglob("*.pb")) == []
        return
    # Nothing lost: every span is in the spool, as the OTLP request Langfuse would have received.
    assert run.summary.spans == SpanCounts(spooled=SPANS_PER_CALL)
    assert "Langfuse: 0 spans sent, 9 spooled, 0 dropped; spooled spans are re-sent" in run.summary.render()
    spooled = spooled_spans(tmp_path)
    assert len({s.span_id for s in spooled}) == len(spooled) == SPANS_PER_CALL
    assert {s.trace_id for s in spooled} == {run.tracer.trace_id}
    # After the failure the exporter pauses: the next batches go straight to the spool, without a
    # request, so a dead or hanging host costs one timeout and the exit is not held up.
    client = run.tracer.client
    exporter = spooling_exporter_of(client) if client is not None else None
    assert exporter is not None
    assert exporter.retry_pause_s() > 0
    # Explained once, in plain words, with the fix.
    (warning,) = run.warnings
    assert warning.startswith(FAILURE_PREFIX)
    assert EXPLANATION[mode] in warning
    assert FIX[mode] in warning
    assert f"kept in the spool ({tmp_path / 'http_127.0.0.1_'}" in warning
    assert SECRET_KEY not in warning


def test_a_429_pauses_sending_for_its_retry_after(local_langfuse: StartLocalLangfuse, tmp_path: Path) -> None:
    server = local_langfuse(
        public_key="pk-lf-fault-retry-after", secret_key=SECRET_KEY, otlp_status=429, retry_after="30"
    )
    run = run_call(server, "pk-lf-fault-retry-after", tmp_path)
    client = run.tracer.client
    assert client is not None
    exporter = spooling_exporter_of(client)
    assert exporter is not None
    assert 20 < exporter.retry_pause_s() <= 30  # Langfuse asked for 30 s; nothing is sent before that


def test_a_batch_rejected_for_good_is_dropped_and_counted(local_langfuse: StartLocalLangfuse, tmp_path: Path) -> None:
    server = local_langfuse(public_key="pk-lf-fault-rejected", secret_key=SECRET_KEY, otlp_status=400)
    run = run_call(server, "pk-lf-fault-rejected", tmp_path)
    assert run.summary.spans == SpanCounts(dropped=SPANS_PER_CALL)
    assert list(tmp_path.rglob("*.pb")) == []
    (warning,) = run.warnings
    assert "rejected a batch of 9 spans (HTTP 400); it was dropped" in warning


def test_spans_still_queued_when_the_flush_times_out_are_pending(
    local_langfuse: StartLocalLangfuse, tmp_path: Path
) -> None:
    server = local_langfuse(public_key="pk-lf-fault-pending", secret_key=SECRET_KEY, hang_s=10)
    settings = TracingSettings(
        enabled=True,
        public_key="pk-lf-fault-pending",
        secret_key=SECRET_KEY,
        base_url=server.url,
        timeout_s=3,
        flush_timeout_s=0.5,  # shorter than one request: the flush gives up while the export hangs
        spool_dir=tmp_path,
    )
    tracer = VoiceTracer(settings, conversation_id=CONVERSATION_ID, prices=PriceTable.load())

    async def call() -> None:
        async with tracer.conversation():
            await play(Script(tracer.observer))

    asyncio.run(call())

    assert tracer.flushed is False
    assert tracer.summary().spans == SpanCounts(pending=SPANS_PER_CALL)
    assert "9 pending (still queued when the final flush timed out)" in tracer.summary().render()
    # The export in flight times out after LANGFUSE_TIMEOUT and keeps the batch: pending becomes spooled.
    deadline = time.monotonic() + 30
    while tracer.summary().spans != SpanCounts(spooled=SPANS_PER_CALL) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tracer.summary().spans == SpanCounts(spooled=SPANS_PER_CALL)
