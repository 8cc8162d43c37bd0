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

import base64
import inspect
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

from langfuse import Langfuse, LangfuseGeneration, LangfuseOtelSpanAttributes, LangfuseSpan, LangfuseTool
from langfuse._version import __version__ as langfuse_version
from langfuse.span_filter import is_default_export_span, is_langfuse_span
from langfuse.types import SpanLevel
from loguru import logger
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from pipecat_langfuse._failures import FailureLog
from pipecat_langfuse._spool import (
    LedgerProcessor,
    RecordingSession,
    ReplayReport,
    Spool,
    SpoolingSpanExporter,
    destination_folder,
    replay,
)
from pipecat_langfuse.settings import TracingSettings
from pipecat_langfuse.summary import SpanCounts

PIPECAT_SCOPES = frozenset({"pipecat", "pipecat.turn"})
"""OpenTelemetry instrumentation scopes of Pipecat's built-in tracing."""


def is_pipecat_scope(scope: str | None) -> bool:
    """Whether a span's instrumentation scope belongs to Pipecat's own tracing."""
    return scope is not None and (scope in PIPECAT_SCOPES or scope.startswith("pipecat."))


_open_conversations: dict[str, set[int]] = {}
"""Public key -> trace ids of the conversations its tracers are running (see :func:`conversation_open`)."""
_open_conversations_lock = threading.Lock()


def export_filter(public_key: str | None) -> Callable[[ReadableSpan], bool]:
    """The ``should_export_span`` of the client for ``public_key``.

    It exports what Langfuse exports by default, plus Pipecat's spans (``conversation``, ``turn``…)
    of the conversations this project's tracers are running. Pipecat's spans go through the
    first Langfuse client of the process (its provider is the global one), so without the trace
    check a process serving several Langfuse projects would send one project's calls to another.
    """
    key = public_key or ""

    def should_export_span(span: ReadableSpan) -> bool:
        scope = span.instrumentation_scope.name if span.instrumentation_scope else None
        if is_pipecat_scope(scope):
            return span.context is not None and span.context.trace_id in _open_conversations.get(key, ())
        return is_default_export_span(span)

    return should_export_span


@contextmanager
def conversation_open(client: Langfuse, trace_id: str) -> Iterator[None]:
    """Let ``client``'s exporter take Pipecat's spans of ``trace_id`` while the block runs."""
    key, number = public_key_of(client) or "", int(trace_id, 16)
    with _open_conversations_lock:
        _open_conversations.setdefault(key, set()).add(number)
    try:
        yield
    finally:
        with _open_conversations_lock:
            _open_conversations[key].discard(number)


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
        span_exporter: An exporter to use instead of the SDK's OTLP/HTTP one (tests). By default it
            is the SDK's OTLP/HTTP exporter wrapped in a :class:`SpoolingSpanExporter` (spool per
            ``settings.spool_dir``), which also counts each trace's spans for the summary.
    """
    if span_exporter is None:
        try:
            span_exporter = spooling_exporter(settings)
        except Exception as exc:  # noqa: BLE001 - without the spool, the SDK's own exporter still sends
            logger.warning(f"Could not set up the tracing spool ({exc!r}); failed exports will be lost.")
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
        should_export_span=export_filter(settings.public_key),
        tracer_provider=provider,
        span_exporter=span_exporter,
    )
    _install_ledger(client)
    return client


LANGFUSE_OTEL_TRACES_EXPORT_PATH = "LANGFUSE_OTEL_TRACES_EXPORT_PATH"
"""The SDK's variable for another OTLP path than ``api/public/otel/v1/traces`` (langfuse 5)."""


def _compression() -> Compression:
    """The compression the SDK's own exporter uses: gzip unless its variables say ``none``."""
    try:
        # Private: the SDK's own resolution (langfuse 5.0.4: argument, LANGFUSE_OTEL_COMPRESSION, OTEL_*).
        from langfuse._client.span_processor import _resolve_compression

        return _resolve_compression(None)
    except ImportError:  # an SDK without it always sent gzip
        return Compression.Gzip


def _max_request_size() -> dict[str, Any]:
    """``max_request_size=`` as the SDK passes it, where the SDK and the exporter know it."""
    try:
        from langfuse._client.span_processor import _resolve_max_batch_size_bytes
    except ImportError:
        return {}
    if "max_request_size" not in inspect.signature(OTLPSpanExporter.__init__).parameters:
        return {}
    return {"max_request_size": _resolve_max_batch_size_bytes()}


