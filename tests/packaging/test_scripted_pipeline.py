"""The standalone call's STT -> LLM -> TTS pipeline, in process and untraced.

The fast counterpart of ``test_wheel.py``: .ci/run also runs it against the lowest declared
Pipecat, where each service's metrics must still be booked on that service only.
"""

from __future__ import annotations

from pipecat_langfuse import TracingSettings, VoiceTracer
from tests.packaging.standalone_call import described, run_call


async def test_each_service_is_booked_its_own_usage_once() -> None:
    tracer = VoiceTracer(TracingSettings(enabled=False), conversation_id="conv-scripted")
    await run_call(tracer)
    assert described(tracer) == {
        "trace_id": None,
        "conversation_id": "conv-scripted",
        "turns": [[1, "What time is it?", "It is noon.", False]],
        "models": [
            ["llm", "gpt-4.1-mini", 1, {"input": 12, "output": 4, "total": 16}, 1.12e-05],
            ["stt", "nova-3", 1, {"input_audio_ms": 1500}, 0.00012],
            ["tts", "tts-1", 1, {"input_characters": 11}, 0.000165],
        ],
    }
