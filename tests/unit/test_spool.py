"""The spooling exporter against a scripted inner exporter: what is sent, kept, dropped and counted."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import requests
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from pipecat_langfuse._spool import (
    AUTH_PAUSE_S,
    FAILURE_PREFIX,
    MAX_RETRY_AFTER_S,
    Attempt,
    ExportLedger,
    Outcome,
    RecordingSession,
    Spool,
    SpoolingSpanExporter,
    classify,
    destination_folder,
    parse_retry_after,
    reset_warnings,
    spans_per_trace,
)
from pipecat_langfuse.settings import (
    DEFAULT_SPOOL_MAX_MB,
    SettingsError,
    TracingSettings,
    default_spool_dir,
)
from tests.support.langfuse_server import decode_export
from tests.support.logs import captured_logs

REFUSED = Attempt(error=requests.ConnectionError("Connection refused"))
TIMED_OUT = Attempt(error=requests.ReadTimeout("read timed out"))


class ScriptedInner(SpanExporter):
    """An inner exporter whose outcomes a test scripts: ``None`` is success, an ``Attempt`` a failure."""

    def __init__(self, session: ScriptedSession) -> None:
        self.session = session
        self.outcomes: list[Attempt | None] = []
        self.calls: list[list[str]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls.append([span.name for span in spans])
        attempt = self.outcomes.pop(0) if self.outcomes else None
        self.session.last = attempt if attempt is not None else Attempt(status=200)
        return SpanExportResult.SUCCESS if attempt is None else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


class ScriptedSession(RecordingSession):
    def __init__(self) -> None:
        super().__init__()
        self.last: Attempt | None = None

    def take_attempt(self) -> Attempt | None:
        attempt, self.last = self.last, None
        return attempt


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    reset_warnings()
    yield
    reset_warnings()


def make_spans(*names: str, trace: str = "a") -> list[ReadableSpan]:
    tracer = TracerProvider().get_tracer("langfuse-sdk")
    spans = []
    root = tracer.start_span(f"{trace}-root")
    spans.append(root)
    for name in names:
        from opentelemetry import trace as otel_trace

        child = tracer.start_span(name, context=otel_trace.set_span_in_context(root))
        child.end()
        spans.append(child)
    root.end()
    return spans  # type: ignore[return-value]


def make_exporter(
    tmp_path: Path, *, max_bytes: int = 10_000_000, spool: bool = True
) -> tuple[SpoolingSpanExporter, ScriptedInner, Clock]:
    session = ScriptedSession()
    inner = ScriptedInner(session)
    clock = Clock()
    exporter = SpoolingSpanExporter(
        inner,
        session=session,
        spool=Spool(tmp_path / "host", max_bytes) if spool else None,
        base_url="http://langfuse.test",
        timeout_s=5,
        clock=clock,
    )
    return exporter, inner, clock


def trace_of(spans: Sequence[ReadableSpan]) -> int:
    assert spans[0].context is not None
    return spans[0].context.trace_id


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "host").glob("*.pb"))


def test_a_batch_langfuse_accepts_is_counted_as_sent_and_nothing_is_written(tmp_path: Path) -> None:
    exporter, inner, _ = make_exporter(tmp_path)
    spans = make_spans("stt", "llm")

    assert exporter.export(spans) is SpanExportResult.SUCCESS

    assert inner.calls == [["a-root", "stt", "llm"]]
    record = exporter.ledger.get(trace_of(spans))
    assert record is not None
    assert (record.sent, record.spooled, record.dropped) == (3, 0, 0)
    assert not (tmp_path / "host").exists()


def test_a_refused_batch_is_spooled_as_the_otlp_request_langfuse_would_have_got(tmp_path: Path) -> None:
    exporter, inner, _ = make_exporter(tmp_path)
    inner.outcomes = [REFUSED]
    spans = make_spans("stt", "llm", "tts")

    exporter.export(spans)

    (path,) = spool_files(tmp_path)
    decoded = decode_export(path.read_bytes())
    assert [(s.name, s.span_id) for s in decoded] == [
        (s.name, format(s.context.span_id, "016x")) for s in spans if s.context is not None
    ]
    assert spans_per_trace(path.read_bytes()) == {trace_of(spans): 4}
    record = exporter.ledger.get(trace_of(spans))
    assert record is not None
    assert (record.sent, record.spooled, record.dropped) == (0, 4, 0)


def test_after_a_failure_batches_go_straight_to_the_spool_until_the_backoff_ends(tmp_path: Path) -> None:
    exporter, inner, clock = make_exporter(tmp_path)
    inner.outcomes = [TIMED_OUT]
    exporter.export(make_spans("first"))
    assert exporter.retry_pause_s() == 2.0

    exporter.export(make_spans("second", trace="b"))  # paused: no request
    assert len(inner.calls) == 1
    assert len(spool_files(tmp_path)) == 2

    clock.now += 2.0
    exporter.export(make_spans("third", trace="c"))  # the pause is over: sent
    assert len(inner.calls) == 2
    assert len(spool_files(tmp_path)) == 2


def test_the_backoff_doubles_while_failures_repeat(tmp_path: Path) -> None:
    exporter, inner, clock = make_exporter(tmp_path)
    inner.outcomes = [REFUSED, REFUSED, REFUSED]
    pauses = []
    for _ in range(3):
        exporter.export(make_spans("x"))
        pauses.append(exporter.retry_pause_s())
        clock.now += pauses[-1]
    assert pauses == [2.0, 4.0, 8.0]


def test_a_429_pauses_sending_for_its_retry_after(tmp_path: Path) -> None:
    exporter, inner, clock = make_exporter(tmp_path)
    inner.outcomes = [Attempt(status=429, retry_after="30")]
    exporter.export(make_spans("x"))
    assert exporter.retry_pause_s() == 30.0

    clock.now += 29.5
    exporter.export(make_spans("y"))
    assert len(inner.calls) == 1
    clock.now += 0.5
    exporter.export(make_spans("z"))
    assert len(inner.calls) == 2
    assert len(spool_files(tmp_path)) == 2


def test_a_diverted_exporter_spools_everything_without_sending(tmp_path: Path) -> None:
    exporter, inner, clock = make_exporter(tmp_path)
    exporter.divert()
    clock.now += 10**9
    spans = make_spans("x")
    exporter.export(spans)
    assert inner.calls == []
    assert len(spool_files(tmp_path)) == 1
    record = exporter.ledger.get(trace_of(spans))
    assert record is not None
    assert (record.sent, record.spooled) == (0, 2)


def test_a_401_is_spooled_so_a_key_fix_recovers_it_and_pauses_for_long(tmp_path: Path) -> None:
    exporter, inner, _ = make_exporter(tmp_path)
    inner.outcomes = [Attempt(status=401)]
    spans = make_spans("x")
    exporter.export(spans)
    assert exporter.retry_pause_s() == AUTH_PAUSE_S
    assert len(spool_files(tmp_path)) == 1
    record = exporter.ledger.get(trace_of(spans))
    assert record is not None
    assert record.spooled == 2


def test_a_batch_rejected_for_good_is_dropped_and_counted(tmp_path: Path) -> None:
    exporter, inner, _ = make_exporter(tmp_path)
    inner.outcomes = [Attempt(status=400)]
    spans = make_spans("x")
    exporter.export(spans)
    assert spool_files(tmp_path) == []
    assert exporter.retry_pause_s() == 0.0
    record = exporter.ledger.get(trace_of(spans))
    assert record is not None
    assert (record.sent, record.spooled, record.dropped) == (0, 0, 2)


def test_without_a_spool_failed_batches_are_dropped_and_counted(tmp_path: Path) -> None:
    exporter, inner, _ = make_exporter(tmp_path, spool=False)
    inner.outcomes = [REFUSED]
    spans = make_spans("x", "y")
    with captured_logs() as logs:
        exporter.export(spans)
    record = exporter.ledger.get(trace_of(spans))
    assert record is not None
    assert (record.sent, record.spooled, record.dropped) == (0, 0, 3)
    assert len(logs) == 1
    assert "dropped (spooling is off: LANGFUSE_SPOOL_DIR)" in logs[0]


def test_each_failure_class_is_explained_once(tmp_path: Path) -> None:
    exporter, inner, clock = make_exporter(tmp_path)
    inner.outcomes = [REFUSED, REFUSED, Attempt(status=503), Attempt(status=503), REFUSED]
    with captured_logs() as logs:
        for _ in range(5):
            exporter.export(make_spans("x"))
            clock.now += 100
    assert len(logs) == 2
    assert all(message.startswith(FAILURE_PREFIX) for message in logs)
    assert "cannot be reached (connection refused or no route)" in logs[0]
    assert "answered HTTP 503 (a server error)" in logs[1]


def test_the_size_bound_evicts_the_oldest_files_and_counts_their_spans_as_dropped(tmp_path: Path) -> None:
    first, second = make_spans("one", trace="a"), make_spans("two", trace="b")
    probe, inner, _ = make_exporter(tmp_path / "probe")
    inner.outcomes = [REFUSED]
    probe.export(first)
    size = spool_files(tmp_path / "probe")[0].stat().st_size

    exporter, inner, _clock = make_exporter(tmp_path, max_bytes=size + size // 2)  # room for one file
    inner.outcomes = [REFUSED]
    exporter.export(first)
    with captured_logs() as logs:
        exporter.export(second)  # paused: straight to the spool, which evicts the first file

    (kept,) = spool_files(tmp_path)
    assert {s.name for s in decode_export(kept.read_bytes())} == {"two", "b-root"}
    a, b = exporter.ledger.get(trace_of(first)), exporter.ledger.get(trace_of(second))
    assert a is not None
    assert (a.spooled, a.dropped) == (0, 2)
    assert b is not None
    assert (b.spooled, b.dropped) == (2, 0)
    assert len(logs) == 1
    assert "deleted the oldest 1 file(s), 2 spans" in logs[0]


def test_a_batch_larger_than_the_bound_is_dropped(tmp_path: Path) -> None:
    exporter, inner, _ = make_exporter(tmp_path, max_bytes=50)
    inner.outcomes = [REFUSED]
    spans = make_spans("x" * 100)
    exporter.export(spans)
    assert spool_files(tmp_path) == []
    record = exporter.ledger.get(trace_of(spans))
    assert record is not None
    assert record.dropped == 2


def test_an_unwritable_spool_drops_with_one_warning_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    session = ScriptedSession()
    inner = ScriptedInner(session)
    inner.outcomes = [REFUSED]
    exporter = SpoolingSpanExporter(
        inner, session=session, spool=Spool(blocker / "host", 10_000), base_url="http://x", timeout_s=5
    )
    spans = make_spans("x")
    with captured_logs() as logs:
        exporter.export(spans)
        exporter.export(make_spans("y"))
    record = exporter.ledger.get(trace_of(spans))
    assert record is not None
    assert record.dropped == 2
    unwritable = [m for m in logs if "cannot write to" in m]
    assert len(unwritable) == 1
    assert "Set LANGFUSE_SPOOL_DIR to a writable folder" in unwritable[0]


def test_spool_files_are_unique_complete_and_in_write_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000)
    paths = [spool.write(bytes([i]))[0] for i in range(50)]
    assert len(set(paths)) == 50
    assert spool.files() == paths
    assert all(re.fullmatch(r"\d{20}-\d+-\d{6}\.pb", p.name) for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary file left


def test_the_ledger_forgets_the_oldest_traces_beyond_its_bound() -> None:
    ledger = ExportLedger(max_traces=3)
    for trace_id in range(5):
        ledger.add(trace_id, sent=1)
    assert [ledger.get(t) is not None for t in range(5)] == [False, False, True, True, True]
    ledger.add(9, dropped=1, known=True)
    assert ledger.get(9) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-5", 0.0),
        ("99999", MAX_RETRY_AFTER_S),
        ("Sun, 29 Nov 2026 10:00:30 GMT", 30.0),
        ("Sun, 29 Nov 2026 09:59:00 GMT", 0.0),
        ("soon", None),
        ("inf", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    now = 1795946400.0  # Sun, 29 Nov 2026 10:00:00 GMT
    assert parse_retry_after(value, now=now) == seconds


@pytest.mark.parametrize(
    ("attempt", "outcome"),
    [
        (None, Outcome.NOT_SENT),
        (REFUSED, Outcome.REFUSED),
        (TIMED_OUT, Outcome.TIMEOUT),
        (Attempt(status=204), Outcome.SENT),
        (Attempt(status=401), Outcome.AUTH),
        (Attempt(status=403), Outcome.AUTH),
        (Attempt(status=429), Outcome.RATE_LIMITED),
        (Attempt(status=408), Outcome.SERVER_ERROR),
        (Attempt(status=500), Outcome.SERVER_ERROR),
        (Attempt(status=503), Outcome.SERVER_ERROR),
        (Attempt(status=400), Outcome.REJECTED),
        (Attempt(status=404), Outcome.REJECTED),
    ],
)
def test_failures_are_classified_by_the_last_attempt(attempt: Attempt | None, outcome: Outcome) -> None:
    assert classify(attempt) is outcome


def test_each_host_has_its_own_spool_folder() -> None:
    assert destination_folder("https://cloud.langfuse.com") == "https_cloud.langfuse.com"
    assert destination_folder("http://127.0.0.1:3000/") == "http_127.0.0.1_3000"


def test_spool_settings_default_to_the_user_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    settings = TracingSettings.from_env({})
    assert settings.spool_dir == default_spool_dir() == tmp_path / "pipecat-langfuse" / "spool"
    assert settings.spool_max_mb == DEFAULT_SPOOL_MAX_MB == 100


@pytest.mark.parametrize("value", ["off", "OFF", "none", "false", "0"])
def test_spooling_can_be_turned_off(value: str) -> None:
    assert TracingSettings.from_env({"LANGFUSE_SPOOL_DIR": value}).spool_dir is None


def test_the_spool_folder_and_bound_can_be_set(tmp_path: Path) -> None:
    settings = TracingSettings.from_env({"LANGFUSE_SPOOL_DIR": str(tmp_path), "LANGFUSE_SPOOL_MAX_MB": "2.5"})
    assert (settings.spool_dir, settings.spool_max_mb) == (tmp_path, 2.5)


@pytest.mark.parametrize("value", ["lots", "0", "-1"])
def test_a_bad_spool_bound_is_an_error_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match=f"^LANGFUSE_SPOOL_MAX_MB='{value}'"):
        TracingSettings.from_env({"LANGFUSE_SPOOL_MAX_MB": value})
