"""``uv run test_langfuse``: check the Langfuse configuration before running the bot.

It reads the same variables as the bot (``LANGFUSE_PUBLIC_KEY``, ``LANGFUSE_SECRET_KEY``,
``LANGFUSE_BASE_URL`` or its older name ``LANGFUSE_HOST``, ``LANGFUSE_TIMEOUT``) from the
environment and from ``.env`` in the current directory (the environment wins), asks Langfuse
which project the keys belong to (``GET /api/public/projects``), sends one test trace through
the same client the bot builds, and prints one verdict. The secret key is never printed.

Exit codes:
    0: OK: the keys belong to a project and the test trace was accepted.
    1: Unexpected error in the check itself (run with ``--verbose`` for the traceback).
    2: Missing or invalid configuration (a variable is unset or malformed).
    3: Wrong keys: Langfuse answered 401/403 (wrong pair, or keys from another region/host).
    4: Host unreachable, timed out, or not a Langfuse server.
    5: The keys work, but the test trace could not be delivered to the OTLP endpoint.

``uv run test_langfuse --prices`` lists the price table instead (see :mod:`app.prices`).

``uv run test_langfuse --replay`` re-sends the spool instead (the batches the bot could not send,
see ``LANGFUSE_SPOOL_DIR``), deletes what Langfuse accepted, and prints how many files and spans
were sent, kept and failed. Exit codes: 0 all sent (or nothing to send), 2 configuration, 3 wrong
keys (files kept), 4 unreachable, timed out, HTTP 5xx or 429 (files kept), 5 Langfuse refused some
files for good (HTTP 4xx; kept, see ``--verbose``), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import re
import socket
import ssl
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydantic
from langfuse import Langfuse, propagate_attributes
from langfuse.api.core.api_error import ApiError
from loguru import logger
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

# pipecat_langfuse imports Pipecat, whose import logs a banner to stderr; keep it out of the verdict.
logger.disable("pipecat")
from app._cli import DOTENV, exit_codes, load_local_dotenv, redact  # noqa: E402
from pipecat_langfuse import PriceTable, VoiceTracer  # noqa: E402
from pipecat_langfuse.settings import (  # noqa: E402
    ENABLE_TRACING,
    LANGFUSE_BASE_URL,
    LANGFUSE_HOST,
    LANGFUSE_PUBLIC_KEY,
    LANGFUSE_RELEASE,
    LANGFUSE_SECRET_KEY,
    LANGFUSE_SPOOL_DIR,
    LANGFUSE_TIMEOUT,
    SettingsError,
    TracingSettings,
)
from pipecat_langfuse.spool import Outcome, replay_spool, spooled_for_other_hosts  # noqa: E402

logger.enable("pipecat")

__all__ = ["CheckResult", "ExitCode", "check", "main", "replay"]

TEST_TRACE_NAME = "test_langfuse"
_MARGIN_S = 1.5  # on top of LANGFUSE_TIMEOUT, for the thread hand-off and the SDK's own work
_EXPORTER_LOGGER = OTLPSpanExporter.__module__  # the logger the OTLP exporter reports failures on
_REGIONS = (
    "  EU https://cloud.langfuse.com, US https://us.cloud.langfuse.com, JP https://jp.cloud.langfuse.com,",
    "  HIPAA https://hipaa.cloud.langfuse.com; self-hosted: your stack's URL (e.g. http://localhost:3000).",
)
_BASIC_AUTH = (
    "Langfuse wants HTTP Basic auth of public_key:secret_key (the SDK sends it); a hand-configured OTLP",
    "exporter must send 'Authorization: Basic base64(pk:sk)': a 'Bearer' header gets 401 \"Invalid public key\".",
)

_SDK_EXPORT_VARS = ("LANGFUSE_TRACING_ENABLED", "LANGFUSE_SAMPLE_RATE")  # read by the SDK itself

T = TypeVar("T")


class ExitCode(IntEnum):
    """Exit status of ``test_langfuse``, one per class of failure."""

    OK = 0
    UNEXPECTED = 1
    CONFIG = 2
    WRONG_KEYS = 3
    UNREACHABLE = 4
    TRACE_NOT_DELIVERED = 5


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`check`.

    Attributes:
        exit_code: Process exit status for this outcome.
        verdict: One line: what is wrong, or that all is well.
        details: Further lines: what was found and how to fix it.
        project: Name of the Langfuse project the keys belong to, once known.
        base_url: Langfuse host that was checked, once the configuration is valid.
        trace_id: Id of the test trace, when one was sent.
        error: The exception behind a failure (its traceback is shown with ``--verbose``).
    """

    exit_code: ExitCode
    verdict: str
    details: tuple[str, ...] = ()
    project: str | None = None
    base_url: str | None = None
    trace_id: str | None = None
    error: BaseException | None = field(default=None, repr=False, compare=False)

    def lines(self) -> list[str]:
        """The verdict followed by its indented details, as printed by ``test_langfuse``."""
        return [self.verdict, *(f"  {line}" for line in self.details)]


