"""``VoiceTracer``: one Pipecat conversation, traced into Langfuse as one trace with turns.

Usage::

    tracer = VoiceTracer(TracingSettings.from_env())
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        enable_tracing=tracer.enabled,
        conversation_id=tracer.conversation_id,
    )
    tracer.attach(worker)
    runner = WorkerRunner()
    await runner.add_workers(worker)
    async with tracer.conversation():
        await runner.run()
    print(tracer.summary().render())
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import ExitStack, asynccontextmanager, suppress
from typing import Any

from langfuse import Langfuse, propagate_attributes
from langfuse.model import PromptClient
from loguru import logger
from opentelemetry import context as otel_context
from pipecat.observers.base_observer import BaseObserver

from pipecat_langfuse._audio import CallRecorder, wav_media
from pipecat_langfuse._langfuse import (
    ContentPolicy,
    ObservationWriter,
    build_client,
    conversation_open,
    otel_span_context,
    pipecat_spans_of,
    set_trace_metadata,
    span_counts,
    watch_pipecat_spans,
)
from pipecat_langfuse._observer import VoiceObserver
from pipecat_langfuse._pipecat import adopt_conversation, quiet_turn_tracing, share_observer_task
from pipecat_langfuse._runner import correlate
from pipecat_langfuse._scores import ScoreSender, shared_sender
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
        runner_args: The ``RunnerArguments`` Pipecat's runner gave the bot: the session id becomes
            the telephony call id (Twilio, Telnyx…: ``runner_args.call_data``), the SmallWebRTC
            peer connection id, the Vonage session id or the runner's session id, and the ids
            found go into the trace metadata, so a trace can be found from the call's record.
        prompt: A Langfuse prompt (``langfuse.get_prompt(...)``) the LLM's instructions come
            from: every LLM generation links to it, so Langfuse shows its metrics by version.
        mask: A function applied to every string of every input, output and metadata value
            before it leaves the process, e.g. to redact phone numbers; Pipecat's own service
            spans, which it cannot reach, are then not exported. ``LANGFUSE_CAPTURE_CONTENT=false``
            sends no content at all.
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
        runner_args: Any = None,
        prompt: PromptClient | None = None,
        mask: Callable[[str], str] | None = None,
    ) -> None:
        """Build the observer, and the Langfuse client only when tracing is enabled."""
        self.settings = settings
        runner = correlate(runner_args) if runner_args is not None else None
        self.conversation_id = (
            conversation_id or (runner and runner.session_id) or settings.conversation_id or str(uuid.uuid4())
        )
        self.prices = prices if prices is not None else PriceTable.load(settings.pricing_file)
        self._tags = list(dict.fromkeys([*settings.tags, *tags]))
        self._metadata = {**(runner.metadata if runner is not None else {}), **(metadata or {})}
        self._writer: ObservationWriter | None = None
        self._entered = False
        self._flushed: bool | None = None
        self._worker: Any = None
        self._scores: ScoreSender | None = None
        self._observers_given = False
        self._pipecat_spans_reach_langfuse = False
        self._root_context: Any = None
        self._stack = ExitStack()
        self.merged_with_pipecat = False
        """Whether this conversation is one tree with Pipecat's tracing (see :meth:`attach`)."""
        self.trace_id: str | None = None
        if settings.enabled:
            built_here = client is None
            client = client if client is not None else build_client(settings)
            # Pipecat's turn spans reach Langfuse only through a client of ours, whose export filter takes them.
            self._pipecat_spans_reach_langfuse = watch_pipecat_spans(client) and built_here
            self._writer = ObservationWriter(
                client, content=ContentPolicy(capture=settings.capture_content, mask=mask), background=True
            )
            if built_here and settings.public_key and settings.secret_key:  # scores go with the client we built
                self._scores = shared_sender(settings)
                self._writer.send_scores(self._scores, settings.environment)
            self.trace_id = Langfuse.create_trace_id(seed=self.conversation_id)
        recorder = None
        if self._writer is not None and settings.record_audio and settings.capture_content:
            recorder = CallRecorder(int(settings.audio_max_mb * 1_000_000))
        self.observer = VoiceObserver(
            prices=self.prices,
            writer=self._writer,
            prompt=prompt,
            client_costing=settings.costing == "client",
            recorder=recorder,
        )

    @property
    def trace_metadata(self) -> dict[str, str]:
        """The metadata every span of the conversation carries (runner ids, then the ``metadata`` given)."""
        return dict(self._metadata)

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
        """Observers to give ``PipelineWorker(observers=...)``, for a worker not passed to :meth:`attach`."""
        self._observers_given = True
        return [self.observer]

    def attach(self, worker: Any, *, flow_manager: Any = None) -> None:
        """Trace ``worker`` (a ``PipelineWorker``): call it once, before the runner starts it.

        It adds the observer (unless :attr:`observers` was given to the worker), and when the
        worker has Pipecat's tracing on (``enable_tracing=tracer.enabled``) and its spans reach
        Langfuse, the conversation becomes one tree: Pipecat's ``turn`` spans are the turns,
        with this tracer's generations and tool calls under them; Pipecat's ``llm`` span of
        each call is its LLM generation, and its ``stt`` / ``tts`` spans are folded into the
        generations (the services' settings are their model parameters). Without Pipecat's
        tracing the turns are the tracer's own, with the same boundaries and numbers.

        With a Pipecat Flows ``flow_manager``, each turn's metadata names the node it started in
        (``flow_node``) and, if the flow moved on during the turn, the node it moved to
        (``flow_next_node``); each LLM generation names the node it ran in.
        """
        if self._worker is not None:
            raise RuntimeError("This tracer already follows a worker; create a new VoiceTracer for each call.")
        if flow_manager is not None:
            if not hasattr(flow_manager, "current_node"):
                raise TypeError(
                    f"flow_manager must be a Pipecat Flows FlowManager (with current_node), got {type(flow_manager)!r}"
                )
            self.observer.follow_flow(lambda: flow_manager.current_node)
        self._worker = worker
        if not self._observers_given:
            worker.add_observer(self.observer)
        if self._root_context is not None:
            self._merge_with_pipecat()

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
        self._stack = stack
        root: Any = None
        if self._writer is not None:
            try:
                content = self._writer.content
                stack.enter_context(
                    conversation_open(self._writer.client, self.trace_id or "0", content_restricted=content.restricted)
                )
                stack.enter_context(
                    propagate_attributes(
                        session_id=self.conversation_id,
                        user_id=self.settings.user_id,
                        tags=self._tags or None,
                        trace_name=self.settings.trace_name,
                        metadata={k: str(v) for k, v in content.metadata(self._metadata).items()} or None,
                    )
                )
                root = stack.enter_context(
                    self._writer.client.start_as_current_observation(
                        as_type="span",
                        name=self.settings.trace_name,
                        trace_context={"trace_id": self.trace_id or ""},
                        metadata=content.metadata({"conversation_id": self.conversation_id, **self._metadata}),
                    )
                )
                self._writer.bind(root, otel_context.get_current())
                self._root_context = otel_span_context(root)
                if self._worker is not None:
                    self._merge_with_pipecat()
            except Exception as exc:  # noqa: BLE001 - tracing must not stop the call
                logger.warning(f"Could not start the Langfuse trace ({exc!r}); the call goes on untraced.")
        if self._worker is not None and not self._observers_given:
            try:  # cost savings, not worth a call
                if self.merged_with_pipecat:
                    await quiet_turn_tracing(self._worker)
                await share_observer_task(self._worker, self.observer)
            except Exception as exc:  # noqa: BLE001
                logger.debug(f"Pipecat's turn observers keep tasks of their own: {exc!r}")
        try:
            yield self
        finally:
            self.observer.finish()
            await self._drain_writer()
            if root is not None:
                self._close_root(root, await self._call_audio())
            stack.close()
            self._flushed = await self.flush()
            if self.observer.failures.count > 1:
                logger.warning(f"{self.observer.failures.count} tracing errors in conversation {self.conversation_id}.")

    def _merge_with_pipecat(self) -> None:
        """Make Pipecat's spans of the attached worker and ours one tree, if they meet in Langfuse."""
        if self._writer is None or self._root_context is None or not self._pipecat_spans_reach_langfuse:
            return
        if not adopt_conversation(self._worker, self._root_context, self.conversation_id):
            return
        self._writer.follow_pipecat(self._stack.enter_context(pipecat_spans_of(self.trace_id or "0")))
        self.merged_with_pipecat = True

    def summary(self) -> ConversationSummary:
        """Turns, usage and cost of the conversation so far, and what happened to its spans.

        ``spans`` (sent, spooled, dropped, pending) is exact once :meth:`conversation` has exited,
        since its final flush hands every finished span to the exporter (unless it timed out:
        then the rest is ``pending``).
        """
        summary = self.observer.summary(self.conversation_id, self.trace_id)
        if self._writer is None or self.trace_id is None:
            return summary
        return dataclasses.replace(summary, spans=span_counts(self._writer.client, self.trace_id))

    @property
    def flushed(self) -> bool | None:
        """Whether the final flush of :meth:`conversation` finished in time (None before it ran).

        False means some observations may still be on their way, or lost: a process that exits
        now should not wait for the SDK's own exit handler, which flushes again without a bound.
        """
        return self._flushed

    async def flush(self) -> bool:
        """Send buffered observations from a worker thread, waiting at most the flush timeout.

        The thread is a daemon thread of its own, not the event loop's executor: when Langfuse
        hangs, neither ``asyncio.run()`` nor the interpreter waits for it at exit.
        """
        if self._writer is None:
            return True
        timeout = self.settings.flush_timeout_s
        writer, scores = self._writer, self._scores

        def flush_all() -> None:
            started = time.monotonic()
            writer.flush()
            if scores is not None and not scores.flush(max(timeout - (time.monotonic() - started), 0.0)):
                raise TimeoutError

        try:
            await asyncio.wait_for(_in_daemon_thread(flush_all), timeout=timeout)
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

    async def _drain_writer(self) -> None:
        """Wait, off the event loop, for the writer's thread to write the conversation's last observations."""
        writer = self._writer
        if writer is None:
            return
        timeout = self.settings.flush_timeout_s
        try:
            await asyncio.wait_for(_in_daemon_thread(lambda: writer.drain(timeout)), timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - a slow writer must not fail the call
            logger.warning(f"Writing the last observations took longer than {timeout:g} s: {exc!r}")

    async def _call_audio(self) -> dict[str, Any]:
        """The whole call's stereo audio as media for the conversation's metadata, built off the event loop."""
        recorder = self.observer.recorder
        if recorder is None:
            return {}
        try:
            wav = await asyncio.to_thread(recorder.call_audio)
            media = await asyncio.to_thread(wav_media, wav) if wav is not None else None
        except Exception as exc:  # noqa: BLE001 - the call's audio must not cost its trace
            logger.warning(f"Could not build the call's audio: {exc!r}")
            return {}
        audio: dict[str, Any] = {"call_audio": media} if media is not None else {}
        if recorder.truncated:
            audio["audio_truncated"] = True
        return audio

    def _close_root(self, root: Any, audio: Mapping[str, Any]) -> None:
        summary = self.summary()
        try:
            scores = conversation_scores(summary)
            if self._writer is None:
                return
            self._writer.update_root(
                root,
                input=next((t.user_text for t in summary.turns if t.user_text), None),
                output=next((t.bot_text for t in reversed(summary.turns) if t.bot_text), None),
                metadata={
                    **scores,
                    "total_cost_usd": round(summary.total_cost_usd, 6),
                    "errors": summary.errors,
                    "unrecovered_errors": summary.unrecovered_errors,
                    **audio,
                },
            )
            self._writer.score(scores)
            prompt_hash = self.observer.system_prompt_sha256
            if prompt_hash is not None:  # trace metadata: filterable on the trace itself
                set_trace_metadata(root, "system_prompt_sha256", prompt_hash)
        except Exception as exc:  # noqa: BLE001 - tracing must not fail the call
            logger.warning(f"Could not finish the Langfuse trace: {exc!r}")


def conversation_scores(summary: ConversationSummary) -> dict[str, float]:
    """The conversation's scores and trace metadata (names as in the README, "Latency you can chart")."""
    scores: dict[str, float] = {"turns": len(summary.turns), "interruptions": summary.interruptions}
    mean, p95 = summary.voice_to_voice_mean_s, summary.voice_to_voice_p95_s
    if mean is not None and p95 is not None:
        scores["voice_to_voice_mean_ms"] = round(mean * 1000, 1)
        scores["voice_to_voice_p95_ms"] = round(p95 * 1000, 1)
    kinds = ("stt", "llm", "s2s", "tts") if any(m.kind == "s2s" for m in summary.models) else ("stt", "llm", "tts")
    for kind in kinds:
        scores[f"cost_{kind}_usd"] = round(summary.cost_usd_of(kind), 6)
    return scores


async def _in_daemon_thread(function: Any) -> None:
    """Run ``function()`` in a new daemon thread and wait for it (cancelling the wait leaves it running)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            function()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
            error = exc
        with suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="langfuse-flush", daemon=True).start()
    await done
