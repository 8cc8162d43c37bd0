"""``VoiceTracer``: one Pipecat conversation, traced into Langfuse as one trace with turns.

Usage::

    tracer = VoiceTracer(TracingSettings.from_env())
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        observers=tracer.observers,
        enable_tracing=tracer.enabled,
        conversation_id=tracer.conversation_id,
    )
    runner = WorkerRunner()
    await runner.add_workers(worker)
    async with tracer.conversation():
        await runner.run()
    print(tracer.summary().render())
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import ExitStack, asynccontextmanager
from typing import Any

from langfuse import Langfuse, propagate_attributes
from loguru import logger
from opentelemetry import context as otel_context
from pipecat.observers.base_observer import BaseObserver

from pipecat_langfuse._langfuse import ObservationWriter, build_client, demote_pipecat_spans
from pipecat_langfuse._observer import VoiceObserver
from pipecat_langfuse.pricing import PriceTable
from pipecat_langfuse.settings import LANGFUSE_FLUSH_TIMEOUT, TracingSettings
from pipecat_langfuse.summary import ConversationSummary


class VoiceTracer:
    """Traces one voice conversation; with tracing disabled it only records the summary.

    Args:
        settings: Resolved configuration (``TracingSettings.from_env()``).
        conversation_id: Session id of this conversation; defaults to the settings' one, else a new UUID.
        tags: Extra trace tags for this conversation (e.g. ``("simulated",)``).
        metadata: Extra trace metadata for this conversation.
        prices: Price table; defaults to the built-in one plus ``settings.pricing_file``.
        client: Langfuse client to use instead of building one from ``settings``.
    """

    def __init__(
        self,
        settings: TracingSettings,
        *,
        conversation_id: str | None = None,
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        prices: PriceTable | None = None,
        client: Langfuse | None = None,
    ) -> None:
        """Build the observer, and the Langfuse client only when tracing is enabled."""
        self.settings = settings
        self.conversation_id = conversation_id or settings.conversation_id or str(uuid.uuid4())
        self.prices = prices if prices is not None else PriceTable.load(settings.pricing_file)
        self._tags = list(dict.fromkeys([*settings.tags, *tags]))
        self._metadata = dict(metadata or {})
        self._writer: ObservationWriter | None = None
        self._entered = False
        self.trace_id: str | None = None
        if settings.enabled:
            client = client if client is not None else build_client(settings)
            demote_pipecat_spans(client)
            self._writer = ObservationWriter(client)
            self.trace_id = Langfuse.create_trace_id(seed=self.conversation_id)
        self.observer = VoiceObserver(prices=self.prices, writer=self._writer)

    @property
    def enabled(self) -> bool:
        """Whether traces go to Langfuse (pass it as ``PipelineWorker(enable_tracing=...)``)."""
        return self._writer is not None

    @property
    def client(self) -> Langfuse | None:
        """The Langfuse client observations are sent with (None when tracing is disabled).

        Use it for what the tracer does not do itself, e.g. scores or prompts, so they share
        the conversation's client and project.
        """
        return self._writer.client if self._writer is not None else None

    @property
    def observers(self) -> list[BaseObserver]:
        """Observers to give ``PipelineWorker(observers=...)``."""
        return [self.observer]

    @asynccontextmanager
    async def conversation(self) -> AsyncIterator[VoiceTracer]:
        """Run the pipeline inside this: one trace, with Pipecat's own spans nested in it.

        On exit the conversation is finished and flushed off the event loop, bounded by
        ``LANGFUSE_FLUSH_TIMEOUT``. Errors of the body propagate unchanged.
        """
        if self._entered:
            raise RuntimeError("A VoiceTracer traces one conversation; create a new one for the next call.")
        self._entered = True
        stack = ExitStack()
        root: Any = None
        if self._writer is not None:
            try:
                stack.enter_context(
                    propagate_attributes(
                        session_id=self.conversation_id,
                        user_id=self.settings.user_id,
                        tags=self._tags or None,
                        trace_name=self.settings.trace_name,
                        metadata=self._metadata or None,
                    )
                )
                root = stack.enter_context(
                    self._writer.client.start_as_current_observation(
                        as_type="span",
                        name=self.settings.trace_name,
                        trace_context={"trace_id": self.trace_id or ""},
                        metadata={"conversation_id": self.conversation_id, **self._metadata},
                    )
                )
                self._writer.bind(root, otel_context.get_current())
            except Exception as exc:  # noqa: BLE001 - tracing must not stop the call
                logger.warning(f"Could not start the Langfuse trace ({exc!r}); the call goes on untraced.")
        try:
            yield self
        finally:
            self.observer.finish()
            if root is not None:
                self._close_root(root)
            stack.close()
            await self.flush()
            if self.observer.failures.count > 1:
                logger.warning(f"{self.observer.failures.count} tracing errors in conversation {self.conversation_id}.")

    def summary(self) -> ConversationSummary:
        """Turns, usage and cost of the conversation so far."""
        return self.observer.summary(self.conversation_id, self.trace_id)

    async def flush(self) -> bool:
        """Send buffered observations from a worker thread, waiting at most the flush timeout."""
        if self._writer is None:
            return True
        timeout = self.settings.flush_timeout_s
        try:
            await asyncio.wait_for(asyncio.to_thread(self._writer.flush), timeout=timeout)
        except TimeoutError:
            logger.warning(
                f"Langfuse at {self.settings.base_url} did not take the traces within {timeout:g} s "
                f"({LANGFUSE_FLUSH_TIMEOUT}); they may arrive late or be lost. "
                "Check the host with `uv run test_langfuse`."
            )
            return False
        except Exception as exc:  # noqa: BLE001 - a failed flush must not fail the call
            logger.warning(f"Flushing traces to Langfuse failed: {exc!r}")
            return False
        return True

    def _close_root(self, root: Any) -> None:
        summary = self.summary()
        try:
            root.update(
                input=next((t.user_text for t in summary.turns if t.user_text), None),
                output=next((t.bot_text for t in reversed(summary.turns) if t.bot_text), None),
                metadata={
                    "turns": len(summary.turns),
                    "interruptions": sum(t.interrupted for t in summary.turns),
                    "total_cost_usd": round(summary.total_cost_usd, 6),
                },
            )
        except Exception as exc:  # noqa: BLE001 - tracing must not fail the call
            logger.warning(f"Could not finish the Langfuse trace: {exc!r}")
