"""Where the tracer reaches into Pipecat's turn tracing, to make its spans and ours one tree.

Every access to a private attribute of Pipecat is in this module, checked against pipecat-ai
1.12 to 1.14. When Pipecat changes them, :func:`adopt_conversation` says so and returns False,
and the conversation is traced with turns of its own, beside Pipecat's spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loguru import logger
from opentelemetry import trace as otel_trace
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed, ProcessorSetUp

from pipecat_langfuse._spool import warn_once


def adopt_conversation(worker: Any, root: otel_trace.SpanContext, conversation_id: str) -> bool:
    """Make ``root`` the conversation span of ``worker``'s Pipecat tracing, before the worker runs.

    Pipecat's ``TurnTraceObserver`` starts a ``conversation`` span of its own at the StartFrame
    unless it has one. Given a non-recording stand-in for ``root``, it starts none, parents its
    ``turn`` spans on ``root``, and its ``end()`` at the end of the call does nothing. Returns
    whether that was done: False when ``worker`` has no Pipecat tracing (``enable_tracing=False``
    or ``enable_turn_tracking=False``) or Pipecat's internals are not the expected ones.
    """
    observer = getattr(worker, "turn_trace_observer", None)
    if observer is None:
        return False
    # Private (pipecat-ai 1.12-1.14): TurnTraceObserver._conversation_span, ._tracing_context.
    tracing_context: Any = getattr(observer, "_tracing_context", None)
    if getattr(observer, "_conversation_span", "absent") is not None or not hasattr(
        tracing_context, "set_conversation_context"
    ):
        warn_once(
            "pipecat-turn-tracing",
            "Pipecat's turn tracing has already started, or is not what pipecat-langfuse expects: "
            "this conversation keeps Pipecat's spans beside its own turns. Attach the tracer before "
            "the runner starts the worker.",
        )
        return False
    observer._conversation_span = otel_trace.NonRecordingSpan(root)
    tracing_context.set_conversation_context(root, conversation_id)
    return True


async def quiet_turn_tracing(worker: Any) -> bool:
    """Stop handing frames to Pipecat's ``TurnTraceObserver`` once :func:`adopt_conversation` did its work.

    Its only use of frames is to start a ``conversation`` span at the StartFrame, which it no
    longer does: its turn spans are driven by the turn tracker's events. Yet as an observer of
    every push it would cost a queue and a task hop per pushed frame, the dominant cost of
    tracing. Returns whether it was removed (not when the conversation was not adopted).
    """
    observer = getattr(worker, "turn_trace_observer", None)
    # Private (pipecat-ai 1.12-1.14): TurnTraceObserver._conversation_span, set by adopt_conversation.
    if observer is None or not isinstance(getattr(observer, "_conversation_span", None), otel_trace.NonRecordingSpan):
        return False
    await worker.remove_observer(observer)
    return True


class SharedObserverTask(BaseObserver):
    """Once-per-frame observers fed, in order, from one queue and one task instead of one each.

    Pipecat gives every observer a queue and a task, and puts every pushed frame and every
    processed-frame event on each queue: the dominant cost of observing a pipeline. Pipecat's turn
    tracking (and its latency tracking, with tracing on) and the tracer's observer all look at each
    frame once, so they can share one. An observer that raises is logged and the others go on.
    """

    def __init__(self, observers: Sequence[BaseObserver]) -> None:
        """Share one task among ``observers`` (each created with ``observe_every_push=False``)."""
        super().__init__(observe_every_push=False)
        self.observers = tuple(observers)
        self._processing = tuple(o for o in self.observers if _overrides(o, "on_process_frame"))
        self._failed: set[int] = set()

    async def setup(self, task_manager: Any) -> None:
        """Set up each observer."""
        await super().setup(task_manager)
        for observer in self.observers:
            await observer.setup(task_manager)

    async def cleanup(self) -> None:
        """Clean up each observer (one that raises does not stop the others)."""
        for observer in self.observers:
            try:
                await observer.cleanup()  # type: ignore[no-untyped-call]  # untyped in Pipecat
            except Exception as exc:  # noqa: BLE001 - the others still need theirs
                logger.error(f"Error cleaning up {observer}: {exc}")
        await super().cleanup()  # type: ignore[no-untyped-call]  # untyped in Pipecat

    async def on_pipeline_started(self) -> None:
        """Tell each observer."""
        for observer in self.observers:
            await self._guarded(observer, observer.on_pipeline_started())  # type: ignore[no-untyped-call]

    async def on_push_frame(self, data: FramePushed) -> None:
        """Hand the frame's first push to each observer, in order."""
        for observer in self.observers:
            await self._guarded(observer, observer.on_push_frame(data))

    async def on_process_frame(self, data: FrameProcessed) -> None:
        """Hand the event to the observers that handle processed frames (none, usually)."""
        for observer in self._processing:
            await self._guarded(observer, observer.on_process_frame(data))

    async def on_processor_setup(self, data: ProcessorSetUp) -> None:
        """Tell each observer."""
        for observer in self.observers:
            await self._guarded(observer, observer.on_processor_setup(data))

    async def _guarded(self, observer: BaseObserver, call: Any) -> None:
        try:
            await call
        except Exception as exc:  # noqa: BLE001 - on its own task it would have stopped only itself
            if id(observer) not in self._failed:
                self._failed.add(id(observer))
                logger.error(f"{observer} failed on a frame, and goes on with the next ones: {exc!r}")


def _overrides(observer: BaseObserver, method: str) -> bool:
    return getattr(type(observer), method) is not getattr(BaseObserver, method)


async def share_observer_task(worker: Any, observer: BaseObserver) -> bool:
    """Feed ``observer`` and Pipecat's once-per-frame turn observers of ``worker`` from one task.

    Only before the worker runs (its observers have no tasks yet), and only with Pipecat's turn
    tracking on. Returns whether it was done.
    """
    tracking = getattr(worker, "turn_tracking_observer", None)
    # Private (pipecat-ai 1.12-1.14): PipelineWorker._observer (its WorkerObserver) and its
    # ._proxies (None until the worker starts), ._user_bot_latency_observer (with tracing on).
    proxies = getattr(getattr(worker, "_observer", None), "_proxies", "absent")
    if tracking is None or proxies is not None:
        return False
    members = [tracking]
    latency = getattr(worker, "_user_bot_latency_observer", None)
    if isinstance(latency, BaseObserver):
        members.append(latency)
    members.append(observer)
    if any(member.observe_every_push for member in members):
        return False
    for member in members:
        await worker.remove_observer(member)
    worker.add_observer(SharedObserverTask(members))
    return True
