"""Scores through a real HTTP server on 127.0.0.1: sent exactly, kept when Langfuse fails, replayed, never blocking."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from langfuse import Langfuse
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from pipecat_langfuse._langfuse import replay_spool
from pipecat_langfuse._scores import (
    SCORE_FAILURE_PREFIX,
    SCORE_ID_NAMESPACE,
    ScoreCounts,
    ScoreSender,
    make_score,
)
from pipecat_langfuse._spool import SCORES_SUFFIX, Spool, destination_folder, reset_warnings
from pipecat_langfuse.settings import TracingSettings
from tests.support.langfuse_server import SCORES_PATH, LocalLangfuse, StartLocalLangfuse
from tests.support.logs import captured_logs

TRACE_ID = "0123456789abcdef0123456789abcdef"
OBSERVATION_ID = "0123456789abcdef"
MOMENT = datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
SDK_VERSION = "5.0.4"


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    reset_warnings()
    yield
    reset_warnings()


def settings_for(server: LocalLangfuse, tmp_path: Path, **overrides: Any) -> TracingSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "public_key": server.public_key,
        "secret_key": server.secret_key,
        "base_url": server.url,
        "timeout_s": 1,
        "spool_dir": tmp_path / "spool",
        **overrides,
    }
    return TracingSettings(**values)


def spool_of(settings: TracingSettings) -> Spool:
    assert settings.spool_dir is not None
    return Spool(settings.spool_dir / destination_folder(settings.base_url), 10_000_000)


def turn_score(turn: int, value: float = 812.5) -> dict[str, Any]:
    return make_score(
        name=f"turn_{turn}_latency_ms",
        value=value,
        trace_id=TRACE_ID,
        observation_id=OBSERVATION_ID,
        data_type="NUMERIC",
        timestamp=MOMENT,
    )


@pytest.fixture
def sender_of() -> Iterator[Any]:
    senders: list[ScoreSender] = []

    def make(settings: TracingSettings, **kwargs: Any) -> ScoreSender:
        sender = ScoreSender(settings, **kwargs)
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        sender.close(timeout_s=0.1)


def turn_3_latency(timestamp: datetime) -> dict[str, Any]:
    """One score with every field set."""
    return make_score(
        name="voice_to_voice_ms",
        value=640,
        trace_id=TRACE_ID,
        observation_id=OBSERVATION_ID,
        data_type="NUMERIC",
        comment="turn 3",
        metadata={"turn": 3},
        environment="production",
        timestamp=timestamp,
    )


def test_make_score_is_the_sdk_body_with_a_deterministic_id() -> None:
    score = turn_3_latency(datetime(2025, 5, 6, 7, 8, 9, 123456))  # naive: UTC
    assert score == {
        "id": str(uuid.uuid5(SCORE_ID_NAMESPACE, f"{TRACE_ID}/{OBSERVATION_ID}/voice_to_voice_ms")),
        "traceId": TRACE_ID,
        "observationId": OBSERVATION_ID,
        "name": "voice_to_voice_ms",
        "value": 640.0,
        "comment": "turn 3",
        "environment": "production",
        "dataType": "NUMERIC",
        "timestamp": "2025-05-06T07:08:09.123456Z",
        "metadata": {"turn": 3},
    }
    assert type(score["value"]) is float

    boolean = make_score(
        name="interrupted",
        value=True,
        trace_id=TRACE_ID,
        data_type="BOOLEAN",
        timestamp=datetime(2025, 5, 6, 9, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    assert boolean == {
        "id": str(uuid.uuid5(SCORE_ID_NAMESPACE, f"{TRACE_ID}//interrupted")),
        "traceId": TRACE_ID,
        "name": "interrupted",
        "value": 1.0,
        "dataType": "BOOLEAN",
        "timestamp": "2025-05-06T09:00:00+02:00",
    }
    again = make_score(name="interrupted", value=False, trace_id=TRACE_ID, data_type="BOOLEAN")
    assert again["id"] == boolean["id"]
    assert turn_score(1)["id"] != turn_score(2)["id"]
    with pytest.raises(ValueError, match="finite number"):
        make_score(name="x", value=float("nan"), trace_id=TRACE_ID, data_type="NUMERIC")


def test_the_sdk_sends_the_same_body_and_headers(local_langfuse: StartLocalLangfuse, tmp_path: Path) -> None:
    server = local_langfuse(public_key="pk-lf-scores-sdk")
    ours = turn_3_latency(MOMENT)
    client = Langfuse(
        public_key=server.public_key,
        secret_key=server.secret_key,
        base_url=server.url,
        tracer_provider=TracerProvider(),
    )
    try:
        client.create_score(
            name="voice_to_voice_ms",
            value=640,
            trace_id=TRACE_ID,
            observation_id=OBSERVATION_ID,
            score_id=ours["id"],
            data_type="NUMERIC",
            comment="turn 3",
            metadata={"turn": 3},
            environment="production",
            timestamp=MOMENT,
        )
        client.flush()
    finally:
        client.shutdown()
    (sdk_score,) = server.wait_for_scores(lambda scores: len(scores) == 1, timeout_s=5)
    (sdk_request,) = server.requests_to(SCORES_PATH)

    sender = ScoreSender(settings_for(server, tmp_path))
    sender.add(ours)
    assert sender.flush(5)
    sender.close()
    assert server.scores == [sdk_score, ours]
    assert json.dumps(ours) == json.dumps(sdk_score)  # same keys, same order
    ours_request = server.requests_to(SCORES_PATH)[1]
    for header in ("authorization", "x-langfuse-sdk-name", "x-langfuse-sdk-version", "x-langfuse-public-key"):
        assert ours_request.headers[header] == sdk_request.headers[header], header


def test_scores_are_sent_exactly_with_basic_auth(
    local_langfuse: StartLocalLangfuse, tmp_path: Path, sender_of: Any
) -> None:
    server = local_langfuse()
    settings = settings_for(server, tmp_path)
    sender = sender_of(settings)
    scores = [turn_score(1), turn_score(2, 1020.0), turn_score(3, 455.25)]
    for score in scores:
        sender.add(score)
    assert sender.flush(5)

    assert server.scores == scores
    (request,) = server.requests_to(SCORES_PATH)
    assert request.method == "POST"
    expected_auth = "Basic " + base64.b64encode(f"{server.public_key}:{server.secret_key}".encode()).decode()
    assert request.headers["authorization"] == expected_auth
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-langfuse-sdk-name"] == "python"
    assert request.headers["x-langfuse-sdk-version"] == SDK_VERSION
    assert request.headers["x-langfuse-public-key"] == server.public_key
    assert sender.counts() == ScoreCounts(sent=3)
    assert spool_of(settings).files() == []


def test_host_down_spools_the_scores_then_replay_sends_them_and_deletes_the_file(
    local_langfuse: StartLocalLangfuse, tmp_path: Path, sender_of: Any
) -> None:
    server = local_langfuse()
    settings = settings_for(server, tmp_path)
    server.go_down()
    sender = sender_of(settings)
    scores = [turn_score(1), turn_score(2)]
    with captured_logs() as warnings, captured_logs("DEBUG") as debug:
        for score in scores:
            sender.add(score)
        started = time.monotonic()
        assert sender.flush(5)
    assert time.monotonic() - started < 1.0
    assert sender.counts() == ScoreCounts(spooled=2)
    (path,) = spool_of(settings).files()
    assert path.name.endswith(SCORES_SUFFIX)
    assert json.loads(path.read_bytes()) == scores
    # The host fails the call's spans the same way, and their warning explains it: scores say it at DEBUG.
    assert warnings == []
    logs = [m for m in debug if m.startswith(SCORE_FAILURE_PREFIX)]
    assert len(logs) == 1
    assert "cannot be reached (connection refused or no route)" in logs[0]
    assert "its scores are kept in the spool" in logs[0]

    server.come_back()
    report = replay_spool(settings)
    assert report is not None
    assert (report.sent_files, report.sent_scores, report.sent_spans) == (1, 2, 0)
    assert (report.failed_files, report.kept_files, report.outcome) == (0, 0, None)
    assert server.scores == scores
    assert spool_of(settings).files() == []


def test_replay_sends_span_and_score_files_each_to_its_endpoint_oldest_first(
    local_langfuse: StartLocalLangfuse, tmp_path: Path
) -> None:
    server = local_langfuse()
    settings = settings_for(server, tmp_path)
    spool = spool_of(settings)
    tracer = TracerProvider().get_tracer("langfuse-sdk")
    span = tracer.start_span("kept-span")
    span.end()
    spool.write(encode_spans([cast(ReadableSpan, span)]).SerializeToString())  # an ended SDK span
    scores = [turn_score(1)]
    spool.write(json.dumps(scores).encode(), SCORES_SUFFIX)

    report = replay_spool(settings)
    assert report is not None
    assert (report.sent_files, report.sent_spans, report.sent_scores, report.kept_files) == (2, 1, 1, 0)
    assert [r.path for r in server.requests] == ["/api/public/otel/v1/traces", SCORES_PATH]
    assert [s.name for s in server.spans] == ["kept-span"]
    assert server.scores == scores
    score_request = server.requests_to(SCORES_PATH)[0]
    assert score_request.headers["content-type"] == "application/json"
    assert "x-langfuse-ingestion-version" not in score_request.headers
    assert "content-encoding" not in score_request.headers
    assert spool.files() == []
    assert list(spool.directory.iterdir()) == []


def test_rejected_keys_spool_with_one_explanation_and_pause_sending(
    local_langfuse: StartLocalLangfuse, tmp_path: Path, sender_of: Any
) -> None:
    server = local_langfuse()
    wrong_secret = "sk-lf-wrong-secret-4242"
    settings = settings_for(server, tmp_path, secret_key=wrong_secret)
    sender = sender_of(settings)
    with captured_logs("DEBUG") as logs:
        sender.add(turn_score(1))
        assert sender.flush(5)
        sender.add(turn_score(2))
        assert sender.flush(5)

    assert sender.counts() == ScoreCounts(spooled=2)
    assert len(server.requests_to(SCORES_PATH)) == 1  # the second batch went straight to the spool
    assert sender.retry_pause_s() > 290
    assert [json.loads(p.read_bytes()) for p in spool_of(settings).files()] == [[turn_score(1)], [turn_score(2)]]
    with captured_logs() as warnings:
        sender.add(turn_score(3))
        assert sender.flush(5)
    assert warnings == []
    explanations = [m for m in logs if m.startswith(SCORE_FAILURE_PREFIX)]
    assert len(explanations) == 1
    assert "rejected the keys (HTTP 401)" in explanations[0]
    assert "Fix LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY" in explanations[0]
    assert not any(wrong_secret in message for message in logs)


def test_a_bad_request_is_dropped_and_counted(
    local_langfuse: StartLocalLangfuse, tmp_path: Path, sender_of: Any
) -> None:
    server = local_langfuse(scores_status=400)
    settings = settings_for(server, tmp_path)
    sender = sender_of(settings)
    with captured_logs() as logs:
        sender.add(turn_score(1))
        sender.add(turn_score(2))
        assert sender.flush(5)
    assert sender.counts() == ScoreCounts(dropped=2)
    assert spool_of(settings).files() == []
    assert sender.retry_pause_s() == 0
    assert len(logs) == 1
    assert "rejected a batch of 2 scores (HTTP 400); it was dropped" in logs[0]


def test_a_partly_rejected_batch_counts_the_rejected_scores_as_dropped(
    local_langfuse: StartLocalLangfuse, tmp_path: Path, sender_of: Any
) -> None:
    server = local_langfuse()
    sender = sender_of(settings_for(server, tmp_path))
    invalid = {**turn_score(2), "value": "fast"}  # NUMERIC with a string: Langfuse rejects it alone (207)
    with captured_logs() as logs:
        sender.add(turn_score(1))
        sender.add(invalid)
        assert sender.flush(5)
    assert server.scores == [turn_score(1)]
    assert sender.counts() == ScoreCounts(sent=1, dropped=1)
    assert len(logs) == 1
    assert "(HTTP 207) and rejected 1 of 2 scores" in logs[0]


def test_a_hanging_host_bounds_flush_and_never_blocks_add(
    local_langfuse: StartLocalLangfuse, tmp_path: Path, sender_of: Any
) -> None:
    server = local_langfuse(hang_s=2.0)
    settings = settings_for(server, tmp_path)
    sender = sender_of(settings)
    with captured_logs("DEBUG") as debug:
        sender.add(turn_score(1))
        started = time.monotonic()
        assert sender.flush(0.3) is False
        assert 0.3 <= time.monotonic() - started < 0.9  # before the 1 s request timeout

        started = time.monotonic()
        for turn in range(2, 52):
            sender.add(turn_score(turn))
        assert time.monotonic() - started < 0.5  # the request in flight (2 s) does not block add()
        assert sender.counts() == ScoreCounts(pending=51)

        assert sender.flush(3)  # one timeout (1 s), then the rest goes to the spool without a request
    assert sender.counts() == ScoreCounts(spooled=51)
    files = spool_of(settings).files()
    assert [len(json.loads(p.read_bytes())) for p in files] == [1, 50]
    logs = [m for m in debug if m.startswith(SCORE_FAILURE_PREFIX)]
    assert len(logs) == 1
    assert "did not answer within 1 s (LANGFUSE_TIMEOUT)" in logs[0]


def test_during_the_pause_a_batch_is_spooled_without_a_request(
    local_langfuse: StartLocalLangfuse, tmp_path: Path, sender_of: Any
) -> None:
    server = local_langfuse(scores_status=503, retry_after="30")
    settings = settings_for(server, tmp_path)
    sender = sender_of(settings)
    sender.add(turn_score(1))
    assert sender.flush(5)
    assert len(server.requests_to(SCORES_PATH)) == 1
    assert 28 < sender.retry_pause_s() <= 30

    server.scores_status = None  # healthy again, but the sender honours Retry-After
    sender.add(turn_score(2))
    started = time.monotonic()
    assert sender.flush(5)
    assert time.monotonic() - started < 0.5
    assert len(server.requests_to(SCORES_PATH)) == 1
    assert sender.counts() == ScoreCounts(spooled=2)
    assert [json.loads(p.read_bytes()) for p in spool_of(settings).files()] == [[turn_score(1)], [turn_score(2)]]


def test_queue_overflow_is_counted_and_warned_once(
    local_langfuse: StartLocalLangfuse, tmp_path: Path, sender_of: Any
) -> None:
    server = local_langfuse()
    sender = sender_of(settings_for(server, tmp_path), max_queued=3, linger_s=30.0)
    with captured_logs() as logs:
        for turn in range(1, 6):
            sender.add(turn_score(turn))
    assert sender.counts() == ScoreCounts(dropped=2, pending=3)
    assert len(logs) == 1
    assert "3 scores are already waiting to be sent" in logs[0]
    assert sender.flush(5)
    assert server.scores == [turn_score(1), turn_score(2), turn_score(3)]
    assert sender.counts() == ScoreCounts(sent=3, dropped=2)


def test_score_files_share_the_spool_bound_and_evict_the_oldest(
    local_langfuse: StartLocalLangfuse, tmp_path: Path, sender_of: Any
) -> None:
    server = local_langfuse()
    size = len(json.dumps([turn_score(1)], separators=(",", ":")))
    settings = settings_for(server, tmp_path, spool_max_mb=(size * 1.5) / 1_000_000)  # room for one file
    server.go_down()
    sender = sender_of(settings)
    with captured_logs() as logs:
        sender.add(turn_score(1))
        assert sender.flush(5)
        sender.add(turn_score(2))
        assert sender.flush(5)
    assert sender.counts() == ScoreCounts(spooled=2, evicted=1)
    assert [json.loads(p.read_bytes()) for p in spool_of(settings).files()] == [[turn_score(2)]]
    assert any("deleted the oldest 1 file(s), 0 spans and 1 scores" in m for m in logs)


def test_add_never_raises(local_langfuse: StartLocalLangfuse, tmp_path: Path, sender_of: Any) -> None:
    server = local_langfuse()
    sender = sender_of(settings_for(server, tmp_path))
    sender.add({**turn_score(1), "value": float("nan")})  # not JSON: dropped by the sender thread
    sender.add({**turn_score(2), "metadata": {"at": object()}})  # encoded with str()
    sender.add(cast(dict[str, Any], None))  # not a score at all: Langfuse rejects it alone
    assert sender.flush(5)
    assert [s["name"] for s in server.scores] == ["turn_2_latency_ms"]
    assert sender.counts() == ScoreCounts(sent=1, dropped=2)
    sender.close()
    sender.add(turn_score(3))  # after close: dropped
    assert sender.counts() == ScoreCounts(sent=1, dropped=3)