class _DeadlineError(TimeoutError):
    """A blocking SDK call did not return in time."""


def check(env: Mapping[str, str] | None = None) -> CheckResult:
    """Check the Langfuse keys and host, then send one test trace; never raises.

    Args:
        env: Variables to read (default: ``os.environ``). The SDK itself still reads
            its optional settings (e.g. ``LANGFUSE_SAMPLE_RATE``) from ``os.environ``.

    Returns:
        The verdict, with an exit code per failure class (see :class:`ExitCode`).
    """
    return _verdict(_check, os.environ if env is None else env)


def _verdict(run: Callable[[Mapping[str, str]], CheckResult], env: Mapping[str, str]) -> CheckResult:
    """``run(env)`` as a verdict with the secret key redacted; an exception is a verdict too."""
    secret = (env.get(LANGFUSE_SECRET_KEY) or "").strip()
    try:
        result = run(env)
    except Exception as exc:  # noqa: BLE001 - a check tool reports every failure as a verdict
        result = CheckResult(
            ExitCode.UNEXPECTED,
            f"UNEXPECTED ERROR: {type(exc).__name__}: {exc}",
            ("This is a bug in test_langfuse; run it with --verbose for the traceback.",),
            error=exc,
        )
    return _redact_result(result, secret)


def _check(env: Mapping[str, str]) -> CheckResult:
    public_key = (env.get(LANGFUSE_PUBLIC_KEY) or "").strip()
    secret_key = (env.get(LANGFUSE_SECRET_KEY) or "").strip()
    keys = ((LANGFUSE_PUBLIC_KEY, public_key), (LANGFUSE_SECRET_KEY, secret_key))
    missing = [name for name, value in keys if not value]
    if missing:
        return CheckResult(
            ExitCode.CONFIG,
            f"MISSING VARIABLES: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set.",
            (
                "Copy the key pair of your Langfuse project (Settings > API Keys) into ./.env (see .env.example)",
                f"or the environment, and set {LANGFUSE_BASE_URL} to where the project lives:",
                *_REGIONS,
            ),
        )
    try:
        settings = TracingSettings.from_env(env)
        if not settings.enabled:  # apply the key checks the bot applies once tracing is on
            TracingSettings.from_env({**env, ENABLE_TRACING: "true"})
    except SettingsError as exc:
        return CheckResult(ExitCode.CONFIG, f"INVALID CONFIGURATION: {exc}", error=exc)

    host_var = next((n for n in (LANGFUSE_BASE_URL, LANGFUSE_HOST) if (env.get(n) or "").strip()), None)
    host = f"{settings.base_url} ({f'from {host_var}' if host_var else f'default; set {LANGFUSE_BASE_URL} to change'})"
    timeout_s = settings.timeout_s
    # The very client the bot builds: the tracer's, with tracing forced on for the check.
    # The spool is off: a test trace that did not get through must fail the check, not wait in the spool.
    client = VoiceTracer(dataclasses.replace(settings, enabled=True, spool_dir=None), prices=PriceTable(())).client
    if client is None:  # unreachable: tracing is on
        raise RuntimeError("the tracer built no Langfuse client")

    try:
        projects = _call_with_deadline(
            lambda: client.api.projects.get(request_options={"timeout_in_seconds": timeout_s, "max_retries": 0}),
            timeout_s + _MARGIN_S,
        )
    except Exception as exc:  # noqa: BLE001 - every failure is classified below
        result = _auth_failure(exc, settings, host, host_var)
    else:
        if not projects.data:
            result = CheckResult(
                ExitCode.WRONG_KEYS,
                f"WRONG KEYS: Langfuse at {host} accepted the keys but they belong to no project.",
                ("Use the API keys of a project (project Settings > API Keys), not organization keys.",),
                base_url=settings.base_url,
            )
        else:
            result = _send_test_trace(client, settings, host, projects.data[0].name, projects.data[0].id)

    if not settings.enabled:
        result = _with_details(
            result,
            f"Note: {ENABLE_TRACING} is not true, so `uv run bot` sends no traces until you set {ENABLE_TRACING}=true.",
        )
    return result


