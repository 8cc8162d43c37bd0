"""Drive an observer with real Pipecat frames on a scripted clock: no pipeline, no sleeps.

Each push is a real ``FramePushed`` from a real service instance (small subclasses of
Pipecat's ``STTService``, ``LLMService`` and ``TTSService`` with their settings filled), at a
pipeline time the test chooses in milliseconds, so every time the observer derives is exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from typing import Any

from pipecat.clocks.base_clock import BaseClock
from pipecat.frames.frames import Frame, MetricsFrame, TTSTextFrame
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    ProcessingMetricsData,
    STTUsage,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.ai_service import AIService
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.types import is_given

MS = 1_000_000
"""Nanoseconds per millisecond: pipeline timestamps are in nanoseconds."""


class StartClock(BaseClock):
    """A pipeline clock that reads ``now_ns`` (the observer reads it once, at the ``StartFrame``)."""

    def __init__(self, now_ns: int = 0) -> None:
        self.now_ns = now_ns

    def get_time(self) -> int:
        return self.now_ns

    def start(self) -> None:
        pass


class Transport(FrameProcessor):
    """Stands in for a transport (or any non-service processor), with the pipeline clock."""

    def __init__(self, clock: BaseClock | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._scripted_clock = clock or StartClock()

    def get_clock(self) -> BaseClock:
        return self._scripted_clock


def with_unset_fields_none(settings: LLMSettings) -> LLMSettings:
    """``settings`` with every field left out set to None, as Pipecat asks of a service.

    Filled field by field, so the same code works on every supported Pipecat (1.13 added fields).
    """
    for field in dataclasses.fields(settings):
        if not is_given(getattr(settings, field.name)):
            setattr(settings, field.name, None)
    return settings


class ScriptedSTT(STTService):
    """An STT service that only carries its settings."""

    def __init__(self, model: str = "acme-stt", **kwargs: Any) -> None:
        super().__init__(settings=STTSettings(model=model, language=Language.EN), **kwargs)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        yield None


class ScriptedLLM(LLMService):
    """An LLM service that only carries its settings."""

    def __init__(self, model: str | None = "acme-llm", **kwargs: Any) -> None:
        super().__init__(settings=with_unset_fields_none(LLMSettings(model=model)), **kwargs)


class ScriptedTTS(TTSService):
    """A TTS service that only carries its settings."""

    def __init__(self, model: str = "acme-tts", **kwargs: Any) -> None:
        super().__init__(settings=TTSSettings(model=model, voice="acme-voice", language=Language.EN), **kwargs)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        yield None


class Script:
    """Pushes frames to ``observer`` as Pipecat would, at the times (ms) a test chooses."""

    def __init__(self, observer: BaseObserver) -> None:
        self.observer = observer
        self.sink = FrameProcessor(name="sink")
        self.now_ms = 0

    async def push(
        self, at_ms: int, source: FrameProcessor, *frames: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        """Push ``frames`` from ``source`` at pipeline time ``at_ms`` (never earlier than the last push)."""
        assert at_ms >= self.now_ms, f"the script goes back in time: {at_ms} ms after {self.now_ms} ms"
        self.now_ms = at_ms
        for frame in frames:
            pushed = FramePushed(source, self.sink, frame, direction, timestamp=at_ms * MS)
            await self.observer.on_push_frame(pushed)


def _model(service: AIService) -> str:
    model = service.settings.model
    return model if isinstance(model, str) else ""


def ttfb(service: AIService, seconds: float) -> MetricsFrame:
    """The TTFB metric ``service`` reports, with its model as Pipecat sets it."""
    return MetricsFrame(data=[TTFBMetricsData(processor=service.name, model=_model(service), value=seconds)])


def processing(service: AIService, seconds: float) -> MetricsFrame:
    return MetricsFrame(data=[ProcessingMetricsData(processor=service.name, model=_model(service), value=seconds)])


def stt_usage(service: STTService, audio_seconds: float) -> MetricsFrame:
    usage = STTUsage(audio_seconds=audio_seconds)
    return MetricsFrame(data=[STTUsageMetricsData(processor=service.name, model=_model(service), value=usage)])


def llm_usage(service: LLMService[Any], prompt: int, completion: int) -> MetricsFrame:
    usage = LLMTokenUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    return MetricsFrame(data=[LLMUsageMetricsData(processor=service.name, model=_model(service), value=usage)])


def tts_usage(service: TTSService, characters: int) -> MetricsFrame:
    return MetricsFrame(data=[TTSUsageMetricsData(processor=service.name, model=_model(service), value=characters)])


def tts_words(text: str, *, context_id: str) -> TTSTextFrame:
    """A word-level ``TTSTextFrame`` on every supported Pipecat (1.13 renamed ``aggregated_by`` to ``text_type``)."""
    names = {field.name for field in dataclasses.fields(TTSTextFrame)}
    kind = "text_type" if "text_type" in names else "aggregated_by"
    return TTSTextFrame(text, context_id=context_id, **{kind: "word"})
