"""A fast, real Pipecat call with several services of one kind: scripted caller, LLMs and speaker.

The pipeline is ``Caller -> user aggregator -> <the LLMs under test> -> Speaker -> assistant
aggregator``, run by a real ``PipelineWorker`` with the tracer attached. There is no audio and no
STT/TTS: the :class:`Caller` announces each user turn as a turn-detecting STT would
(``UserStartedSpeakingFrame``, the transcript, ``UserStoppedSpeakingFrame``), the user aggregator
(with Pipecat's external turn strategies) turns it into an ``LLMContextFrame``, and the
:class:`Speaker` stands in for TTS plus the output transport: it says the bot started and stopped
speaking around each reply that has text. Each call takes well under a second per turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    FunctionCallFromLLM,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.turns.user_start import ExternalUserTurnStartStrategy
from pipecat.turns.user_stop import ExternalUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_llm
from pipecat.workers.runner import WorkerRunner

from app.offline import count_tokens, simulated_llm_settings
from app.offline.script import message_text
from pipecat_langfuse import VoiceTracer
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan

GAP_S = 0.05
"""Pause of the caller before each utterance, and between the transcript and the end of speech."""


@dataclass(frozen=True)
class Answer:
    """What a :class:`ScriptedLLM` does with one ``LLMContextFrame``.

    Attributes:
        text: The reply, streamed word by word.
        tool_call: A function the reply calls: ``(name, arguments)``.
        fail: Instead of answering, the request fails with this error, which leaves the service
            unusable (an authentication error: ``ErrorCategory.AUTHENTICATION`` is permanent).
    """

    text: str = ""
    tool_call: tuple[str, Mapping[str, Any]] | None = None
    fail: str | None = None


def usage_of(messages: Sequence[Any], answer: Answer) -> dict[str, int]:
    """The usage a :class:`ScriptedLLM` reports for ``answer`` to ``messages``, as Langfuse usage details."""
    prompt = sum(count_tokens(message_text(m)) for m in messages)
    completion = count_tokens(answer.text)
    return {"input": prompt, "output": completion, "total": prompt + completion}


class ScriptedLLM(LLMService):
    """An LLM service that gives its scripted answers in order, reporting metrics like a real one.

    Like the OpenAI service: response start frame, processing and TTFB metrics, the reply streamed,
    tool calls run through ``run_function_calls``, token usage reported, response end frame last;
    Pipecat's ``llm`` span (``@traced_llm``) wraps each request. A failing request reports no usage.
    ``calls`` keeps the messages of every context it was given, in order, and ``notes`` what
    ``note()`` returned when each request started (e.g. the flow's current node).
    """

    def __init__(
        self,
        model: str,
        answers: Sequence[Answer],
        *,
        first_token_s: float = 0.03,
        note: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings=simulated_llm_settings(model), **kwargs)
        self._answers = list(answers)
        self._first_token_s = first_token_s
        self._note = note
        self.calls: list[list[Any]] = []
        self.notes: list[Any] = []

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            try:
                await self.push_frame(LLMFullResponseStartFrame())
                await self.start_processing_metrics()
                await self._process_context(frame.context)
            finally:
                await self.stop_processing_metrics()
                await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)

    @traced_llm  # type: ignore[untyped-decorator]
    async def _process_context(self, context: LLMContext) -> None:
        messages = [dict(m) for m in context.get_messages() if isinstance(m, dict)]
        assert len(self.calls) < len(self._answers), f"{self}: no answer scripted for request {len(self.calls) + 1}"
        answer = self._answers[len(self.calls)]
        self.calls.append(messages)
        self.notes.append(self._note() if self._note is not None else None)
        await self.start_ttfb_metrics()
        await asyncio.sleep(self._first_token_s)
        if answer.fail is not None:
            await self.push_error(answer.fail, category=ErrorCategory.AUTHENTICATION)
            return
        await self.stop_ttfb_metrics()
        for i, word in enumerate(answer.text.split(" ") if answer.text else []):
            await self._push_llm_text(word if i == 0 else f" {word}")
        if answer.tool_call is not None:
            name, arguments = answer.tool_call
            call_id = f"call_{name}_{len(self.calls)}"
            await self.run_function_calls(
                [FunctionCallFromLLM(function_name=name, tool_call_id=call_id, arguments=arguments, context=context)]
            )
        usage = usage_of(messages, answer)
        await self.start_llm_usage_metrics(
            LLMTokenUsage(prompt_tokens=usage["input"], completion_tokens=usage["output"], total_tokens=usage["total"])
        )


@dataclass(frozen=True)
class Say:
    """One utterance of the :class:`Caller`, and how many LLM responses it waits for afterwards."""

    text: str
    responses: int = 1


class Caller(FrameProcessor):
    """The first processor: plays the caller's utterances as a turn-detecting STT would, then ends the call.

    Before the first utterance it waits for ``greeting_responses`` LLM responses (a bot that greets
    first); after each utterance, for the utterance's ``responses`` (each one counted by the
    :class:`Speaker` when it ends, whether it had text or not).
    """

    def __init__(self, utterances: Sequence[Say], *, greeting_responses: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._utterances = list(utterances)
        self._greeting_responses = greeting_responses
        self.responses: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame) and self._task is None:
            self._task = self.create_task(self._play(), name="scripted-caller")

    async def _play(self) -> None:
        await self._await_responses(self._greeting_responses)
        for utterance in self._utterances:
            await asyncio.sleep(GAP_S)
            await self.broadcast_frame(UserStartedSpeakingFrame)
            await self.push_frame(TranscriptionFrame(utterance.text, "caller", time_now_iso8601()))
            await asyncio.sleep(GAP_S)
            await self.broadcast_frame(UserStoppedSpeakingFrame)
            await self._await_responses(utterance.responses)
        await asyncio.sleep(GAP_S)
        await self.push_frame(EndWorkerFrame(reason="caller hung up"), FrameDirection.UPSTREAM)

    async def _await_responses(self, count: int) -> None:
        for _ in range(count):
            await asyncio.wait_for(self.responses.get(), timeout=5.0)


class Speaker(FrameProcessor):
    """Stands in for TTS and the output transport: the bot speaks each reply that has text, at once.

    Every ``LLMFullResponseEndFrame`` that reaches it is counted as one response for the caller.
    """

    def __init__(self, caller: Caller, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._caller = caller
        self._text: list[str] = []
        self._speaking = False
        self.spoken: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMFullResponseStartFrame):
            self._text = []
        elif isinstance(frame, TextFrame) and direction is FrameDirection.DOWNSTREAM:
            if not self._speaking:
                self._speaking = True
                await self.broadcast_frame(BotStartedSpeakingFrame)
            self._text.append(frame.text)
        await self.push_frame(frame, direction)
        if isinstance(frame, LLMFullResponseEndFrame):
            text = "".join(self._text)
            if self._speaking:
                self._speaking = False
                await self.broadcast_frame(BotStoppedSpeakingFrame)
                self.spoken.append(text)
            self._caller.responses.put_nowait(text)


def external_turns() -> LLMUserAggregatorParams:
    """User aggregator parameters that take the turns the :class:`Caller` announces, with no delay to speak of."""
    strategies = UserTurnStrategies(
        start=[ExternalUserTurnStartStrategy()], stop=[ExternalUserTurnStopStrategy(timeout=0.02)]
    )
    return LLMUserAggregatorParams(user_turn_strategies=strategies)


class Unspoken(FrameProcessor):
    """Drops the response frames (start, text, end) that reach it: what its branch's LLM says is never spoken."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(
            frame, (LLMFullResponseStartFrame, LLMFullResponseEndFrame, LLMTextFrame)
        ):
            return
        await self.push_frame(frame, direction)