def _sdk_headers(settings: TracingSettings) -> dict[str, str]:
    """The headers the SDK's own OTLP exporter sends (langfuse 5.0.4, ``LangfuseSpanProcessor``)."""
    credentials = f"{settings.public_key or ''}:{settings.secret_key or ''}".encode()
    return {
        "Authorization": "Basic " + base64.b64encode(credentials).decode("ascii"),
        "x-langfuse-sdk-name": "python",
        "x-langfuse-sdk-version": langfuse_version,
        "x-langfuse-public-key": settings.public_key or "",
        "x-langfuse-ingestion-version": "4",
    }


def _otlp_endpoint(settings: TracingSettings) -> str:
    path = os.environ.get(LANGFUSE_OTEL_TRACES_EXPORT_PATH)
    return f"{settings.base_url}/{path}" if path else f"{settings.base_url}/api/public/otel/v1/traces"


def spool_of(settings: TracingSettings) -> Spool | None:
    """The spool folder of ``settings``' Langfuse host, or None when spooling is off."""
    if settings.spool_dir is None:
        return None
    return Spool(settings.spool_dir / destination_folder(settings.base_url), int(settings.spool_max_mb * 1_000_000))


def spooling_exporter(settings: TracingSettings) -> SpoolingSpanExporter:
    """The OTLP/HTTP exporter the SDK would build for ``settings``, wrapped to spool and count.

    Same endpoint (``LANGFUSE_OTEL_TRACES_EXPORT_PATH`` included), headers, timeout, compression
    (gzip unless ``LANGFUSE_OTEL_COMPRESSION`` or the OTEL variables say otherwise) and request
    size limit as ``LangfuseSpanProcessor`` in langfuse 5.0.4.
    """
    session = RecordingSession()
    inner = OTLPSpanExporter(
        endpoint=_otlp_endpoint(settings),
        headers=_sdk_headers(settings),
        timeout=settings.timeout_s,
        compression=_compression(),
        session=session,
        **_max_request_size(),
    )
    return SpoolingSpanExporter(
        inner, session=session, spool=spool_of(settings), base_url=settings.base_url, timeout_s=settings.timeout_s
    )


def spooling_exporter_of(client: Langfuse) -> SpoolingSpanExporter | None:
    """The :class:`SpoolingSpanExporter` ``client`` sends with, or None (a client built elsewhere)."""
    exporter = _sdk_resource(client, "span_exporter")
    return exporter if isinstance(exporter, SpoolingSpanExporter) else None


_ledger_lock = threading.Lock()


def _install_ledger(client: Langfuse) -> None:
    """Count each trace's finished spans on ``client``'s provider, once per exporter."""
    exporter = spooling_exporter_of(client)
    provider = _tracer_provider_of(client)
    if exporter is None or provider is None:
        return
    public_key = public_key_of(client)
    should_export_span = export_filter(public_key)

    def will_export(span: ReadableSpan) -> bool:
        # The decision LangfuseSpanProcessor.on_end makes (langfuse 5.0.4), with build_client's filter.
        if is_langfuse_span(span):
            scope = span.instrumentation_scope
            attributes = scope.attributes if scope is not None and scope.attributes else {}
            if attributes.get("public_key") != public_key:
                return False
        return should_export_span(span)

    with _ledger_lock:
        if exporter.ledger_installed:
            return
        provider.add_span_processor(LedgerProcessor(exporter.ledger, will_export))
        exporter.ledger_installed = True


BACKGROUND_REPLAY_PAUSE_S = 0.01
"""Pause between two files of the replay at the start of the bot, which runs beside the first call."""


def replay_spool(
    settings: TracingSettings, *, stop: threading.Event | None = None, pause_s: float = 0.0
) -> ReplayReport | None:
    """Re-send the spool of ``settings``' host with its keys; None when spooling is off.

    Blocking (one request per file, each bounded by ``settings.timeout_s``): run it in a thread.
    ``pause_s`` is a sleep between two files (see :func:`replay`).
    """
    spool = spool_of(settings)
    if spool is None:
        return None
    return replay(
        spool,
        endpoint=_otlp_endpoint(settings),
        headers=_sdk_headers(settings),
        gzip_body=_compression() is Compression.Gzip,
        timeout_s=settings.timeout_s,
        stop=stop,
        pause_s=pause_s,
    )


