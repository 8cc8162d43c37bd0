"""Where the tracer reaches into Pipecat's turn tracing, to make its spans and ours one tree.

Every access to a private attribute of Pipecat is in this module, checked against pipecat-ai
1.12 to 1.14. When Pipecat changes them, :func:`adopt_conversation` says so and returns False,
and the conversation is traced with turns of its own, beside Pipecat's spans.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace as otel_trace

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
