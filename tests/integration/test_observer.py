"""The observer inside real Pipecat pipelines (`pipecat.tests.utils.run_test`), with odd service behaviour."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    TextFrame,
    TranscriptionFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage, LLMUsageMetricsData, STTUsage, STTUsageMetricsData
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.tests.utils import run_test

from pipecat_langfuse import TracingSettings, VoiceTracer
from tests.support.logs import captured_logs


class ScriptedLLM(LLMService):
    """Answers any text frame with one malformed metrics frame, then a normal completion."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, TextFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(MetricsFrame(data=None))  # type: ignore[arg-type]  # what a buggy processor might push
        await self.push_frame(LLMFullResponseStartFrame())
        await self.push_frame(LLMTextFrame("Hello there."))
        usage = LLMTokenUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
        await self.push_frame(
            MetricsFrame(data=[LLMUsageMetricsData(processor=self.name, model="gpt-4.1-mini", value=usage)])
        )
        await self.push_frame(LLMFullResponseEndFrame())


class ScriptedSTT(STTService):
    """Reports audio, transcribes, then reports trailing audio with no transcript."""

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, TextFrame) or isinstance(frame, TranscriptionFrame):
            await self.push_frame(frame, direction)
            return
        for seconds in (0.75, 0.5):
            await self.push_frame(self._usage(seconds))
        await self.push_frame(TranscriptionFrame("hello", user_id="u", timestamp="now"))
        # Audio reported after a transcript is never added to it (STT services report it before).
        await self.push_frame(self._usage(0.25))
        await self.push_frame(self._usage(0.3))  # trailing audio flushed at the end of the call

    def _usage(self, seconds: float) -> MetricsFrame:
        return MetricsFrame(
            data=[STTUsageMetricsData(processor=self.name, model="nova-3", value=STTUsage(audio_seconds=seconds))]
        )


def recording_tracer() -> VoiceTracer:
    return VoiceTracer(TracingSettings(enabled=False), conversation_id="conv-observer")


async def test_a_failing_frame_is_logged_once_and_the_call_goes_on() -> None:
    tracer = recording_tracer()
    with captured_logs("WARNING") as warnings:
        await run_test(
            ScriptedLLM(),
            frames_to_send=[TextFrame("go"), TextFrame("again")],
            expected_down_frames=None,
            observers=tracer.observers,
        )
    tracer.observer.finish()

    failures = [w for w in warnings if w.startswith("Voice tracing failed while observing")]
    assert len(failures) == 1, warnings
    assert "The call goes on" in failures[0]
    assert tracer.observer.failures.count == 2
    (llm,) = tracer.summary().models
    assert (llm.kind, llm.model, llm.calls) == ("llm", "gpt-4.1-mini", 2)
    assert llm.usage == {"input": 20, "output": 10, "total": 30}
    assert llm.cost_usd == pytest.approx(20 * 0.4e-6 + 10 * 1.6e-6)


async def test_stt_audio_after_the_last_transcript_is_still_counted() -> None:
    tracer = recording_tracer()
    await run_test(
        ScriptedSTT(), frames_to_send=[TextFrame("speak")], expected_down_frames=None, observers=tracer.observers
    )
    tracer.observer.finish()

    (stt,) = tracer.summary().models
    # One turn, so one STT unit: the transcript's 750 + 500 ms and the trailing 250 + 300 ms.
    assert (stt.model, stt.calls) == ("nova-3", 1)
    assert stt.usage == {"input_audio_ms": 1800}
    assert tracer.summary().turns[0].user_text == "hello"


class UnpricedSTT(ScriptedSTT):
    """Like ScriptedSTT, under a model name no price table knows."""

    def _usage(self, seconds: float) -> MetricsFrame:
        return MetricsFrame(
            data=[STTUsageMetricsData(processor=self.name, model="acme-stt-1", value=STTUsage(audio_seconds=seconds))]
        )


async def test_an_unpriced_stt_model_is_recorded_and_warned_about_once() -> None:
    tracer = recording_tracer()
    with captured_logs("WARNING") as warnings:
        await run_test(
            UnpricedSTT(), frames_to_send=[TextFrame("speak")], expected_down_frames=None, observers=tracer.observers
        )
    tracer.observer.finish()

    (stt,) = tracer.summary().models
    assert (stt.model, stt.calls, stt.cost_usd) == ("acme-stt-1", 1, None)
    assert stt.usage == {"input_audio_ms": 1800}
    assert [w for w in warnings if w.startswith("No price")] == [
        "No price for STT model 'acme-stt-1': its usage is recorded without cost. "
        "Add it to your PRICING_FILE (see README, Pricing)."
    ]
    assert "not priced" in tracer.summary().render()


async def test_a_tracer_traces_one_conversation() -> None:
    tracer = recording_tracer()
    async with tracer.conversation():
        pass
    with pytest.raises(RuntimeError, match="create a new one for the next call"):
        async with tracer.conversation():
            pass
