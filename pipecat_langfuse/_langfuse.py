"""Everything that touches the Langfuse SDK: the client, the export filter, and observations.

Global OpenTelemetry state. Pipecat's built-in tracing creates its spans on the *global*
tracer provider. :func:`build_client` leaves that provider as it finds it, with one exception
that the SDK itself makes:

* no SDK provider installed yet: ``Langfuse()`` installs its own globally (the SDK's default), so
  Pipecat's ``conversation`` / ``turn`` / ``stt`` / ``llm`` / ``tts`` spans join the call's trace;
* the application installed one already (say, exporting to Datadog over OTLP): the client gets a
  private provider. Our observations reach Langfuse only, and Pipecat's spans keep going only
  where they went before.

Pipecat's spans that do reach Langfuse are demoted to plain spans when they start
(:class:`PipecatSpanDemotion`), because Langfuse would otherwise classify its ``llm``, ``stt``
and ``tts`` spans as generations (``gen_ai.operation.name`` / ``gen_ai.request.model``) and count
every usage report twice. That works for a client the user built too, whatever its export filter.

No function here does network I/O on the caller's thread except :meth:`ObservationWriter.flush`,
which callers run in a worker thread. Every access to the SDK's private attributes is in this
module, checked against langfuse 5.0.4.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

from langfuse import Langfuse, LangfuseGeneration, LangfuseOtelSpanAttributes, LangfuseSpan
from langfuse.span_filter import is_default_export_span
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from pipecat_langfuse._failures import FailureLog
from pipecat_langfuse.settings import TracingSettings

PIPECAT_SCOPES = frozenset({"pipecat", "pipecat.turn"})
"""OpenTelemetry instrumentation scopes of Pipecat's built-in tracing."""


def is_pipecat_scope(scope: str | None) -> bool:
    """Whether a span's instrumentation scope belongs to Pipecat's own tracing."""
    return scope is not None and (scope in PIPECAT_SCOPES or scope.startswith("pipecat."))


def should_export_span(span: ReadableSpan) -> bool:
    """Export what Langfuse exports by default, plus all of Pipecat's spans (conversation, turn)."""
    scope = span.instrumentation_scope.name if span.instrumentation_scope else None
    return is_pipecat_scope(scope) or is_default_export_span(span)


class PipecatSpanDemotion(SpanProcessor):
    """Marks each Pipecat span as a plain Langfuse span when it starts, so none counts as a generation.

    An explicit ``langfuse.observation.type`` wins over every other rule of Langfuse's server,
    so the ``gen_ai.*`` attributes Pipecat sets later cannot turn the span into a generation.
    """

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        """Set ``langfuse.observation.type = "span"`` on a span of a Pipecat scope."""
        scope = span.instrumentation_scope
        if scope is not None and is_pipecat_scope(scope.name):
            span.set_attribute(LangfuseOtelSpanAttributes.OBSERVATION_TYPE, "span")


_demoted_providers: weakref.WeakSet[TracerProvider] = weakref.WeakSet()


def build_client(
    settings: TracingSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    span_exporter: SpanExporter | None = None,
) -> Langfuse:
    """Build the Langfuse client for ``settings`` (see the module docstring for global state).

    The SDK keeps one set of resources per public key: if the process already has a client for
    ``settings.public_key``, the new client shares its exporter, filter and provider.

    Args:
        settings: Keys, host and trace attributes.
        tracer_provider: A provider to use instead of choosing one as described above.
        span_exporter: An exporter to use instead of the SDK's OTLP/HTTP one (tests, spooling).
    """
    provider = tracer_provider
    if provider is None and isinstance(otel_trace.get_tracer_provider(), TracerProvider):
        resource = {
            LangfuseOtelSpanAttributes.ENVIRONMENT: settings.environment,
            LangfuseOtelSpanAttributes.RELEASE: settings.release,
        }
        provider = TracerProvider(
            resource=Resource.create({k: v for k, v in resource.items() if v is not None}),
            shutdown_on_exit=False,  # the Langfuse client flushes and shuts it down itself
        )
    client = Langfuse(
        public_key=settings.public_key,
        secret_key=settings.secret_key,
        base_url=settings.base_url,
        timeout=settings.timeout_s,
        environment=settings.environment,
        release=settings.release,
        should_export_span=should_export_span,
        tracer_provider=provider,
        span_exporter=span_exporter,
    )
    return client


def demote_pipecat_spans(client: Langfuse) -> None:
    """Install :class:`PipecatSpanDemotion` where Pipecat's spans meet ``client``'s exporter (once).

    That is ``client``'s tracer provider when it is also the global one. A private provider never
    sees Pipecat's spans, and the global provider of an application that keeps Langfuse private
    is left alone.
    """
    provider = _tracer_provider_of(client)
    if provider is None or provider is not otel_trace.get_tracer_provider() or provider in _demoted_providers:
        return
    provider.add_span_processor(PipecatSpanDemotion())
    _demoted_providers.add(provider)


def _tracer_provider_of(client: Langfuse) -> TracerProvider | None:
    # Private: the SDK keeps the provider its span processor is on in client._resources (5.0.4).
    resources = getattr(client, "_resources", None)
    provider = getattr(resources, "tracer_provider", None)
    return provider if isinstance(provider, TracerProvider) else None


def _otel_span_of(observation: LangfuseSpan | LangfuseGeneration) -> otel_trace.Span:
    # Private: the OpenTelemetry span behind an observation (langfuse 5.0.4 keeps it in _otel_span).
    return observation._otel_span


class ObservationWriter:
    """Creates the conversation's observations with explicit times and parents.

    Observations are created from the observer's task, not in the code they describe,
    so parents are passed explicitly and trace attributes come from the context captured
    inside ``propagate_attributes`` (see :meth:`bind`). A failure goes to ``failures`` and is
    never raised: tracing must not break the call.

    Args:
        client: The Langfuse client to write with.
        failures: Where failures are reported; shared with the observer so a call has one count.
    """

    def __init__(self, client: Langfuse, failures: FailureLog | None = None) -> None:
        """Wrap ``client``; call :meth:`bind` before the conversation starts."""
        self._client = client
        self._base_context: otel_context.Context | None = None
        self._root: otel_trace.SpanContext | None = None
        self.failures = failures if failures is not None else FailureLog()

    @property
    def client(self) -> Langfuse:
        """The Langfuse client observations are sent with."""
        return self._client

    def bind(self, root: LangfuseSpan, base_context: otel_context.Context) -> None:
        """Parent future observations on ``root``, with trace attributes from ``base_context``."""
        self._root, self._base_context = _otel_span_of(root).get_span_context(), base_context

    def start_turn(self, *, number: int, start_ns: int) -> LangfuseSpan | None:
        """Open the span of turn ``number`` (ended by :meth:`end_turn`)."""
        with self._guard("starting a turn span"):
            return cast(LangfuseSpan, self._start(LangfuseSpan, f"turn {number}", self._root, start_ns, {}))
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
            parent_context = _otel_span_of(parent).get_span_context() if parent is not None else self._root
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
        # Private: the client's own tracer (langfuse 5.0.4), whose scope keeps the span a Langfuse span.
        otel_span = self._client._otel_tracer.start_span(name, context=context, start_time=start_ns)
        return cls(otel_span=otel_span, langfuse_client=self._client, **fields)

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Swallow and report a tracing failure: tracing must not break the call."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - tracing must not break the call
            self.failures.report(action, exc)
