"""One offline call traced by an installed pipecat-langfuse wheel, with nothing of the repository.

Run by ``test_wheel.py`` with the python of a fresh virtual environment holding only the wheel
and its declared dependencies, from a temporary directory, in isolated mode (``python -I``).
It uses Pipecat and the public API of ``pipecat_langfuse`` only, reads its Langfuse settings from
the environment (``TracingSettings.from_env()``), and prints one JSON line describing the call.

The pipeline is STT -> LLM -> TTS, three small subclasses of Pipecat's own service classes that
answer at once (no real-time waits) and report the usage a real provider would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import importlib.metadata
import json
import sys
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

import pipecat
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    STTUsage,
    STTUsageMetricsData,
    TTSUsageMetricsData,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings, ServiceSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.types import is_given
from pipecat.workers.runner import WorkerRunner

import pipecat_langfuse
from pipecat_langfuse import TracingSettings, VoiceTracer

STT_MODEL = "nova-3"
LLM_MODEL = "gpt-4.1-mini"
TTS_MODEL = "tts-1"
SAMPLE_RATE = 16_000
CALLER_AUDIO = bytes(2 * SAMPLE_RATE * 3 // 2)  # 1.5 s of 16-bit mono silence
TRANSCRIPT = "What time is it?"
REPLY = ("It is ", "noon.")
LLM_USAGE = LLMTokenUsage(prompt_tokens=12, completion_tokens=4, total_tokens=16)

DISTRIBUTIONS = ("pipecat-langfuse", "pipecat-ai", "langfuse", "loguru")

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def complete(settings: SettingsT) -> SettingsT:
    """``settings`` with every field left out set to None, as Pipecat asks of a service's ``__init__``."""
    for field in dataclasses.fields(settings):
        if not is_given(getattr(settings, field.name)):
            setattr(settings, field.name, None)
    return settings


def repository_modules_importable() -> dict[str, str]:
    """The repository's top-level packages this interpreter can import, and from where (there must be none)."""
    found = {}
    for name in ("app", "tests", "bench"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found[name] = str(getattr(module, "__file__", None) or list(getattr(module, "__path__", [])))
    return found


class ScriptedSTT(STTService):
    """Transcribes each audio frame at once, reporting its duration first like a real STT service."""

    def __init__(self) -> None:
        super().__init__(settings=complete(STTSettings(model=STT_MODEL)), ttfs_p99_latency=0.3)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        yield None  # unused: process_frame answers the audio itself

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, InputAudioRawFrame):
            await super().process_frame(frame, direction)
            return
        seconds = len(frame.audio) / (2 * frame.sample_rate * frame.num_channels)
        usage = STTUsageMetricsData(processor=self.name, model=STT_MODEL, value=STTUsage(audio_seconds=seconds))
        await self.push_frame(MetricsFrame(data=[usage]))
        await self.push_frame(TranscriptionFrame(TRANSCRIPT, user_id="caller", timestamp="2026-01-01T00:00:00Z"))


class ScriptedLLM(LLMService):
    """Answers each transcript with a streamed reply and its token usage."""

    def __init__(self) -> None:
        super().__init__(settings=complete(LLMSettings(model=LLM_MODEL)))

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, TranscriptionFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStartFrame())
        for token in REPLY:
            await self.push_frame(LLMTextFrame(token))
        usage = LLMUsageMetricsData(processor=self.name, model=LLM_MODEL, value=LLM_USAGE)
        await self.push_frame(MetricsFrame(data=[usage]))
        await self.push_frame(LLMFullResponseEndFrame())


class ScriptedTTS(TTSService):
    """Speaks each complete reply at once, reporting the characters synthesized."""

    def __init__(self) -> None:
        super().__init__(settings=complete(TTSSettings(model=TTS_MODEL, voice="alloy")), sample_rate=SAMPLE_RATE)
        self._reply: list[str] = []

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        yield None  # unused: process_frame speaks the reply itself

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMFullResponseStartFrame):
            self._reply = []
        elif isinstance(frame, LLMTextFrame):
            self._reply.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame):
            text = "".join(self._reply)
            await self.push_frame(TTSStartedFrame())
            await self.push_frame(tts_text_frame(text))
            usage = TTSUsageMetricsData(processor=self.name, model=TTS_MODEL, value=len(text))
            await self.push_frame(MetricsFrame(data=[usage]))
            await self.push_frame(TTSStoppedFrame())
        else:
            await super().process_frame(frame, direction)


def tts_text_frame(text: str) -> TTSTextFrame:
    """A sentence-level ``TTSTextFrame`` (Pipecat 1.13 renamed its ``aggregated_by`` to ``text_type``)."""
    fields = {f.name for f in dataclasses.fields(TTSTextFrame)}
    kind: dict[str, Any] = {"text_type" if "text_type" in fields else "aggregated_by": "sentence"}
    return TTSTextFrame(text, **kind)


async def run_call(tracer: VoiceTracer) -> None:
    """Run one call (1.5 s of caller audio, one reply) through the pipeline, traced by ``tracer``."""
    worker = PipelineWorker(
        Pipeline([ScriptedSTT(), ScriptedLLM(), ScriptedTTS()]),
        observers=tracer.observers,
        enable_tracing=tracer.enabled,
        conversation_id=tracer.conversation_id,
        idle_timeout_secs=None,
    )

    async def speak(worker: PipelineWorker, frame: Frame) -> None:
        await worker.queue_frames([InputAudioRawFrame(CALLER_AUDIO, SAMPLE_RATE, 1), EndFrame()])

    worker.add_event_handler("on_pipeline_started", speak)

    async with tracer.conversation():
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()


def described(tracer: VoiceTracer) -> dict[str, object]:
    """What ``tracer`` recorded, as JSON values."""
    summary = tracer.summary()
    return {
        "trace_id": tracer.trace_id,
        "conversation_id": tracer.conversation_id,
        "turns": [[t.number, t.user_text, t.bot_text, t.interrupted] for t in summary.turns],
        "models": sorted([m.kind, m.model, m.calls, dict(m.usage), m.cost_usd] for m in summary.models),
    }


async def traced_call() -> dict[str, object]:
    """One call traced with the settings of the environment, as a user's bot would do it."""
    tracer = VoiceTracer(TracingSettings.from_env(), tags=("packaging",))
    await run_call(tracer)
    return described(tracer)


def main() -> None:
    """Print one JSON line: where the packages came from, and the call."""
    importable = repository_modules_importable()
    if importable:
        raise SystemExit(f"These must not be importable here: {importable}")
    report = {
        "importable_repository_modules": importable,
        "sys_path": sys.path,
        "pipecat_langfuse_file": pipecat_langfuse.__file__,
        "versions": {
            d: importlib.metadata.version(d) for d in ("pipecat-langfuse", "pipecat-ai", "langfuse", "loguru")
        },
        "pipecat_version": pipecat.__version__,
        "call": asyncio.run(traced_call()),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
