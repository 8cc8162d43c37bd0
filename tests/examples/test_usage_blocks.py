"""The usage blocks of the package docstring and of the README run as they are printed."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from pipecat.frames.frames import EndWorkerFrame, Frame, StartFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

import pipecat_langfuse

README = Path(__file__).resolve().parents[2] / "README.md"
README_SECTION = "## Use it in your own Pipecat bot"
THE_THREE_LINES = (
    "tracer = VoiceTracer(TracingSettings.from_env())",
    "params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),",
    "enable_tracing=tracer.enabled,",
    "tracer.attach(worker)",
    "conversation_id=tracer.conversation_id,",
    "async with tracer.conversation():",
    "print(tracer.summary().render())",
)


class EndsAtOnce(FrameProcessor):
    """Asks the worker to end as soon as the pipeline has started."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(EndWorkerFrame())


def docstring_block() -> str:
    doc = pipecat_langfuse.__doc__
    assert doc is not None
    match = re.search(r"^Usage \(Pipecat 1\.x, Langfuse SDK 5\)::\n\n((?:    .*\n|\n)+)", doc, re.MULTILINE)
    assert match is not None
    return textwrap.dedent(match.group(1))


def readme_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(README_SECTION) :]
    section = section[: section.index("\n## ", len(README_SECTION))]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return str(block)


def run_traced_of(source: str) -> Callable[[Pipeline], Coroutine[Any, Any, None]]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<usage block>", "exec"), namespace)
    run_traced: Callable[[Pipeline], Coroutine[Any, Any, None]] = namespace["run_traced"]
    return run_traced


@pytest.mark.parametrize("block", [docstring_block, readme_block], ids=["docstring", "readme"])
async def test_the_usage_block_runs_a_pipeline_and_prints_its_summary(
    block: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    source = block()
    for line in THE_THREE_LINES:
        assert line in source
    run_traced = run_traced_of(source)

    await asyncio.wait_for(run_traced(Pipeline([EndsAtOnce()])), timeout=30)

    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"Conversation [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", lines[0])
    assert lines[-1].split() == ["Total", "0.000000"]


def test_the_docstring_and_the_readme_show_the_same_code() -> None:
    def code(source: str) -> list[str]:
        return [line.split("  #")[0].rstrip() for line in source.strip().splitlines()]

    assert code(docstring_block()) == code(readme_block())