def _send_test_trace(
    client: Langfuse, settings: TracingSettings, host: str, project: str, project_id: str
) -> CheckResult:
    endpoint = f"{settings.base_url}/api/public/otel/v1/traces"
    with _watch_otlp_exports() as watch:
        with propagate_attributes(trace_name=TEST_TRACE_NAME, tags=[TEST_TRACE_NAME]):
            span = client.start_observation(
                name=TEST_TRACE_NAME,
                as_type="span",
                input="Hello from test_langfuse",
                output="If you can read this, traces from this machine reach Langfuse.",
            )
        span.end()
        threading.Thread(target=watch.flush, args=(client,), name="test_langfuse-flush", daemon=True).start()
        outcome = watch.wait(span.id, settings.timeout_s + _MARGIN_S)
        flushed = watch.flushed

    found = (
        f"project: {project}",
        f"host:    {host}",
        f"keys:    {_describe_keys(settings)}",
        f"release: {settings.release} (from {settings.release_source})"
        if settings.release
        else f"release: none (set {LANGFUSE_RELEASE} to the agent's version to compare versions in Langfuse)",
    )
    if outcome is SpanExportResult.SUCCESS:
        return CheckResult(
            ExitCode.OK,
            f"OK: the keys belong to project '{project}' and Langfuse accepted the test trace.",
            (
                *found,
                f"trace:   {span.trace_id} (name '{TEST_TRACE_NAME}'): {settings.base_url} -> Tracing, or",
                f"         {settings.base_url}/project/{project_id}/traces/{span.trace_id} (may take a few seconds)",
            ),
            project=project,
            base_url=settings.base_url,
            trace_id=span.trace_id,
        )
    if outcome is None and flushed:
        sdk_vars = ", ".join(f"{n}={os.environ[n]}" for n in _SDK_EXPORT_VARS if os.environ.get(n, "").strip())
        hints = [
            "The SDK flushed without exporting the test span, so the bot's spans would not be sent either.",
            f"Check {' and '.join(_SDK_EXPORT_VARS)} (set here: {sdk_vars or 'neither'}).",
        ]
    else:
        if outcome is None:
            why = f"no result within {settings.timeout_s + _MARGIN_S:g} s ({LANGFUSE_TIMEOUT}={settings.timeout_s})"
        else:
            why = f"the exporter reported: {watch.failure or 'export failed'}"
        hints = [f"POST {endpoint} failed; {why}."]
        if re.search(r"\bcode: 40[13]\b", watch.failure or ""):
            hints.extend(_BASIC_AUTH)
        hints.append("A proxy or firewall may block that path; the bot's traces would be lost the same way.")
    return CheckResult(
        ExitCode.TRACE_NOT_DELIVERED,
        f"TRACE NOT DELIVERED: the keys work (project '{project}'), but the test trace did not reach Langfuse.",
        (*found, *hints),
        project=project,
        base_url=settings.base_url,
        trace_id=span.trace_id,
    )


