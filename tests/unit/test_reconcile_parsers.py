"""Each parser of ``uv run reconcile`` against its sample in app/reconcile_samples/, with exact values."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from app.reconcile import ReconcileInputError, parse_cartesia, parse_deepgram, parse_openai, read_observations_file
from app.reconcile._types import ALL_MODELS, UNIT_CREDITS, BilledLine, Observation, Period
from pipecat_langfuse.pricing import (
    USAGE_INPUT,
    USAGE_INPUT_AUDIO_MS,
    USAGE_INPUT_CACHED_TOKENS,
    USAGE_INPUT_CHARACTERS,
    USAGE_OUTPUT,
    USAGE_OUTPUT_AUDIO_MS,
    USAGE_REQUESTS,
)

SAMPLES = Path(__file__).resolve().parents[2] / "app" / "reconcile_samples"
NOV_20 = Period(date(2026, 11, 20), date(2026, 11, 21))
NOV_21 = Period(date(2026, 11, 21), date(2026, 11, 22))


def test_deepgram_usage_breakdown() -> None:
    path = SAMPLES / "deepgram_usage_breakdown.json"
    export = parse_deepgram(path)
    assert export.provider == "deepgram"
    assert export.kinds is None
    assert export.notes == []
    assert export.lines == [
        BilledLine(
            "deepgram",
            "nova-3",
            NOV_20,
            {USAGE_INPUT_AUDIO_MS: Decimal("150001.200000"), USAGE_INPUT_CHARACTERS: Decimal(0)},
            sources=[str(path)],
        ),
        BilledLine(
            "deepgram",
            "nova-3",
            NOV_21,
            {USAGE_INPUT_AUDIO_MS: Decimal("119998.800000"), USAGE_INPUT_CHARACTERS: Decimal(0)},
            sources=[str(path)],
        ),
    ]


def test_deepgram_billing_breakdown() -> None:
    path = SAMPLES / "deepgram_billing_breakdown.json"
    export = parse_deepgram(path)
    assert export.lines == [
        BilledLine("deepgram", "nova-3", NOV_20, cost=Decimal("0.012"), sources=[str(path)]),
        BilledLine("deepgram", "nova-3", NOV_21, cost=Decimal("0.0096"), sources=[str(path)]),
    ]


def test_openai_completions_usage() -> None:
    path = SAMPLES / "openai_usage_completions.json"
    export = parse_openai(path)
    assert export.provider == "openai"
    assert export.kinds == frozenset({"llm"})  # completions only: STT/TTS generations are not compared to it
    assert export.lines == [
        BilledLine(
            "openai",
            "gpt-4.1-mini-2025-04-14",
            NOV_20,
            {USAGE_INPUT: Decimal(1800), USAGE_INPUT_CACHED_TOKENS: Decimal(200), USAGE_OUTPUT: Decimal(300)},
            calls=2,
            sources=[str(path)],
        )
    ]


def test_openai_costs() -> None:
    path = SAMPLES / "openai_costs.json"
    export = parse_openai(path)
    assert export.kinds is None
    assert export.lines == [
        BilledLine("openai", "gpt-4.1-mini-2025-04-14", NOV_20, cost=Decimal("0.00074"), sources=[str(path)]),
        BilledLine("openai", "gpt-4.1-mini-2025-04-14", NOV_20, cost=Decimal("0.00048"), sources=[str(path)]),
    ]


def test_openai_reads_a_list_of_pages_the_reference_result_key_and_skips_other_endpoints(tmp_path: Path) -> None:
    page = {
        "object": "page",
        "data": [
            {
                "object": "bucket",
                "start_time": 1795219200,
                "end_time": 1795305600,
                "result": [
                    {
                        "object": "organization.costs.result",
                        "amount": {"value": 1.5, "currency": "usd"},
                        "line_item": "o3",
                    },
                    {"object": "organization.usage.images.result", "images": 2},
                ],
            }
        ],
    }
    path = tmp_path / "pages.json"
    path.write_text(json.dumps([page, page]))
    export = parse_openai(path)
    assert export.lines == [BilledLine("openai", "o3", NOV_21, cost=Decimal("1.5"), sources=[str(path)])] * 2
    assert export.notes == [
        f"{path}: skipped 2 result(s) of type organization.usage.images.result "
        "(only completions usage and costs are read)."
    ]


def test_cartesia_credit_usage() -> None:
    path = SAMPLES / "cartesia_credits.json"
    export = parse_cartesia(path)
    assert export.provider == "cartesia"
    assert export.lines == [
        BilledLine("cartesia", ALL_MODELS, NOV_20, {UNIT_CREDITS: Decimal(1200)}, sources=[str(path)]),
        BilledLine("cartesia", ALL_MODELS, NOV_21, {UNIT_CREDITS: Decimal(0)}, sources=[str(path)]),
    ]
    priced = parse_cartesia(path, Decimal("0.00004"))
    assert [line.cost for line in priced.lines] == [Decimal("0.04800"), Decimal("0.00000")]


def test_langfuse_observations_dump() -> None:
    observations = read_observations_file(SAMPLES / "langfuse_observations.json")

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    assert observations == [  # the SPAN is left out; the simulated generation is kept (reconcile drops it)
        Observation(
            "a1b2c3d4e5f60001",
            "nova-3",
            at("2026-11-20T09:15:02.120"),
            {USAGE_INPUT_AUDIO_MS: 60000, USAGE_REQUESTS: 1},
            Decimal("0.0048"),
        ),
        Observation(
            "a1b2c3d4e5f60002",
            "nova-3",
            at("2026-11-20T09:16:02.120"),
            {USAGE_INPUT_AUDIO_MS: 90000, USAGE_REQUESTS: 1},
            Decimal("0.0072"),
        ),
        Observation(
            "a1b2c3d4e5f60003",
            "gpt-4.1-mini",
            at("2026-11-20T09:15:05"),
            {USAGE_INPUT: 1000, USAGE_INPUT_CACHED_TOKENS: 0, USAGE_OUTPUT: 200},
            Decimal("0.00072"),
        ),
        Observation(
            "a1b2c3d4e5f60004",
            "gpt-4.1-mini",
            at("2026-11-20T09:16:10"),
            {USAGE_INPUT: 800, USAGE_INPUT_CACHED_TOKENS: 200, USAGE_OUTPUT: 100},
            Decimal("0.0005"),
        ),
        Observation(
            "a1b2c3d4e5f60005",
            "sonic-3",
            at("2026-11-20T09:15:06.500"),
            {USAGE_INPUT_CHARACTERS: 500, USAGE_OUTPUT_AUDIO_MS: 31000},
            Decimal("0.0196"),
        ),
        Observation(
            "a1b2c3d4e5f60006",
            "sonic-3",
            at("2026-11-20T09:16:12"),
            {USAGE_INPUT_CHARACTERS: 700, USAGE_OUTPUT_AUDIO_MS: 43000},
            Decimal("0.02744"),
        ),
        Observation(
            "a1b2c3d4e5f60007",
            "nova-3",
            at("2026-11-21T14:02:00"),
            {USAGE_INPUT_AUDIO_MS: 120000, USAGE_REQUESTS: 1},
            Decimal("0.0096"),
        ),
        Observation(
            "a1b2c3d4e5f60008",
            "simulated/gpt-4.1-mini",
            at("2026-11-21T16:00:00"),
            {USAGE_INPUT: 500, USAGE_OUTPUT: 50},
            Decimal("0.00028"),
        ),
    ]


@pytest.mark.parametrize(
    ("parser", "document", "expected"),
    [
        (parse_deepgram, {"start": "2026-11-20", "end": "2026-11-20", "results": [
            {"hours": 1, "total_hours": 1, "agent_hours": 0, "tokens_in": 0, "tokens_out": 0, "tts_characters": 0,
             "requests": 1, "grouping": {"start": "2026-11-20", "end": "2026-11-20", "models": None}}]},
         "results[0]: grouping.models is empty, so the usage has no model. Export the usage breakdown with "
         "grouping=models."),
        (parse_deepgram, {"results": [{"dollars": 1, "grouping": {"start": "2026-11-20", "end": "2026-11-19",
                                                                  "line_item": "streaming::nova-3"}}]},
         "results[0]: the period's last day (2026-11-19) is before its first (2026-11-20)."),
        (parse_openai, {"data": [{"start_time": 1795132800, "end_time": 1795219200, "results": [
            {"object": "organization.usage.completions.result", "input_tokens": 1, "output_tokens": 1,
             "num_model_requests": 1, "model": None}]}]},
         "bucket 0, result 0: 'model' is empty, so the usage has no model. Export it with group_by=model."),
        (parse_openai, {"data": [{"start_time": 1795132800, "end_time": 1795219200, "results": [
            {"object": "organization.costs.result", "amount": {"value": 1, "currency": "eur"}, "line_item": "x"}]}]},
         "bucket 0, result 0: the amount is in 'eur'; only USD costs can be compared."),
        (parse_cartesia, {"data": [{"start_ts": "2026-11-20T00:00:00Z", "end_ts": "2026-11-21T00:00:00Z"}]},
         "data[0] has no 'credits'."),
        (parse_cartesia, [1, 2], "is not Cartesia's credit usage: expected an object with a 'data' list"),
    ],
)  # fmt: skip
def test_a_malformed_export_names_the_file_the_place_and_the_fix(
    tmp_path: Path, parser: object, document: object, expected: str
) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ReconcileInputError) as caught:
        parser(path)  # type: ignore[operator]
    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)


def test_a_file_that_is_not_json_or_missing_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text("date,model,cost\n")
    with pytest.raises(ReconcileInputError, match=r"usage\.csv is not JSON \(Expecting value at line 1\)"):
        parse_openai(path)
    with pytest.raises(ReconcileInputError, match=r"Cannot read .*missing\.json: No such file or directory"):
        parse_deepgram(tmp_path / "missing.json")