Setup = Callable[[PipelineWorker, LLMContextAggregatorPair], Awaitable[dict[str, Any]]]
"""Called before the call runs; returns extra keyword arguments for ``tracer.attach``."""


@dataclass
class MultiServiceCall:
    """One finished call: what the tracer, the caller and the speaker saw, and what Langfuse received."""

    tracer: VoiceTracer
    caller: Caller
    speaker: Speaker
    spans: list[ReceivedSpan]


async def _run(
    tracer: VoiceTracer,
    caller: Caller,
    speaker: Speaker,
    services: Sequence[FrameProcessor],
    *,
    context: LLMContext,
    pipecat_tracing: bool,
    setup: Setup | None,
) -> MultiServiceCall:
    pair = LLMContextAggregatorPair(context, user_params=external_turns())
    user_aggregator, assistant_aggregator = pair
    pipeline = Pipeline([caller, user_aggregator, *services, speaker, assistant_aggregator])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True, send_initial_empty_metrics=False),
        enable_tracing=tracer.enabled and pipecat_tracing,
        conversation_id=tracer.conversation_id,
        enable_rtvi=False,
    )
    attach_kwargs = await setup(worker, pair) if setup is not None else {}
    call = MultiServiceCall(tracer=tracer, caller=caller, speaker=speaker, spans=[])
    tracer.attach(worker, **attach_kwargs)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    async with tracer.conversation():
        await asyncio.wait_for(runner.run(), timeout=20)
    return call


def run_multi_service_call(
    server: LocalLangfuse,
    tracer: VoiceTracer,
    caller: Caller,
    services: Sequence[FrameProcessor],
    *,
    context: LLMContext | None = None,
    pipecat_tracing: bool = False,
    setup: Setup | None = None,
) -> MultiServiceCall:
    """Run one call through ``services`` in a fresh event loop; collect the spans that arrived."""
    before = len(server.spans)
    speaker = Speaker(caller)
    call = asyncio.run(
        _run(
            tracer,
            caller,
            speaker,
            services,
            context=context or LLMContext(),
            pipecat_tracing=pipecat_tracing,
            setup=setup,
        )
    )
    call.spans = [s for s in server.spans[before:] if s.trace_id == tracer.trace_id]
    return call
