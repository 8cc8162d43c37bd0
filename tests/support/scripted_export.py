"""Play a scripted call (``tests.support.scripted_call``) through a real tracer and read what it exported."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from pipecat_langfuse import PriceTable, TracingSettings, VoiceTracer
from tests.support.in_memory_langfuse import InMemoryLangfuse
from tests.support.langfuse_rules import observation_attributes
from tests.support.scripted_call import MS, Script


@dataclass
class Call:
    """What a scripted call exported, and its tracer (for the summary)."""

    tracer: VoiceTracer
    spans: list[ReadableSpan]

    def named(self, name: str) -> list[dict[str, Any]]:
        """The attributes of the spans named ``name``, in start order, with ``times_ms`` since pipeline time 0.

        Pipeline time 0 is the ``StartFrame``, when turn 1 starts.
        """
        found = sorted((s for s in self.spans if s.name == name), key=lambda s: s.start_time or 0)
        start = min(s.start_time or 0 for s in self.spans if s.name == "turn 1")
        return [
            {
                **observation_attributes(s.attributes or {}),
                "times_ms": (((s.start_time or 0) - start) // MS, ((s.end_time or 0) - start) // MS),
                "parent": s.parent.span_id if s.parent is not None else None,
                "span_id": s.context.span_id if s.context is not None else None,
            }
            for s in found
        ]

    def generations(self, name: str) -> list[dict[str, Any]]:
        """The attributes of the ``name`` generations (see :meth:`named`)."""
        return self.named(name)


def run_call(
    langfuse: InMemoryLangfuse, play: Callable[[Script], Awaitable[None]], prices: PriceTable, public_key: str
) -> Call:
    """Run ``play`` inside ``tracer.conversation()`` with the client of ``langfuse``; collect the spans."""
    langfuse.clear()
    settings = TracingSettings(enabled=True, public_key=public_key, secret_key="sk-lf-in-memory")
    tracer = VoiceTracer(settings, conversation_id="scripted", prices=prices, client=langfuse.client)

    async def main() -> None:
        async with tracer.conversation():
            await play(Script(tracer.observer))

    asyncio.run(main())
    return Call(tracer=tracer, spans=langfuse.spans())
