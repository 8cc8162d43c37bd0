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

One tree. When the tracer follows a worker whose Pipecat tracing reaches Langfuse, the
conversation's Pipecat spans merge with ours (:class:`PipecatSpans`): Pipecat's ``turn`` spans
become the turns and its ``llm`` spans the LLM generations (each held open until the observer
has written it, then ended at Pipecat's own time), the STT and TTS generations sit under the
turns, and Pipecat's ``stt`` / ``tts`` spans are folded: not exported, since the generations
carry their content.

No function here does network I/O on the caller's thread except :meth:`ObservationWriter.flush`,
which callers run in a worker thread. Every access to the SDK's private attributes is in this
module, checked against langfuse 5.0.4.
"""

from __future__ import annotations

import base64
import functools
import inspect
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, cast

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
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased

from pipecat_langfuse._failures import FailureLog
from pipecat_langfuse._scores import ScoreDataType, ScoreSender, make_score
from pipecat_langfuse._spool import (
    LedgerProcessor,
    RecordingSession,
    ReplayReport,
    Spool,
    SpoolingSpanExporter,
    destination_folder,
    replay,
    warn_once,
)
from pipecat_langfuse.settings import TracingSettings
from pipecat_langfuse.summary import SpanCounts

PIPECAT_SCOPES = frozenset({"pipecat", "pipecat.turn"})
"""OpenTelemetry instrumentation scopes of Pipecat's built-in tracing."""
PIPECAT_TURN_SCOPE = "pipecat.turn"
"""Scope of Pipecat's ``conversation`` and ``turn`` spans."""
FOLDED_PIPECAT_SPANS = frozenset({"stt", "tts", "llm_response"})
"""Pipecat's service spans that a merged conversation does not export: its generations say it all.

``llm_response`` is a speech-to-speech (realtime) model's response, which is a ``speech-to-speech`` generation.
"""


def is_pipecat_scope(scope: str | None) -> bool:
    """Whether a span's instrumentation scope belongs to Pipecat's own tracing."""
    return scope is not None and (scope in PIPECAT_SCOPES or scope.startswith("pipecat."))


_open_conversations: dict[str, set[int]] = {}
"""Public key -> trace ids of the conversations its tracers are running (see :func:`conversation_open`)."""
_open_conversations_lock = threading.Lock()
_content_restricted: set[int] = set()
"""Trace ids of the open conversations whose content is not captured as is (see :func:`conversation_open`)."""
PIPECAT_SERVICE_SPANS = frozenset(
    {"stt", "llm", "tts", "llm_setup", "llm_request", "llm_response", "llm_tool_call", "llm_tool_result"}
)
"""Pipecat's service spans, which carry content (transcripts, messages, text spoken, instructions)."""


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
            if span.context is None or span.context.trace_id not in _open_conversations.get(key, ()):
                return False
            trace_id = span.context.trace_id
            if span.name in PIPECAT_SERVICE_SPANS and trace_id in _content_restricted:
                return False  # content of Pipecat's own: an adopted llm span is renamed, so never this
            return not (span.name in FOLDED_PIPECAT_SPANS and trace_id in _merged_conversations)
        return is_default_export_span(span)

    return should_export_span


@contextmanager
def conversation_open(client: Langfuse, trace_id: str, *, content_restricted: bool = False) -> Iterator[None]:
    """Let ``client``'s exporter take Pipecat's spans of ``trace_id`` while the block runs.

    With ``content_restricted`` (content capture off, or a mask), Pipecat's own ``stt`` / ``llm`` /
    ``tts`` spans that the tracer did not adopt are not exported: they carry transcripts and messages.
    """
    key, number = public_key_of(client) or "", int(trace_id, 16)
    with _open_conversations_lock:
        _open_conversations.setdefault(key, set()).add(number)
        if content_restricted:
            _content_restricted.add(number)
    try:
        yield
    finally:
        with _open_conversations_lock:
            _open_conversations[key].discard(number)
            _content_restricted.discard(number)


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


class _HeldSpan:
    """One of Pipecat's spans whose end waits until the observer has written what it stands for.

    Pipecat ends its spans from its own tasks, possibly before our observer has seen the frames
    they describe. The span's ``end`` is replaced (on this instance only) by one that records
    Pipecat's end time; :meth:`release` ends it for real at that time, once the observer has set
    its attributes. A span Pipecat has not ended yet ends when Pipecat ends it.
    """

    def __init__(self, span: Span) -> None:
        self.span = span
        self.claimed = False
        self._end = span.end
        self._lock = threading.Lock()
        self._released = False
        self._ended_at: int | None = None
        self._done = False
        span.end = self._end_later  # type: ignore[method-assign]

    def attribute(self, key: str) -> object:
        """One of the span's attributes (None if unset)."""
        return (self.span.attributes or {}).get(key)

    @property
    def parent_id(self) -> int | None:
        """Span id of the span's parent."""
        return self.span.parent.span_id if self.span.parent is not None else None

    def _end_later(self, end_time: int | None = None) -> None:
        with self._lock:
            if not self._released:
                self._ended_at = end_time if end_time is not None else time.time_ns()
                return
        self._finish(end_time)

    def release(self, *, now: bool = False) -> None:
        """Let the span end: at Pipecat's end time if Pipecat ended it (else now, with ``now``)."""
        with self._lock:
            self._released = True
            end_time = self._ended_at
        if end_time is not None or now:
            self._finish(end_time)

    def _finish(self, end_time: int | None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._end(end_time)


class PipecatSpans:
    """Pipecat's ``turn`` and ``llm`` spans of one conversation, held for the observer to adopt.

    A turn span becomes the turn; an ``llm`` span becomes the LLM generation of that call, so
    spans started inside the call (a tool's own ``@observe`` spans) nest under the generation.
    """

    def __init__(self) -> None:
        """Start empty; :class:`PipecatSpanAdoption` adds spans as Pipecat starts them."""
        self._held: list[_HeldSpan] = []
        self._lock = threading.Lock()

    def hold(self, span: Span) -> None:
        """Hold ``span``'s end until the observer claims and releases it."""
        held = _HeldSpan(span)
        with self._lock:
            self._held.append(held)

    def claim_turn(self, number: int) -> _HeldSpan | None:
        """Pipecat's span of turn ``number``, or None if Pipecat has not started it."""
        return self._claim(lambda held: held.span.name == "turn" and held.attribute("turn.number") == number)

    def claim_llm(self, turn_span_id: int, model: str | None = None) -> _HeldSpan | None:
        """Pipecat's first unclaimed ``llm`` span under the turn ``turn_span_id``, or None.

        With ``model``, a span that requested that model is taken first, so the calls of two LLMs
        in one turn (a ``ParallelPipeline``) are not swapped.
        """

        def under_turn(held: _HeldSpan) -> bool:
            return held.span.name == "llm" and held.parent_id == turn_span_id

        if model:
            held = self._claim(lambda h: under_turn(h) and h.attribute("gen_ai.request.model") == model)
            if held is not None:
                return held
        return self._claim(under_turn)

    def _claim(self, matches: Callable[[_HeldSpan], bool]) -> _HeldSpan | None:
        with self._lock:
            for held in self._held:
                if not held.claimed and matches(held):
                    held.claimed = True
                    return held
        return None

    def close(self) -> None:
        """End every span still held: the conversation is over."""
        with self._lock:
            held, self._held = self._held, []
        for span in held:
            span.release(now=True)


_merged_conversations: dict[int, PipecatSpans] = {}
"""Trace id -> Pipecat spans held for each conversation merged with Pipecat's tracing."""
ADOPTED_PIPECAT_SPANS = frozenset({(PIPECAT_TURN_SCOPE, "turn"), ("pipecat", "llm")})
"""(Scope, name) of the Pipecat spans a merged conversation adopts as its turns and LLM generations."""


@contextmanager
def pipecat_spans_of(trace_id: str) -> Iterator[PipecatSpans]:
    """Adopt Pipecat's turn and llm spans of ``trace_id``, and fold the others, while the block runs."""
    number = int(trace_id, 16)
    spans = PipecatSpans()
    _merged_conversations[number] = spans
    try:
        yield spans
    finally:
        _merged_conversations.pop(number, None)
        spans.close()


class PipecatSpanAdoption(SpanProcessor):
    """Hands each Pipecat ``turn`` and ``llm`` span of a merged conversation to its :class:`PipecatSpans`."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        """Hold ``span`` if a merged conversation adopts it."""
        scope = span.instrumentation_scope
        if scope is None or (scope.name, span.name) not in ADOPTED_PIPECAT_SPANS:
            return
        spans = _merged_conversations.get(span.get_span_context().trace_id)
        if spans is not None:
            spans.hold(span)


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
            sampler=TraceIdRatioBased(settings.sample_rate) if settings.sample_rate < 1 else None,
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
        sample_rate=settings.sample_rate,  # for the provider the SDK builds (the process's first)
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


class FoldedSpanSampler(Sampler):
    """Does not record Pipecat's service spans that a merged conversation folds into its generations.

    They would be built, filled and handed to every span processor only to be left out of the
    export: as non-recording spans they cost nothing. Any other span is the wrapped sampler's.
    """

    def __init__(self, sampler: Sampler) -> None:
        """Wrap the provider's own ``sampler``."""
        self.sampler = sampler

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: otel_trace.SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: otel_trace.TraceState | None = None,
    ) -> SamplingResult:
        """Drop a folded span of a merged conversation; ask the wrapped sampler otherwise."""
        if name in FOLDED_PIPECAT_SPANS and trace_id in _merged_conversations:
            return SamplingResult(Decision.DROP)
        return self.sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        """The wrapped sampler's description, wrapped."""
        return f"FoldedSpanSampler({self.sampler.get_description()})"


def watch_pipecat_spans(client: Langfuse) -> bool:
    """Install the demotion, adoption and folding of Pipecat's spans where they meet Langfuse.

    That is ``client``'s tracer provider when it is also the global one (installed once per
    provider): :class:`PipecatSpanDemotion` and :class:`PipecatSpanAdoption` as span processors,
    and :class:`FoldedSpanSampler` around its sampler. A private provider never sees Pipecat's
    spans, and the global provider of an application that keeps Langfuse private is left alone.
    Returns whether Pipecat's spans reach ``client``.
    """
    provider = _tracer_provider_of(client)
    if provider is None or provider is not otel_trace.get_tracer_provider():
        return False
    if provider not in _demoted_providers:
        provider.add_span_processor(PipecatSpanDemotion())
        provider.add_span_processor(PipecatSpanAdoption())
        provider.sampler = FoldedSpanSampler(provider.sampler)  # read by each tracer Pipecat gets
        _demoted_providers.add(provider)
    return True


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


def otel_span_context(observation: LangfuseSpan) -> otel_trace.SpanContext:
    """The OpenTelemetry span context of a live observation."""
    return _otel_span_of(observation).get_span_context()


def _otel_span_of(observation: LangfuseSpan | LangfuseGeneration) -> otel_trace.Span:
    # Private: the OpenTelemetry span behind an observation (langfuse 5.0.4 keeps it in _otel_span).
    return observation._otel_span


PIPECAT_LLM_DUPLICATES = ("input", "output", "gen_ai.system_instructions", "gen_ai.usage.")
"""Attributes of Pipecat's ``llm`` span that the generation has as its own input, output and usage."""


def _drop_duplicates_of_the_generation(span: Span) -> None:
    """Remove what the generation says itself (and settings Pipecat left unset) from an adopted ``llm`` span.

    It halves the size of the span, and no ``gen_ai.usage.*`` value can be read as a second report.
    """
    # Private: the live span's attribute mapping (opentelemetry-sdk 1.x), still mutable until the real end().
    attributes = getattr(span, "_attributes", None)
    if attributes is None:
        return
    for key in [k for k, v in attributes.items() if k.startswith(PIPECAT_LLM_DUPLICATES) or v == "NOT_GIVEN"]:
        with suppress(TypeError, KeyError):  # an ended span's attributes are immutable: keep them
            del attributes[key]


CONTENT_METADATA = frozenset({"generated_text"})
"""Metadata keys that hold what was said (dropped when content is not captured)."""
MASK_FAILED = "[masking failed]"
"""What a value becomes when the user's mask raises: never the unmasked value."""


@dataclass(frozen=True)
class ContentPolicy:
    """What of a conversation's content leaves the process.

    Attributes:
        capture: Whether inputs and outputs (transcripts, messages, text spoken, tool arguments and
            results) are sent at all; usage, cost, timing and metadata numbers are sent either way.
        mask: A function applied to every string of every input, output and metadata value
            before it leaves the process (e.g. to redact PII). If it raises, the string becomes
            :data:`MASK_FAILED`.
    """

    capture: bool = True
    mask: Callable[[str], str] | None = None

    @property
    def restricted(self) -> bool:
        """Whether content is withheld or changed (so Pipecat's own content must not leave as is)."""
        return not self.capture or self.mask is not None

    def apply(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` (of an observation) with its input, output and metadata as the policy allows."""
        for key in ("input", "output"):
            if key in fields and fields[key] is not None:
                fields[key] = self.masked(fields[key]) if self.capture else None
        if isinstance(fields.get("metadata"), Mapping):
            fields["metadata"] = self.metadata(fields["metadata"])
        return fields

    def metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """``metadata`` without what was said when content is not captured, and masked."""
        return {k: self.masked(v) for k, v in metadata.items() if self.capture or k not in CONTENT_METADATA}

    def masked(self, value: Any) -> Any:
        """``value`` with the mask applied to each string in it (dict keys excepted)."""
        if self.mask is None:
            return value
        if isinstance(value, str):
            try:
                return str(self.mask(value))
            except Exception as exc:  # noqa: BLE001 - an unmasked value must never leave
                logger.opt(exception=exc).debug("The mask raised.")
                warn_once("mask-failed", f"The tracer's mask raised {exc!r}; the value is sent as {MASK_FAILED!r}.")
                return MASK_FAILED
        if isinstance(value, Mapping):
            return {k: self.masked(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.masked(v) for v in value]
        return value


@dataclass(slots=True)
class TurnSpan:
    """The span of one turn: Pipecat's own (``adopted``) or one of ours, found when first needed."""

    number: int
    start_ns: int
    resolved: bool = False
    observation: LangfuseSpan | None = None
    adopted: _HeldSpan | None = None


_P = ParamSpec("_P")


def _in_order(
    method: Callable[Concatenate[ObservationWriter, _P], None],
) -> Callable[Concatenate[ObservationWriter, _P], None]:
    """Run the writer's ``method`` on its writing thread, after what was asked for before (see ``background``)."""

    @functools.wraps(method)
    def submit(self: ObservationWriter, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        self._submit(lambda: method(self, *args, **kwargs))

    return submit


class ObservationWriter:
    """Creates the conversation's observations with explicit times and parents.

    Observations are created after the work they describe, not in its code, so parents are
    passed explicitly and trace attributes come from the context captured inside
    ``propagate_attributes`` (see :meth:`bind`). A failure goes to ``failures`` and is never
    raised: tracing must not break the call.

    With ``background``, turns, generations and tool calls are written by a thread of the
    writer's own, in the order they were asked for, so the SDK's work (building and ending spans,
    serializing their attributes) stays off the event loop; :meth:`drain` waits for it.

    Args:
        client: The Langfuse client to write with.
        failures: Where failures are reported; shared with the observer so a call has one count.
        content: What of the content may leave the process.
        background: Write from a thread of the writer's own.
    """

    def __init__(
        self,
        client: Langfuse,
        failures: FailureLog | None = None,
        content: ContentPolicy | None = None,
        *,
        background: bool = False,
    ) -> None:
        """Wrap ``client``; call :meth:`bind` before the conversation starts."""
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] | None = queue.SimpleQueue() if background else None
        self._thread: threading.Thread | None = None
        self._client = client
        self.content = content if content is not None else ContentPolicy()
        self._sampled = True
        self._base_context: otel_context.Context | None = None
        self._root: otel_trace.SpanContext | None = None
        self._pipecat_spans: PipecatSpans | None = None
        self._scores: ScoreSender | None = None
        self._environment: str | None = None
        self.trace_id: str | None = None
        self.failures = failures if failures is not None else FailureLog()

    @property
    def client(self) -> Langfuse:
        """The Langfuse client observations are sent with."""
        return self._client

    def bind(self, root: LangfuseSpan, base_context: otel_context.Context) -> None:
        """Parent future observations on ``root``, with trace attributes from ``base_context``."""
        self._root, self._base_context = _otel_span_of(root).get_span_context(), base_context
        self.trace_id = root.trace_id
        self._sampled = _otel_span_of(root).is_recording()  # LANGFUSE_SAMPLE_RATE decided for the whole trace

    def update_root(self, root: LangfuseSpan, *, input: Any, output: Any, metadata: Mapping[str, Any]) -> None:
        """Set the conversation's input, output and metadata, as the content policy allows."""
        root.update(**self.content.apply({"input": input, "output": output, "metadata": dict(metadata)}))

    def send_scores(self, sender: ScoreSender, environment: str | None) -> None:
        """Send the turns' and the conversation's scores with ``sender``."""
        self._scores, self._environment = sender, environment

    def follow_pipecat(self, spans: PipecatSpans) -> None:
        """Use Pipecat's turn and llm spans as the turns and LLM generations (one tree with Pipecat's tracing)."""
        self._pipecat_spans = spans

    def start_turn(self, *, number: int, start_ns: int) -> TurnSpan:
        """The span of turn ``number``, ended by :meth:`end_turn`.

        Following Pipecat, it is Pipecat's span of that turn, looked up when first needed (Pipecat
        starts it from its own task); otherwise, or when Pipecat has none, a span of ours.
        """
        turn = TurnSpan(number=number, start_ns=start_ns)
        if self._pipecat_spans is None:
            self._submit(lambda: self._resolve(turn))
        return turn

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until what was asked for is written, and stop the writing thread (blocking).

        Returns whether it was all written within ``timeout``; what comes after is written at once.
        """
        jobs, thread = self._jobs, self._thread
        self._jobs = None
        if jobs is None or thread is None:
            return True
        jobs.put(None)
        thread.join(timeout)
        return not thread.is_alive()

    def _submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` now, or on the writing thread after what was asked for before it."""
        jobs = self._jobs
        if jobs is None:
            job()
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write, args=(jobs,), name="pipecat-langfuse-writer", daemon=True
            )
            self._thread.start()
        jobs.put(job)

    def _write(self, jobs: queue.SimpleQueue[Callable[[], None] | None]) -> None:
        while (job := jobs.get()) is not None:
            with self._guard("writing an observation"):
                job()

    @_in_order
    def end_turn(
        self,
        turn: TurnSpan | None,
        *,
        end_ns: int,
        input: str,
        output: str,
        metadata: Mapping[str, Any],
        level: SpanLevel | None = None,
        status_message: str | None = None,
        scores: Mapping[str, float | bool | str] | None = None,
    ) -> None:
        """Set the turn's transcript, metadata and level, then end its span and send its scores.

        Our own span ends at ``end_ns``; Pipecat's ends at the time Pipecat ended it. A bool
        score is BOOLEAN, a string CATEGORICAL, a number NUMERIC.
        """
        if turn is None:
            return
        with self._guard("ending a turn span"):
            self._resolve(turn)
            if turn.observation is None:
                return
            if turn.adopted is not None:
                turn.adopted.span.update_name(f"turn {turn.number}")
            fields = self.content.apply({"input": input, "output": output, "metadata": dict(metadata)})
            turn.observation.update(**fields, level=level, status_message=status_message)
            if turn.adopted is not None:
                turn.adopted.release()
            else:
                turn.observation.end(end_time=end_ns)
            self.score(scores or {}, observation=turn.observation)

    def score(
        self,
        scores: Mapping[str, float | bool | str],
        *,
        observation: LangfuseSpan | LangfuseGeneration | LangfuseTool | None = None,
    ) -> None:
        """Send ``scores`` for ``observation`` (the trace's, without one) through the score sender."""
        if self._scores is None or not scores or not self._sampled:
            return  # an unsampled conversation sends nothing
        trace_id = observation.trace_id if observation is not None else self.trace_id
        if trace_id is None:
            return
        for name, value in scores.items():
            with self._guard(f"scoring {name}"):
                data_type: ScoreDataType = (
                    "BOOLEAN" if isinstance(value, bool) else "CATEGORICAL" if isinstance(value, str) else "NUMERIC"
                )
                self._scores.add(
                    make_score(
                        name=name,
                        value=value,
                        trace_id=trace_id,
                        observation_id=observation.id if observation is not None else None,
                        data_type=data_type,
                        environment=self._environment,
                    )
                )

    @_in_order
    def tool(self, /, *, parent: TurnSpan | None, name: str, start_ns: int, end_ns: int, **fields: Any) -> None:
        """Create and end one ``tool`` observation spanning ``start_ns``..``end_ns`` under ``parent``."""
        with self._guard(f"recording the tool call {name}"):
            fields = self.content.apply(fields)
            self._start(LangfuseTool, name, self._parent(parent), start_ns, fields).end(end_time=end_ns)

    @_in_order
    def generation(
        self,
        /,
        *,
        parent: TurnSpan | None,
        name: str,
        start_ns: int,
        end_ns: int,
        completion_start_ns: int | None,
        adopt_llm_span: bool = False,
        scores: Mapping[str, float | bool | str] | None = None,
        **fields: Any,
    ) -> None:
        """Create and end one generation spanning ``start_ns``..``end_ns`` under ``parent``.

        With ``adopt_llm_span``, Pipecat's ``llm`` span of the call, when the conversation follows
        Pipecat, becomes the generation: it keeps Pipecat's times and attributes (and whatever
        started inside the call nests under it) and gets the generation's name and fields.
        """
        with self._guard(f"recording a {name} generation"):
            fields = self.content.apply(fields)
            parent_context = self._parent(parent)
            held = None
            if adopt_llm_span and self._pipecat_spans is not None and parent_context is not None:
                model = fields.get("model")
                held = self._pipecat_spans.claim_llm(parent_context.span_id, model if isinstance(model, str) else None)
            if held is not None and completion_start_ns is not None and held.span.start_time is not None:
                completion_start_ns += held.span.start_time - start_ns  # the same TTFB after Pipecat's start
            if completion_start_ns is not None:
                fields["completion_start_time"] = datetime.fromtimestamp(completion_start_ns / 1e9, tz=UTC)
            if held is None:
                generation = self._start(LangfuseGeneration, name, parent_context, start_ns, fields)
                generation.end(end_time=end_ns)
            else:
                held.span.update_name(name)
                _drop_duplicates_of_the_generation(held.span)
                generation = LangfuseGeneration(otel_span=held.span, langfuse_client=self._client, **fields)
                held.release()
            self.score(scores or {}, observation=generation)

    def _parent(self, turn: TurnSpan | None) -> otel_trace.SpanContext | None:
        if turn is None:
            return self._root
        self._resolve(turn)
        return _otel_span_of(turn.observation).get_span_context() if turn.observation is not None else self._root

    def _resolve(self, turn: TurnSpan) -> None:
        """Find (or, when there is none, start) the span of ``turn``, once."""
        if turn.resolved:
            return
        turn.resolved = True
        adopted = self._pipecat_spans.claim_turn(turn.number) if self._pipecat_spans is not None else None
        if adopted is not None:
            turn.adopted = adopted
            turn.observation = LangfuseSpan(otel_span=adopted.span, langfuse_client=self._client)
        else:
            name = f"turn {turn.number}"
            turn.observation = cast(LangfuseSpan, self._start(LangfuseSpan, name, self._root, turn.start_ns, {}))

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
