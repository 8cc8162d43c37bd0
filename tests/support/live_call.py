"""One real-time call through the live bot's services (Deepgram, OpenAI, Cartesia) pointed at local fakes.

The harness of tests/integration/test_live_services.py and test_live_tools_errors.py. The caller may
pass fakes configured to fail (error injection), any number of tool handlers (:func:`returning` makes
the usual one), and a "patient" caller who speaks the next utterance when the bot has not started a
reply after ``patience_s`` (a failed LLM request leaves the bot silent; the scripted caller would
otherwise wait for its reply for 20 s and hang up). The witness records, with wall-clock times, bot
speech and the frames the observer is specified on: ``ErrorFrame`` and the function-call frames.

Services are built by ``app.live.create_live_services`` from ``BotSettings`` pointing at the fakes,
run by ``app.bot.run_conversation`` with the scripted caller transport, traced by ``VoiceTracer``
to the local Langfuse endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.services.llm_service import FunctionCallParams

from app.bot import run_conversation
from app.config import BotSettings
from app.live import create_live_services
from app.offline import CallerScript, create_offline_services
from pipecat_langfuse import PriceTable, TracingSettings, VoiceTracer
from tests.support.conversation import Witness
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan
from tests.support.providers.cartesia import FakeCartesia
from tests.support.providers.deepgram import FakeDeepgram
from tests.support.providers.openai import FakeOpenAI, Reply

ToolHandler = Callable[[FunctionCallParams], Awaitable[None]]


@dataclass(frozen=True)
class SeenError:
    """An ``ErrorFrame`` as first pushed."""

    at_ns: int
    error: str
    fatal: bool
    processor: str | None


@dataclass(frozen=True)
class SeenFunctionFrame:
    """A function-call frame as first pushed: ``kind`` is in_progress, result or cancel."""

    at_ns: int
    kind: str
    function_name: str
    tool_call_id: str
    arguments: Any = None
    result: Any = None
    error: str | None = None


class CallWitness(Witness):
    """The Witness, plus bot speech, errors, function-call frames and LLM responses (wall clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.bot_speaking: list[tuple[str, int]] = []
        self.errors: list[SeenError] = []
        self.function_frames: list[SeenFunctionFrame] = []
        self.llm_responses: list[tuple[str, int]] = []
        """("start" | "end", time) of each LLMFullResponseStart/EndFrame pushed downstream by the LLM."""
        self._seen: set[tuple[str, Any]] = set()

    async def on_push_frame(self, data: FramePushed) -> None:
        await super().on_push_frame(data)
        frame, now = data.frame, time.time_ns()
        downstream = data.direction.name == "DOWNSTREAM"
        if isinstance(frame, (BotStartedSpeakingFrame, BotStoppedSpeakingFrame)) and downstream:
            self.bot_speaking.append((type(frame).__name__, now))
        # Pipecat broadcasts function-call frames (one instance each way) and an ErrorFrame travels
        # upstream through several processors: keep the first push of each.
        key = (type(frame).__name__, getattr(frame, "tool_call_id", None) or frame.id)
        if key in self._seen:
            return
        self._seen.add(key)
        if isinstance(frame, ErrorFrame):
            processor = frame.processor.name if frame.processor is not None else None
            self.errors.append(SeenError(now, frame.error, bool(frame.fatal), processor))
        elif isinstance(frame, FunctionCallInProgressFrame):
            self.function_frames.append(
                SeenFunctionFrame(now, "in_progress", frame.function_name, frame.tool_call_id, frame.arguments)
            )
        elif isinstance(frame, FunctionCallResultFrame):
            self.function_frames.append(
                SeenFunctionFrame(
                    now,
                    "result",
                    frame.function_name,
                    frame.tool_call_id,
                    frame.arguments,
                    frame.result,
                    frame.error,
                )
            )
        elif isinstance(frame, FunctionCallCancelFrame):
            self.function_frames.append(SeenFunctionFrame(now, "cancel", frame.function_name, frame.tool_call_id))
        elif isinstance(frame, (LLMFullResponseStartFrame, LLMFullResponseEndFrame)) and downstream:
            kind = "start" if isinstance(frame, LLMFullResponseStartFrame) else "end"
            self.llm_responses.append((kind, now))

    def speaking_windows(self) -> list[tuple[int, int]]:
        """(start, stop) wall-clock times of each stretch of bot speech."""
        windows, started = [], None
        for name, at in self.bot_speaking:
            if name == "BotStartedSpeakingFrame" and started is None:
                started = at
            elif name == "BotStoppedSpeakingFrame" and started is not None:
                windows.append((started, at))
                started = None
        return windows

    def function_frame(self, kind: str, tool_call_id: str) -> SeenFunctionFrame:
        (frame,) = [f for f in self.function_frames if f.kind == kind and f.tool_call_id == tool_call_id]
        return frame


@dataclass
class LiveCall:
    """One finished call through the live services: what Langfuse received and what the fakes saw."""

    script: CallerScript
    tracer: VoiceTracer
    summary: Any
    witness: CallWitness
    spans: list[ReceivedSpan]
    deepgram: FakeDeepgram
    openai: FakeOpenAI
    cartesia: FakeCartesia
    processors: dict[str, str]
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """The arguments of each tool call the LLM made, in order."""
    seconds: float = 0.0

    def ours(self) -> list[ReceivedSpan]:
        """The conversation's observations: ours, and Pipecat's turn and llm spans it adopted (one tree)."""
        return list(self.spans)

    def root(self) -> ReceivedSpan:
        (root,) = [s for s in self.ours() if s.name == "voice-conversation"]
        return root

    def turns(self) -> list[ReceivedSpan]:
        return sorted((s for s in self.ours() if s.name.startswith("turn ")), key=lambda s: s.start_ns)

    def named(self, name: str) -> list[ReceivedSpan]:
        return sorted((s for s in self.ours() if s.name == name), key=lambda s: s.start_ns)

    generations = named

    def turn_number(self, span: ReceivedSpan) -> int:
        return [t.span_id for t in self.turns()].index(span.parent_span_id or "") + 1


def tracing_settings(server: LocalLangfuse) -> TracingSettings:
    return TracingSettings(
        enabled=True, public_key=server.public_key, secret_key=server.secret_key, base_url=server.url
    )


def returning(result: Any, *, after_s: float = 0.0) -> ToolHandler:
    """A tool handler that answers ``result`` after ``after_s`` seconds."""

    async def handler(params: FunctionCallParams) -> None:
        if after_s:
            await asyncio.sleep(after_s)
        await params.result_callback(result)

    return handler


def make_patient(caller_input: Any, patience_s: float) -> None:
    """Make the scripted caller speak its next utterance when the bot stays silent ``patience_s``.

    Wraps the offline input transport's ``_anchor`` (when the bot event the next utterance waits on
    happened): when that event has not happened ``patience_s`` after the caller stopped speaking,
    the next utterance is anchored at "now" (its ``delay_secs`` still applies). The reply awaited
    after it is the bot's next speech, as for any utterance.
    """
    original = caller_input._anchor

    def anchor(state: Any, call_start: float) -> float | None:
        at: float | None = original(state, call_start)
        if at is None and state.reply is not None:
            now = asyncio.get_running_loop().time()
            if now - state.waiting_since >= patience_s:
                return now
        return at

    caller_input._anchor = anchor


def _recording(handler: ToolHandler, arguments: list[dict[str, Any]]) -> ToolHandler:
    async def recording(params: FunctionCallParams) -> None:
        arguments.append(dict(params.arguments))
        await handler(params)

    return recording


def run_live_call(
    server: LocalLangfuse,
    script: CallerScript,
    *,
    conversation_id: str,
    prices: PriceTable,
    openai: FakeOpenAI | None = None,
    cartesia: FakeCartesia | None = None,
    deepgram: FakeDeepgram | None = None,
    tools: Mapping[str, ToolHandler] | None = None,
    patience_s: float | None = None,
) -> LiveCall:
    """Run ``script`` through the live bot's services pointed at the given fakes (started here), traced to ``server``.

    Args:
        openai: The (not yet started) fake OpenAI, with its replies and error injection (default:
            a plain one answering the script's replies).
        cartesia: The fake Cartesia (default: a plain one).
        deepgram: The fake Deepgram (default: one transcribing the script's utterances).
        tools: Handlers registered on the LLM by function name; the arguments of each call are
            recorded in :attr:`LiveCall.tool_calls` before the handler runs.
        patience_s: See :func:`make_patient`; None keeps the scripted caller as it is.
    """
    spans_before = len(server.spans)
    deepgram = deepgram or FakeDeepgram([u.text for u in script.utterances])
    openai = openai or FakeOpenAI(tuple(Reply(r) for r in script.replies))
    cartesia = cartesia or FakeCartesia()
    tool_calls: list[dict[str, Any]] = []
    with deepgram, openai, cartesia:
        settings = BotSettings.from_env(
            {
                "DEEPGRAM_API_KEY": deepgram.api_key,
                "DEEPGRAM_BASE_URL": deepgram.base_url,
                "OPENAI_API_KEY": openai.api_key,
                "OPENAI_BASE_URL": openai.base_url,
                "CARTESIA_API_KEY": cartesia.api_key,
                "CARTESIA_URL": cartesia.url,
            }
        )
        stt, llm, tts = create_live_services(settings)
        for name, handler in (tools or {}).items():
            llm.register_function(name, _recording(handler, tool_calls))
        caller = create_offline_services(script)  # the scripted caller's transport and turn strategies
        if patience_s is not None:
            make_patient(caller.transport.input(), patience_s)
        tracer = VoiceTracer(tracing_settings(server), conversation_id=conversation_id, prices=prices)
        witness = CallWitness()
        started = time.monotonic()
        summary = asyncio.run(
            run_conversation(
                transport=caller.transport,
                stt=stt,
                llm=llm,
                tts=tts,
                tracer=tracer,
                user_params=caller.user_params,
                observers=[witness],
            )
        )
        seconds = time.monotonic() - started
    return LiveCall(
        script=script,
        tracer=tracer,
        summary=summary,
        witness=witness,
        spans=server.spans[spans_before:],
        deepgram=deepgram,
        openai=openai,
        cartesia=cartesia,
        processors={"stt": stt.name, "llm": llm.name, "tts": tts.name},
        tool_calls=tool_calls,
        seconds=seconds,
    )


__all__ = [
    "CallWitness",
    "LiveCall",
    "SeenError",
    "SeenFunctionFrame",
    "ToolHandler",
    "make_patient",
    "returning",
    "run_live_call",
    "tracing_settings",
]
