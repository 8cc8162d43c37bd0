"""Run a real offline conversation and keep an independent record of what Pipecat reported."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pipecat.frames.frames import (
    InputAudioRawFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    MetricsData,
    ProcessingMetricsData,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.services.tts_service import TTSService

from app.bot import run_offline_call
from app.offline import OfflineServices
from pipecat_langfuse import ConversationSummary, PriceTable, VoiceTracer
from tests.support.langfuse_server import LocalLangfuse, ReceivedRequest, ReceivedSpan

REPORTED_METRICS = (
    LLMUsageMetricsData,
    STTUsageMetricsData,
    TTSUsageMetricsData,
    TTFBMetricsData,
    ProcessingMetricsData,
)


class Witness(BaseObserver):
    """Records every usage and timing report and the frames around it, in the order Pipecat pushed them."""

    def __init__(self) -> None:
        super().__init__(observe_every_push=False)
        self.events: list[tuple[str, object]] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, MetricsFrame):
            for item in frame.data:
                if isinstance(item, REPORTED_METRICS):
                    self.events.append((type(item).__name__, item))
        elif isinstance(frame, UserStartedSpeakingFrame) and frame.broadcast_sibling_id is not None:
            if data.direction.name == "DOWNSTREAM":
                self.events.append(("user_started", frame))
        elif isinstance(frame, UserStoppedSpeakingFrame) and data.direction.name == "DOWNSTREAM":
            self.events.append(("user_stopped_ns", data.timestamp))
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and data.direction.name == "DOWNSTREAM":
            self.events.append(("speech_end_ns", data.timestamp - int(frame.stop_secs * 1e9)))
        elif isinstance(frame, InputAudioRawFrame):
            self.events.append(("input_audio_samples", len(frame.audio) // (2 * frame.num_channels)))
        elif isinstance(frame, TTSAudioRawFrame) and isinstance(data.source, TTSService):
            self.events.append(("tts_audio_s", len(frame.audio) / (frame.sample_rate * frame.num_channels * 2)))
        elif isinstance(frame, (InterruptionFrame, TranscriptionFrame, LLMFullResponseEndFrame, TTSStoppedFrame)):
            self.events.append((type(frame).__name__, frame))

    def endpointing_delays_ms(self) -> list[float]:
        """Per user turn: from the end of speech (by the VAD) to the end of the turn, in ms (0.1 ms)."""
        delays: list[float] = []
        speech_end: int | None = None
        for name, value in self.events:
            if name == "speech_end_ns":
                speech_end = value  # type: ignore[assignment]
            elif name == "user_stopped_ns" and speech_end is not None:
                delays.append(round((value - speech_end) / 1e6, 1))  # type: ignore[operator]
                speech_end = None
        return delays

    def usage(self, metric: type) -> list[object]:
        """The values of every report of ``metric``, in order."""
        return [item.value for name, item in self.events if name == metric.__name__]  # type: ignore[attr-defined]

    def tts_audio_ms(self) -> list[int]:
        """Milliseconds of audio each TTS reply generated (the audio pushed before each TTSStoppedFrame)."""
        replies: list[float] = []
        seconds = 0.0
        for name, item in self.events:
            if name == "tts_audio_s":
                seconds += item  # type: ignore[operator]
            elif name == "TTSStoppedFrame":
                replies.append(seconds)
                seconds = 0.0
        return [round(s * 1000) for s in replies]

    def reported(self, metric: type[MetricsData], processor: str) -> list[float]:
        """The values of every report of ``metric`` by ``processor`` (e.g. TTFB), in order."""
        return [
            item.value
            for name, item in self.events
            if name == metric.__name__ and isinstance(item, metric) and item.processor == processor
        ]


def price_metadata(prices: PriceTable, model: str) -> dict[str, str]:
    """The provenance metadata the tracer gives a generation of ``model`` priced by ``prices``."""
    entry = prices.find(model)
    assert entry is not None, model
    return {"price_source": entry.provenance, "price_entry": entry.name, "price_date": entry.date}


@dataclass
class TracedCall:
    """One finished conversation: what the tracer saw and what Langfuse received."""

    tracer: VoiceTracer
    services: OfflineServices
    summary: ConversationSummary
    witness: Witness
    spans: list[ReceivedSpan]
    requests: list[ReceivedRequest]


def run_traced_call(
    server: LocalLangfuse, tracer: VoiceTracer, services: OfflineServices, *, pipecat_tracing: bool = True
) -> TracedCall:
    """Run ``services`` through the bot's own pipeline in a fresh event loop; collect what arrived."""
    spans_before, requests_before = len(server.spans), len(server.requests)
    witness = Witness()
    summary = asyncio.run(run_offline_call(services, tracer, observers=[witness], pipecat_tracing=pipecat_tracing))
    return TracedCall(
        tracer=tracer,
        services=services,
        summary=summary,
        witness=witness,
        spans=server.spans[spans_before:],
        requests=server.requests[requests_before:],
    )