def _auth_failure(exc: Exception, settings: TracingSettings, host: str, host_var: str | None) -> CheckResult:
    var = host_var or LANGFUSE_BASE_URL
    url = f"{settings.base_url}/api/public/projects"
    fix_host = f"Check {var}: the host only, e.g. https://cloud.langfuse.com or http://localhost:3000."
    status = exc.status_code if isinstance(exc, ApiError) else None
    if status in (401, 403):
        assert isinstance(exc, ApiError)
        message = exc.body.get("message") if isinstance(exc.body, dict) else None
        answer = f'HTTP {status} "{message}"' if message else f"HTTP {status}"
        return CheckResult(
            ExitCode.WRONG_KEYS,
            f"WRONG KEYS: Langfuse at {host} rejected the key pair: {answer}.",
            (
                f"keys: {_describe_keys(settings)}",
                f"Check that {LANGFUSE_PUBLIC_KEY} and {LANGFUSE_SECRET_KEY} are one pair of the same project",
                f"(Settings > API Keys) and that {var} is where that project lives: keys only work in the",
                "region that issued them:",
                *_REGIONS,
                *_BASIC_AUTH,
            ),
            base_url=settings.base_url,
            error=exc,
        )
    if status == 404 or (status is not None and 200 <= status < 300) or isinstance(exc, pydantic.ValidationError):
        answer = f"HTTP {status}" if status is not None else "JSON of another shape"
        return CheckResult(
            ExitCode.UNREACHABLE,
            f"NOT A LANGFUSE SERVER: GET {url} answered {answer}; this does not look like a Langfuse server.",
            (fix_host, "Do not include a path such as /api/public/otel; the SDK adds it."),
            base_url=settings.base_url,
            error=exc,
        )
    if status is not None:
        return CheckResult(
            ExitCode.UNREACHABLE,
            f"UNREACHABLE: GET {url} answered HTTP {status}; the Langfuse server is not working right now.",
            (fix_host, "Self-hosted: check the server's logs and http(s)://<host>/api/public/health."),
            base_url=settings.base_url,
            error=exc,
        )
    if isinstance(exc, _DeadlineError | httpx.TimeoutException):
        why = f"no answer within {settings.timeout_s} s ({LANGFUSE_TIMEOUT}={settings.timeout_s})"
    elif isinstance(exc, httpx.HTTPError):
        why = _network_reason(exc)
    else:
        why = f"{type(exc).__name__}: {exc}"
    hints = [fix_host, "Is the server running and reachable from this machine (VPN, proxy, firewall)?"]
    if re.match(r"^https?://(localhost|127\.0\.0\.1)(:\d+)?$", settings.base_url):
        hints.append(
            "Local Langfuse: start it with `docker compose -f server/docker-compose.yml up -d` (server/README.md)."
        )
    return CheckResult(
        ExitCode.UNREACHABLE,
        f"UNREACHABLE: cannot reach Langfuse at {host}: {why}.",
        tuple(hints),
        base_url=settings.base_url,
        error=exc,
    )


def _network_reason(exc: BaseException) -> str:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain).lower()
    if any(isinstance(e, socket.gaierror) for e in chain) or "name or service" in text or "nodename" in text:
        return "the host name does not resolve (DNS)"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return "connection refused (nothing listens on that port)"
    if any(isinstance(e, ssl.SSLError) for e in chain) or "ssl" in text or "certificate" in text:
        return f"TLS error ({exc}); http vs https?"
    return f"{type(exc).__name__}: {exc}"


def _describe_keys(settings: TracingSettings) -> str:
    return f"{settings.public_key} / secret set ({len(settings.secret_key or '')} characters, not shown)"


class _ExportWatch:
    """Results the real OTLP exporter returned, per exported span id, and its error messages."""

    def __init__(self) -> None:
        self._results: dict[str, SpanExportResult] = {}
        self._messages: list[str] = []
        self._changed = threading.Condition()
        self.flushed = False

    def flush(self, client: Langfuse) -> None:
        """Flush ``client`` (blocking), then wake :meth:`wait`: whatever was exported has been recorded."""
        try:
            client.flush()
        finally:
            with self._changed:
                self.flushed = True
                self._changed.notify_all()

    @property
    def failure(self) -> str | None:
        """The exporter's last warning or error message, if any."""
        with self._changed:
            return self._messages[-1] if self._messages else None

    def record(self, spans: Sequence[ReadableSpan], result: SpanExportResult) -> None:
        with self._changed:
            for span in spans:
                if span.context is not None:
                    self._results[format(span.context.span_id, "016x")] = result
            self._changed.notify_all()

    def note(self, message: str) -> None:
        with self._changed:
            self._messages.append(message)

    def wait(self, span_id: str, timeout_s: float) -> SpanExportResult | None:
        """The export result of ``span_id``; None if it was not exported by the flush or within ``timeout_s``."""
        with self._changed:
            self._changed.wait_for(lambda: span_id in self._results or self.flushed, timeout_s)
            return self._results.get(span_id)


class _NoteHandler(logging.Handler):
    def __init__(self, watch: _ExportWatch) -> None:
        # Every level: the tracer's exporter explains failures itself and demotes the OTLP exporter's
        # own records (all of them warnings or errors) to DEBUG.
        super().__init__(logging.NOTSET)
        self._watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        self._watch.note(record.getMessage())


