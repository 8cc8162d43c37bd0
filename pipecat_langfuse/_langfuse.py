"""Everything that touches the Langfuse SDK: the client, the export filter, and observations.

Pipecat's own spans (scopes ``pipecat`` and ``pipecat.turn``) are exported into the same
trace but demoted to plain spans, because Langfuse would otherwise classify its ``llm``,
``stt`` and ``tts`` spans as generations (``gen_ai.operation.name`` / ``gen_ai.request.model``)
and count every usage report twice.

No function here does network I/O on the caller's thread except :meth:`ObservationWriter.flush`,
which callers run in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from langfuse import Langfuse, LangfuseGeneration, LangfuseSpan
from langfuse.span_filter import is_default_export_span
from langfuse.types import MaskOtelSpansParams, MaskOtelSpansResult, OtelSpanPatch
from loguru import logger
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan

from pipecat_langfuse.settings import TracingSettings

PIPECAT_SCOPES = frozenset({"pipecat", "pipecat.turn"})
"""OpenTelemetry instrumentation scopes of Pipecat's built-in tracing."""
OBSERVATION_TYPE_ATTRIBUTE = "langfuse.observation.type"


def is_pipecat_scope(scope: str | None) -> bool:
    """Whether a span's instrumentation scope belongs to Pipecat's own tracing."""
    return scope is not None and (scope in PIPECAT_SCOPES or scope.startswith("pipecat."))


def should_export_span(span: ReadableSpan) -> bool:
    """Export what Langfuse exports by default, plus all of Pipecat's spans (conversation, turn)."""
    scope = span.instrumentation_scope.name if span.instrumentation_scope else None
    return is_pipecat_scope(scope) or is_default_export_span(span)


def demote_pipecat_spans(*, params: MaskOtelSpansParams) -> MaskOtelSpansResult | None:
    """Mark every Pipecat span as a plain Langfuse span so none counts as a generation."""
    patches = {
        identifier: OtelSpanPatch(set_attributes={OBSERVATION_TYPE_ATTRIBUTE: "span"})
        for identifier, span in params.spans.items()
        if is_pipecat_scope(span.instrumentation_scope_name)
    }
    return MaskOtelSpansResult(span_patches=patches) if patches else None


def build_client(settings: TracingSettings) -> Langfuse:
    """Build the Langfuse client for ``settings`` (installs the OpenTelemetry provider if none)."""
    return Langfuse(
        public_key=settings.public_key,
        secret_key=settings.secret_key,
        base_url=settings.base_url,
        timeout=settings.timeout_s,
        environment=settings.environment,
        release=settings.release,
        should_export_span=should_export_span,
        mask_otel_spans=demote_pipecat_spans,
    )


class ObservationWriter:
    """Creates the conversation's observations with explicit times and parents.

    Observations are created from the observer's task, not in the code they describe,
    so parents are passed explicitly and trace attributes come from the context captured
    inside ``propagate_attributes`` (see :meth:`bind`). A failure is logged once, with the
    traceback at DEBUG, and never raised: tracing must not break the call.
    """

    def __init__(self, client: Langfuse) -> None:
        """Wrap ``client``; call :meth:`bind` before the conversation starts."""
        self._client = client
        self._base_context: otel_context.Context | None = None
        self._root: otel_trace.SpanContext | None = None
        self.failures = 0

    @property
    def client(self) -> Langfuse:
        """The Langfuse client observations are sent with."""
        return self._client

    def bind(self, root: otel_trace.SpanContext, base_context: otel_context.Context) -> None:
        """Parent future observations on ``root``, with trace attributes from ``base_context``."""
        self._root, self._base_context = root, base_context

    def start_turn(self, *, number: int, start_ns: int) -> LangfuseSpan | None:
        """Open the span of turn ``number`` (ended by :meth:`end_turn`)."""
        with self._guard("starting a turn span"):
            span = self._start(LangfuseSpan, f"turn {number}", self._root, start_ns, {})
            assert isinstance(span, LangfuseSpan)
            return span
        return None

    def end_turn(
        self, span: LangfuseSpan | None, *, end_ns: int, input: str, output: str, metadata: Mapping[str, Any]
    ) -> None:
        """Set the turn's transcript and metadata, then end its span at ``end_ns``."""
        if span is None:
            return
        with self._guard("ending a turn span"):
            span.update(input=input, output=output, metadata=dict(metadata))
            span.end(end_time=end_ns)

    def generation(
        self,
        *,
        parent: LangfuseSpan | None,
        name: str,
        start_ns: int,
        end_ns: int,
        completion_start_ns: int | None,
        **fields: Any,
    ) -> None:
        """Create and end one generation spanning ``start_ns``..``end_ns`` under ``parent``."""
        with self._guard(f"recording a {name} generation"):
            if completion_start_ns is not None:
                fields["completion_start_time"] = datetime.fromtimestamp(completion_start_ns / 1e9, tz=UTC)
            parent_context = parent._otel_span.get_span_context() if parent is not None else self._root
            self._start(LangfuseGeneration, name, parent_context, start_ns, fields).end(end_time=end_ns)

    def flush(self) -> None:
        """Send everything buffered (blocking; run it in a worker thread)."""
        self._client.flush()

    def _start(
        self,
        cls: type[LangfuseSpan] | type[LangfuseGeneration],
        name: str,
        parent: otel_trace.SpanContext | None,
        start_ns: int,
        fields: Mapping[str, Any],
    ) -> LangfuseSpan | LangfuseGeneration:
        # The SDK's start_observation() takes no start time; the work it describes has already
        # happened, so start the OpenTelemetry span on the client's own tracer (its scope keeps
        # the span a Langfuse span) with the real start time, and wrap it like the SDK does.
        context = self._base_context if self._base_context is not None else otel_context.get_current()
        if parent is not None:
            context = otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(parent), context)
        otel_span = self._client._otel_tracer.start_span(name, context=context, start_time=start_ns)
        return cls(otel_span=otel_span, langfuse_client=self._client, **fields)

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Swallow and report a tracing failure: the first loudly, the rest counted (traceback at DEBUG)."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - tracing must not break the call
            self.failures += 1
            if self.failures == 1:
                logger.warning(
                    f"Langfuse tracing failed while {action}: {exc!r}. The call goes on; "
                    "later tracing errors are only counted (set LOG_LEVEL=DEBUG for tracebacks)."
                )
            logger.opt(exception=exc).debug(f"Tracing failure while {action}")
