"""The tracer writes its observations from a thread of its own, and waits for it at the end of the call."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pipecat.frames.frames import EndFrame, LLMFullResponseEndFrame, LLMFullResponseStartFrame, LLMTextFrame, StartFrame

from pipecat_langfuse import PriceTable, TracingSettings, VoiceTracer
from pipecat_langfuse._langfuse import ObservationWriter
from tests.support.in_memory_langfuse import InMemoryLangfuse, in_memory_langfuse
from tests.support.scripted_call import Script, ScriptedLLM, Transport, llm_usage


@pytest.fixture(scope="module")
def langfuse() -> InMemoryLangfuse:
    return in_memory_langfuse("pk-lf-unit-background-writer")


def test_generations_are_written_off_the_loop_and_all_of_them_before_the_call_ends(
    langfuse: InMemoryLangfuse, monkeypatch: pytest.MonkeyPatch
) -> None:
    written_on: list[str] = []
    start = ObservationWriter._start

    def slow_start(self: ObservationWriter, *args: Any) -> Any:
        written_on.append(threading.current_thread().name)
        time.sleep(0.3)  # a slow SDK: the end of the call must still wait for it
        return start(self, *args)

    monkeypatch.setattr(ObservationWriter, "_start", slow_start)
    langfuse.clear()
    settings = TracingSettings(enabled=True, public_key="pk-lf-unit-background-writer", secret_key="sk-lf-unit")
    tracer = VoiceTracer(settings, prices=PriceTable(()), client=langfuse.client)
    transport, llm = Transport(name="transport"), ScriptedLLM()

    async def call() -> None:
        async with tracer.conversation():
            script = Script(tracer.observer)
            await script.push(0, transport, StartFrame())
            await script.push(100, llm, LLMFullResponseStartFrame(), LLMTextFrame("Hi."))
            await script.push(200, llm, llm_usage(llm, 10, 2), LLMFullResponseEndFrame())
            await script.push(3000, transport, EndFrame())

    asyncio.run(call())

    assert set(written_on) == {"pipecat-langfuse-writer"}  # the turn's span and the generation
    assert [s.name for s in langfuse.exporter.get_finished_spans()].count("llm-completion") == 1