@contextmanager
def _watch_otlp_exports() -> Iterator[_ExportWatch]:
    """Observe what the real ``OTLPSpanExporter`` returns, without replacing or reconfiguring it.

    ``Langfuse.flush()`` returns nothing and OpenTelemetry's batch processor discards the
    exporter's result, so the only place the outcome of an export exists is the return value
    of ``OTLPSpanExporter.export``; this wraps that method (for every instance, for the
    duration of the block) and records the result per span. The exporter's own failure log
    (e.g. ``code: 401, reason: Unauthorized``) is captured to explain a failure.
    """
    watch = _ExportWatch()
    original = OTLPSpanExporter.export

    @functools.wraps(original)
    def export(self: OTLPSpanExporter, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = original(self, spans)
        watch.record(spans, result)
        return result

    handler = _NoteHandler(watch)
    exporter_logger = logging.getLogger(_EXPORTER_LOGGER)
    exporter_logger.addHandler(handler)
    OTLPSpanExporter.export = export  # type: ignore[method-assign]
    try:
        yield watch
    finally:
        OTLPSpanExporter.export = original  # type: ignore[method-assign]
        exporter_logger.removeHandler(handler)


def _call_with_deadline(fn: Callable[[], T], timeout_s: float) -> T:
    """Run ``fn`` in a daemon thread and give up after ``timeout_s`` (the thread cannot block exit)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="test_langfuse-auth", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise _DeadlineError(f"no answer within {timeout_s:g} s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def _with_details(result: CheckResult, *lines: str) -> CheckResult:
    return CheckResult(
        result.exit_code,
        result.verdict,
        (*result.details, *lines),
        result.project,
        result.base_url,
        result.trace_id,
        result.error,
    )


def _redact_result(result: CheckResult, secret: str) -> CheckResult:
    return CheckResult(
        result.exit_code,
        redact(result.verdict, secret),
        tuple(redact(line, secret) for line in result.details),
        result.project,
        result.base_url,
        result.trace_id,
        result.error,
    )


class _RedactingFormatter(logging.Formatter):
    def __init__(self, secret: str) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self._secret = secret

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secret)


def _configure_logging(verbose: bool, secret: str) -> None:
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_RedactingFormatter(secret))
        logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
        return
    # The verdict says everything; keep the SDK's and the exporter's own log lines off the console.
    for name in ("langfuse", "opentelemetry", "httpx"):
        quiet = logging.getLogger(name)
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False


def replay(env: Mapping[str, str] | None = None) -> CheckResult:
    """Re-send the spool of the configured Langfuse host; never raises.

    Args:
        env: Variables to read (default: ``os.environ``).

    Returns:
        The verdict: how many files and spans were sent, kept and failed, with an exit code
        (see the module docstring).
    """
    return _verdict(_replay, os.environ if env is None else env)


def _replay(env: Mapping[str, str]) -> CheckResult:
    try:
        settings = TracingSettings.from_env({**env, ENABLE_TRACING: "true"})
    except SettingsError as exc:
        return CheckResult(ExitCode.CONFIG, f"INVALID CONFIGURATION: {exc}", error=exc)
    if settings.spool_dir is None:
        return CheckResult(
            ExitCode.OK, f"NOTHING TO REPLAY: spooling is off ({LANGFUSE_SPOOL_DIR}={env.get(LANGFUSE_SPOOL_DIR)})."
        )
    report = replay_spool(settings)
    assert report is not None  # spooling is on
    others = spooled_for_other_hosts(settings)
    details = [
        f"spool:   {report.directory}",
        f"sent:    {report.sent_spans} spans and {report.sent_scores} scores in {report.sent_files} files (deleted), "
        f"in {report.seconds:.1f} s",
        f"kept:    {report.kept_files} files (not sent; tried again next time)",
        f"failed:  {report.failed_files} files (Langfuse refused them; kept)",
    ]
    if others:
        listed = ", ".join(f"{name} ({count} files)" for name, count in sorted(others.items()))
        details.append(f"Other hosts' spools, sent only with {LANGFUSE_BASE_URL} set to that host: {listed}.")
    host = settings.base_url
    outcome = report.outcome
    if outcome is None and not report.failed_files:
        verdict = (
            f"REPLAY OK: Langfuse at {host} accepted all {report.sent_files} spooled files "
            f"({report.sent_spans} spans, {report.sent_scores} scores)."
            if report.sent_files
            else f"NOTHING TO REPLAY: the spool of {host} is empty."
        )
        return CheckResult(ExitCode.OK, verdict, tuple(details), base_url=host)
    if outcome is Outcome.AUTH:
        code = ExitCode.WRONG_KEYS
        why = f"Langfuse rejected the keys (HTTP {report.status}); run `uv run test_langfuse` to see which fix applies."
    elif outcome is not None:
        code = ExitCode.UNREACHABLE
        why = {
            Outcome.REFUSED: "cannot reach Langfuse (connection refused or no route)",
            Outcome.TIMEOUT: f"no answer within {settings.timeout_s} s ({LANGFUSE_TIMEOUT})",
            Outcome.SERVER_ERROR: f"Langfuse answered HTTP {report.status} (a server error)",
            Outcome.RATE_LIMITED: "Langfuse answered HTTP 429 (too many requests)",
        }.get(outcome, f"{outcome.value}")
        why += "; the files are kept, try again later."
    else:
        code = ExitCode.TRACE_NOT_DELIVERED
        why = (
            f"Langfuse refused {report.failed_files} files for good (HTTP {report.status}); they are kept. "
            "Check the host with `uv run test_langfuse`."
        )
    verdict = (
        f"REPLAY INCOMPLETE: sent {report.sent_spans} spans and {report.sent_scores} scores "
        f"({report.sent_files} files) to {host}; {report.kept_files + report.failed_files} files not sent: {why}"
    )
    return CheckResult(code, verdict, tuple(details), base_url=host)


def _parser() -> argparse.ArgumentParser:
    codes = exit_codes(
        (
            (ExitCode.OK, "OK: keys accepted and the test trace delivered"),
            (ExitCode.UNEXPECTED, "unexpected error in the check itself (see --verbose)"),
            (ExitCode.CONFIG, "missing or invalid configuration"),
            (ExitCode.WRONG_KEYS, "wrong keys (HTTP 401/403): key pair or region/host"),
            (ExitCode.UNREACHABLE, "host unreachable, timed out, or not a Langfuse server"),
            (ExitCode.TRACE_NOT_DELIVERED, "keys OK but the test trace could not be delivered"),
        )
    )
    return argparse.ArgumentParser(
        prog="test_langfuse",
        description=(
            "Check the Langfuse configuration the bot uses, then send one test trace.\n"
            f"Reads {LANGFUSE_PUBLIC_KEY}, {LANGFUSE_SECRET_KEY}, {LANGFUSE_BASE_URL} (or {LANGFUSE_HOST})\n"
            f"and {LANGFUSE_TIMEOUT} from the environment and ./.env (the environment wins)."
        ),
        epilog=(
            f"{codes}\n\nwith --replay: 0 every spooled file sent (or none to send), 3 wrong keys,\n"
            "4 unreachable, timed out, HTTP 5xx or 429, 5 Langfuse refused some files; files not sent are kept"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check from the command line; returns the exit code.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = _parser()
    parser.add_argument("-v", "--verbose", action="store_true", help="also show SDK logs and tracebacks")
    parser.add_argument(
        "--replay",
        action="store_true",
        help="re-send the spooled traces (LANGFUSE_SPOOL_DIR) instead, and delete what Langfuse accepted",
    )
    parser.add_argument(
        "--prices",
        action="store_true",
        help="list the price table (built-in + PRICING_FILE) with each price's source and date; marks stale ones",
    )
    args = parser.parse_args(argv)

    loaded = load_local_dotenv()
    dotenv = Path.cwd() / DOTENV
    if args.prices:
        from app.prices import price_listing

        code, lines = price_listing(os.environ)
        print("\n".join(lines))
        return code
    secret = (os.environ.get(LANGFUSE_SECRET_KEY) or "").strip()
    _configure_logging(args.verbose, secret)
    if not args.verbose:
        logger.disable("pipecat_langfuse")  # the verdict explains failures; the exporter's warnings would repeat it

    result = replay(os.environ) if args.replay else check(os.environ)
    for line in result.lines():
        print(line)
    if args.verbose:
        print(f"  config: environment{f' + {dotenv}' if loaded else f' (no .env in {Path.cwd()})'}")
        if result.error is not None:
            trace = "".join(traceback.format_exception(result.error))
            print(redact(trace, secret), file=sys.stderr, end="")
    elif result.exit_code is ExitCode.CONFIG and not loaded:
        print(f"  (no .env file in {Path.cwd()}; only the environment was read)")
    return int(result.exit_code)


if __name__ == "__main__":
    raise SystemExit(main())