def replay_spool_in_background(settings: TracingSettings) -> threading.Thread | None:
    """Start :func:`replay_spool` in a daemon thread that logs one line about what it did.

    Returns None (and starts nothing) when tracing or spooling is off or the spool is empty.
    """
    spool = spool_of(settings) if settings.enabled else None
    if spool is None or not spool.files():
        return None

    def run() -> None:
        try:
            report = replay_spool(settings, pause_s=BACKGROUND_REPLAY_PAUSE_S)
        except Exception as exc:  # noqa: BLE001 - a background replay must never crash the bot
            logger.warning(
                f"Re-sending the tracing spool failed: {exc!r}. It is kept; try `uv run test_langfuse --replay`."
            )
            return
        if report is None:
            return
        if report.sent_files:
            logger.info(
                f"Tracing spool: re-sent {report.sent_spans} spans ({report.sent_files} files) to Langfuse "
                f"in {report.seconds:.1f} s; {report.kept_files + report.failed_files} files kept."
            )
        if report.outcome is not None or report.failed_files:
            why = f"HTTP {report.status}" if report.status else (report.error or "no answer")
            logger.warning(
                f"Tracing spool: {report.kept_files + report.failed_files} files in {report.directory} not re-sent "
                f"({why}); they are kept. `uv run test_langfuse --replay` tells more."
            )

    thread = threading.Thread(target=run, name="pipecat-langfuse-replay", daemon=True)
    thread.start()
    return thread


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


def public_key_of(client: Langfuse) -> str | None:
    """The public key ``client`` sends with."""
    key = _sdk_resource(client, "public_key")
    return key if isinstance(key, str) else None


def _tracer_provider_of(client: Langfuse) -> TracerProvider | None:
    provider = _sdk_resource(client, "tracer_provider")
    return provider if isinstance(provider, TracerProvider) else None


def _sdk_resource(client: Langfuse, name: str) -> object:
    # Private: the SDK keeps a client's public key, tracer provider and span exporter on the
    # per-key resources in client._resources (langfuse 5.0.4). None when that changes.
    return getattr(getattr(client, "_resources", None), name, None)


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
        self,
        span: LangfuseSpan | None,
        *,
        end_ns: int,
        input: str,
        output: str,
        metadata: Mapping[str, Any],
        level: SpanLevel | None = None,
        status_message: str | None = None,
    ) -> None:
        """Set the turn's transcript, metadata and level, then end its span at ``end_ns``."""
        if span is None:
            return
        with self._guard("ending a turn span"):
            span.update(input=input, output=output, metadata=dict(metadata), level=level, status_message=status_message)
            span.end(end_time=end_ns)

    def tool(self, *, parent: LangfuseSpan | None, name: str, start_ns: int, end_ns: int, **fields: Any) -> None:
        """Create and end one ``tool`` observation spanning ``start_ns``..``end_ns`` under ``parent``."""
        with self._guard(f"recording the tool call {name}"):
            parent_context = _otel_span_of(parent).get_span_context() if parent is not None else self._root
            self._start(LangfuseTool, name, parent_context, start_ns, fields).end(end_time=end_ns)

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
        cls: type[LangfuseSpan] | type[LangfuseGeneration] | type[LangfuseTool],
        name: str,
        parent: otel_trace.SpanContext | None,
        start_ns: int,
        fields: Mapping[str, Any],
    ) -> LangfuseSpan | LangfuseGeneration | LangfuseTool:
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


def set_trace_metadata(observation: LangfuseSpan, key: str, value: str) -> None:
    """Add ``key: value`` to the trace's metadata, from a live observation of it.

    ``propagate_attributes`` sets trace metadata only for spans started after it; a value known
    later (e.g. the system prompt's hash) goes on one span, which the server merges into the trace.
    """
    _otel_span_of(observation).set_attribute(f"{LangfuseOtelSpanAttributes.TRACE_METADATA}.{key}", value)


def span_counts(client: Langfuse, trace_id: str) -> SpanCounts | None:
    """Sent, spooled, dropped and pending spans of ``trace_id`` on ``client``'s exporter.

    None when ``client`` does not send through a :class:`SpoolingSpanExporter` (built elsewhere).
    """
    exporter = spooling_exporter_of(client)
    if exporter is None:
        return None
    record = exporter.ledger.get(int(trace_id, 16))
    if record is None:
        return SpanCounts()
    handled = record.sent + record.spooled + record.dropped
    return SpanCounts(
        sent=record.sent, spooled=record.spooled, dropped=record.dropped, pending=max(record.finished - handled, 0)
    )
