"""``uv run reconcile`` end to end: hand-made invoices with one gap of each class, the samples, the spool
written by the real Langfuse SDK, and the Langfuse API (a local fake of the observations endpoint)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from app.reconcile import main, read_spool
from pipecat_langfuse import TracingSettings
from pipecat_langfuse._langfuse import build_client
from pipecat_langfuse._spool import destination_folder
from pipecat_langfuse.pricing import (
    USAGE_INPUT,
    USAGE_INPUT_AUDIO_MS,
    USAGE_INPUT_CACHED_TOKENS,
    USAGE_INPUT_CHARACTERS,
    USAGE_OUTPUT,
    USAGE_TOTAL,
)
from tests.support.observations_api import ObservationsApi, serve_observations

SAMPLES = Path(__file__).resolve().parents[2] / "app" / "reconcile_samples"
NOV_20 = 1795132800  # 2026-11-20T00:00:00Z
DAY_S = 86_400
PUBLIC_KEY = "pk-lf-reconcile"
SECRET_KEY = "sk-lf-reconcile-secret"


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """reconcile reads ./.env: run it where there is none."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def write(path: Path, document: Any) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def generation(id_: str, model: str, start: str, usage: dict[str, int], cost: float) -> dict[str, Any]:
    return {
        "id": id_,
        "type": "GENERATION",
        "startTime": start,
        "model": model,
        "usageDetails": usage,
        "costDetails": {USAGE_TOTAL: cost},
        "totalCost": cost,
    }


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def one_gap_of_each_class(tmp_path: Path) -> list[str]:
    """Invoices of 2026-11-20/21 against recorded generations, with exactly one gap of each class.

    * rate: OpenAI gpt-4.1-mini, same tokens, billed $0.0024 where our table says $0.0020;
    * units: Deepgram nova-3 on the 20th, we recorded 1.0 min of audio, Deepgram billed 1.2 min;
    * coverage: Deepgram nova-3 on the 21st, billed 0.6 min, nothing recorded;
    * none: Cartesia, 1020 characters recorded vs 1000 credits billed (+2%, within 5%).
    """
    openai_usage = write(
        tmp_path / "openai_usage.json",
        {
            "object": "page",
            "data": [
                {
                    "object": "bucket",
                    "start_time": NOV_20,
                    "end_time": NOV_20 + DAY_S,
                    "results": [
                        {
                            "object": "organization.usage.completions.result",
                            "input_tokens": 1000,
                            "input_cached_tokens": 0,
                            "output_tokens": 1000,
                            "num_model_requests": 1,
                            "model": "gpt-4.1-mini-2025-04-14",
                        }
                    ],
                }
            ],
            "has_more": False,
            "next_page": None,
        },
    )
    openai_costs = write(
        tmp_path / "openai_costs.json",
        {
            "object": "page",
            "data": [
                {
                    "object": "bucket",
                    "start_time": NOV_20,
                    "end_time": NOV_20 + DAY_S,
                    "results": [
                        {
                            "object": "organization.costs.result",
                            "amount": {"value": 0.0024, "currency": "usd"},
                            "line_item": "gpt-4.1-mini-2025-04-14, input",
                        }
                    ],
                }
            ],
        },
    )

    def deepgram_day(day: str, hours: float) -> dict[str, Any]:
        return {
            "hours": hours,
            "total_hours": hours,
            "agent_hours": 0,
            "tokens_in": 0,
            "tokens_out": 0,
            "tts_characters": 0,
            "requests": 1,
            "grouping": {"start": day, "end": day, "models": "nova-3"},
        }

    deepgram_usage = write(
        tmp_path / "deepgram_usage.json",
        {
            "start": "2026-11-20",
            "end": "2026-11-21",
            "resolution": {"units": "day", "amount": 1},
            "results": [deepgram_day("2026-11-20", 0.02), deepgram_day("2026-11-21", 0.01)],
        },
    )
    deepgram_billing = write(
        tmp_path / "deepgram_billing.json",
        {
            "start": "2026-11-20",
            "end": "2026-11-21",
            "resolution": {"units": "day", "amount": 1},
            "results": [
                {
                    "dollars": 0.00576,
                    "grouping": {"start": "2026-11-20", "end": "2026-11-20", "line_item": "streaming::nova-3"},
                },
                {
                    "dollars": 0.00288,
                    "grouping": {"start": "2026-11-21", "end": "2026-11-21", "line_item": "streaming::nova-3"},
                },
            ],
        },
    )
    cartesia = write(
        tmp_path / "cartesia.json",
        {
            "data": [
                {"start_ts": "2026-11-20T00:00:00Z", "end_ts": "2026-11-21T00:00:00Z", "credits": 1000},
                {"start_ts": "2026-11-21T00:00:00Z", "end_ts": "2026-11-22T00:00:00Z", "credits": 0},
            ]
        },
    )
    recorded = write(
        tmp_path / "observations.json",
        {
            "data": [
                generation("1", "gpt-4.1-mini", "2026-11-20T10:00:00Z", {USAGE_INPUT: 1000, USAGE_OUTPUT: 1000}, 0.002),
                generation("2", "nova-3", "2026-11-20T10:00:00Z", {USAGE_INPUT_AUDIO_MS: 60000}, 0.0048),
                generation("3", "sonic-3", "2026-11-20T10:00:01Z", {USAGE_INPUT_CHARACTERS: 1020}, 0.039984),
                generation("4", "simulated/nova-3", "2026-11-21T10:00:00Z", {USAGE_INPUT_AUDIO_MS: 36000}, 0.00288),
                generation("5", "eleven_flash_v2_5", "2026-11-20T10:00:00Z", {USAGE_INPUT_CHARACTERS: 10}, 0.0005),
            ],
            "meta": {},
        },
    )  # fmt: skip
    return [
        "--openai", openai_usage, "--openai", openai_costs,
        "--deepgram", deepgram_usage, "--deepgram", deepgram_billing,
        "--cartesia", cartesia,
        "--observations", recorded,
    ]  # fmt: skip


def test_one_gap_of_each_class_is_classified_with_exact_numbers(
    capsys: pytest.CaptureFixture[str], one_gap_of_each_class: list[str]
) -> None:
    code, out = run(capsys, *one_gap_of_each_class, "--json")
    assert code == 1
    report = json.loads(out)
    rows = report.pop("rows")
    assert report == {
        "from": "2026-11-20",
        "to": "2026-11-21",
        "threshold_pct": 5,
        "flagged": 3,
        "gaps": {"coverage": 1, "units": 1, "rate": 1},
        "notes": [
            "Left out 1 simulated generation(s) (model simulated/…, the offline bot): not real usage. "
            "Count them with --include-simulated.",
            "Not compared: 1 generation(s) of elevenlabs, for which no export was given.",
        ],
    }
    assert rows == [
        {
            "provider": "cartesia",
            "model": "*",
            "from": "2026-11-20",
            "to": "2026-11-20",
            "recorded": {"units": {"credits": 1020}, "cost_usd": 0.039984, "calls": 1},
            "billed": {"units": {"credits": 1000}, "cost_usd": None, "calls": None},
            "units_gap_pct": {"credits": 2},
            "cost_gap_pct": None,
            "calls_gap_pct": None,
            "gap": None,
            "flagged": False,
            "rate_unit": "USD per 1k credits",
            "implied_rate": None,
            "table_rate": None,
            "note": "The export has no cost: only the units are compared.",
        },
        {
            "provider": "deepgram",
            "model": "nova-3",
            "from": "2026-11-20",
            "to": "2026-11-20",
            "recorded": {"units": {"input_audio_ms": 60000}, "cost_usd": 0.0048, "calls": 1},
            "billed": {"units": {"input_audio_ms": 72000, "input_characters": 0}, "cost_usd": 0.00576, "calls": None},
            "units_gap_pct": {"input_audio_ms": -16.6666666667},
            "cost_gap_pct": -16.6666666667,
            "calls_gap_pct": None,
            "gap": "units",
            "flagged": True,
            "rate_unit": "USD per minute",
            "implied_rate": 0.0048,
            "table_rate": 0.0048,
            "note": "Usage differs (input_audio_ms -16.7%): we measure it otherwise than the provider bills it.",
        },
        {
            "provider": "deepgram",
            "model": "nova-3",
            "from": "2026-11-21",
            "to": "2026-11-21",
            "recorded": None,
            "billed": {"units": {"input_audio_ms": 36000, "input_characters": 0}, "cost_usd": 0.00288, "calls": None},
            "units_gap_pct": {"input_audio_ms": -100},
            "cost_gap_pct": -100,
            "calls_gap_pct": None,
            "gap": "coverage",
            "flagged": True,
            "rate_unit": "USD per minute",
            "implied_rate": 0.0048,
            "table_rate": 0.0048,
            "note": "Billed, but no generation was recorded: calls missing from our traces (or another app bills it).",
        },
        {
            "provider": "openai",
            "model": "gpt-4.1-mini",
            "from": "2026-11-20",
            "to": "2026-11-20",
            "recorded": {"units": {"input": 1000, "output": 1000}, "cost_usd": 0.002, "calls": 1},
            "billed": {
                "units": {"input": 1000, "input_cached_tokens": 0, "output": 1000},
                "cost_usd": 0.0024,
                "calls": 1,
            },
            "units_gap_pct": {"input": 0, "output": 0},
            "cost_gap_pct": -16.6666666667,
            "calls_gap_pct": 0,
            "gap": "rate",
            "flagged": True,
            "rate_unit": "USD per 1M tokens",
            "implied_rate": 1.2,
            "table_rate": 1,
            "note": "Same units, cost -16.7%: our price table's rate is not the billed rate; "
            "check the entry (or PRICING_FILE).",
        },
    ]


def test_the_text_report_names_each_gap_and_why(
    capsys: pytest.CaptureFixture[str], one_gap_of_each_class: list[str]
) -> None:
    code, out = run(capsys, *one_gap_of_each_class)
    assert code == 1
    lines = out.splitlines()
    assert (
        lines[0]
        == "GAPS FOUND: 3 of 4 lines differ by more than 5% (coverage 1, units 1, rate 1; 2026-11-20..2026-11-21)."
    )
    table = [line.split() for line in lines[2:7]]
    assert [row[0:3] for row in table[1:]] == [
        ["cartesia", "*", "2026-11-20"],
        ["deepgram", "nova-3", "2026-11-20"],
        ["deepgram", "nova-3", "2026-11-21"],
        ["openai", "gpt-4.1-mini", "2026-11-20"],
    ]
    assert [row[-1] for row in table[1:]] == ["ok", "units", "coverage", "rate"]
    # the implied rate next to the table's, in the unit the table writes
    assert "$1.2/1M tokens" in lines[6]
    assert "$1/1M tokens" in lines[6]
    assert "$0.0048/min" in lines[4]
    why = lines[lines.index("Why:") + 1 :]
    assert why[:3] == [
        "  deepgram nova-3 2026-11-20 [units]: Usage differs (input_audio_ms -16.7%): we measure it otherwise than "
        "the provider bills it.",
        "  deepgram nova-3 2026-11-21 [coverage]: Billed, but no generation was recorded: calls missing from our "
        "traces (or another app bills it).",
        "  openai gpt-4.1-mini 2026-11-20 [rate]: Same units, cost -16.7%: our price table's rate is not the billed "
        "rate; check the entry (or PRICING_FILE).",
    ]


def test_a_wider_threshold_flags_nothing_and_simulated_runs_can_be_counted(
    capsys: pytest.CaptureFixture[str], one_gap_of_each_class: list[str]
) -> None:
    code, out = run(capsys, *one_gap_of_each_class, "--threshold", "20", "--include-simulated", "--json")
    report = json.loads(out)
    # simulated/nova-3 on the 21st now covers Deepgram's line of that day exactly (36 s, $0.00288)
    assert [(row["model"], row["from"], row["gap"], row["units_gap_pct"]) for row in report["rows"]] == [
        ("*", "2026-11-20", None, {"credits": 2}),
        ("nova-3", "2026-11-20", None, {"input_audio_ms": -16.6666666667}),
        ("nova-3", "2026-11-21", None, {"input_audio_ms": 0}),
        ("gpt-4.1-mini", "2026-11-20", None, {"input": 0, "output": 0}),
    ]
    assert code == 0


def test_the_shipped_samples_agree(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        capsys,
        *("--deepgram", str(SAMPLES / "deepgram_usage_breakdown.json")),
        *("--deepgram", str(SAMPLES / "deepgram_billing_breakdown.json")),
        *("--openai", str(SAMPLES / "openai_usage_completions.json")),
        *("--openai", str(SAMPLES / "openai_costs.json")),
        *("--cartesia", str(SAMPLES / "cartesia_credits.json")),
        *("--observations", str(SAMPLES / "langfuse_observations.json")),
    )
    assert out.splitlines()[0] == "RECONCILE OK: all 4 lines agree within 5% (2026-11-20..2026-11-21)."
    assert code == 0


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def test_the_spool_written_by_the_real_sdk_is_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    settings = TracingSettings(
        enabled=True,
        public_key=PUBLIC_KEY,
        secret_key=SECRET_KEY,
        base_url=f"http://127.0.0.1:{closed_port()}",  # nothing listens: every export is spooled
        timeout_s=1,
        spool_dir=spool,
    )
    client = build_client(settings, tracer_provider=TracerProvider())
    usages = [
        ({USAGE_INPUT: 1000, USAGE_INPUT_CACHED_TOKENS: 0, USAGE_OUTPUT: 200}, 0.00072),
        ({USAGE_INPUT: 800, USAGE_INPUT_CACHED_TOKENS: 200, USAGE_OUTPUT: 100}, 0.0005),
    ]
    ids = []
    try:
        for usage, cost in usages:
            llm = client.start_observation(
                name="llm",
                as_type="generation",
                model="gpt-4.1-mini",
                usage_details=usage,
                cost_details={USAGE_TOTAL: cost},
            )
            llm.end()
            ids.append(llm.id)
        client.flush()
    finally:
        client.shutdown()
    today = datetime.now(UTC).date()
    assert list((spool / destination_folder(settings.base_url)).glob("*.pb"))  # spooled, not sent

    observations = read_spool(spool)
    assert sorted((o.id, o.model, dict(o.usage), o.cost, o.start.date()) for o in observations) == sorted(
        [
            (ids[0], "gpt-4.1-mini", usages[0][0], Decimal("0.00072"), today),
            (ids[1], "gpt-4.1-mini", usages[1][0], Decimal("0.0005"), today),
        ]
    )

    midnight = int(datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp())
    invoice = write(
        tmp_path / "openai.json",
        {
            "object": "page",
            "data": [
                {
                    "object": "bucket",
                    "start_time": midnight,
                    "end_time": midnight + DAY_S,
                    "results": [
                        {
                            "object": "organization.usage.completions.result",
                            "input_tokens": 2000,
                            "input_cached_tokens": 200,
                            "output_tokens": 300,
                            "num_model_requests": 3,  # one call more than the spool holds
                            "model": "gpt-4.1-mini-2025-04-14",
                        }
                    ],
                }
            ],
        },
    )
    code, out = run(capsys, "--spool", str(spool), "--openai", invoice, "--json")
    (row,) = json.loads(out)["rows"]
    assert row["recorded"] == {
        "units": {"input": 1800, "input_cached_tokens": 200, "output": 300},
        "cost_usd": 0.00122,
        "calls": 2,
    }
    assert row["billed"] == {
        "units": {"input": 1800, "input_cached_tokens": 200, "output": 300},
        "cost_usd": None,
        "calls": 3,
    }
    assert row["units_gap_pct"] == {"input": 0, "input_cached_tokens": 0, "output": 0}
    assert row["calls_gap_pct"] == -33.3333333333
    assert row["gap"] == "coverage"
    assert row["note"] == (
        "Recorded 2 calls, billed 3: calls missing on one side. The export has no cost: only the units are compared."
    )
    assert code == 1


@pytest.fixture
def observations_api() -> Iterator[ObservationsApi]:
    api = ObservationsApi(
        PUBLIC_KEY,
        SECRET_KEY,
        observations=[
            generation("00000000000000a1", "nova-3", "2026-11-20T09:00:00Z", {USAGE_INPUT_AUDIO_MS: 60000}, 0.0048),
            generation("00000000000000a2", "nova-3", "2026-11-20T23:59:59Z", {USAGE_INPUT_AUDIO_MS: 90000}, 0.0072),
            generation("00000000000000a3", "nova-3", "2026-11-21T00:00:00Z", {USAGE_INPUT_AUDIO_MS: 120000}, 0.0096),
            generation("00000000000000a4", "nova-3", "2026-11-22T00:00:00Z", {USAGE_INPUT_AUDIO_MS: 1}, 0.1),  # after
            {"id": "00000000000000b1", "type": "SPAN", "startTime": "2026-11-20T09:00:00Z", "model": None},
        ],
        page_size=2,  # three matching generations: two pages
    )
    with serve_observations(api):
        yield api


def langfuse_env(monkeypatch: pytest.MonkeyPatch, url: str, secret: str = SECRET_KEY) -> None:
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", PUBLIC_KEY)
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", secret)
    monkeypatch.setenv("LANGFUSE_BASE_URL", url)
    monkeypatch.setenv("LANGFUSE_TIMEOUT", "2")


def test_the_langfuse_api_is_read_page_by_page(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, observations_api: ObservationsApi
) -> None:
    langfuse_env(monkeypatch, observations_api.url)
    code, out = run(
        capsys,
        "--langfuse",
        *("--deepgram", str(SAMPLES / "deepgram_usage_breakdown.json")),
        *("--deepgram", str(SAMPLES / "deepgram_billing_breakdown.json")),
        "--json",
    )
    first = {
        "type": "GENERATION",
        "fields": "core,basic,model,usage",
        "fromStartTime": "2026-11-20T00:00:00Z",
        "toStartTime": "2026-11-22T00:00:00Z",
        "limit": "1000",
    }
    assert observations_api.queries == [first, {**first, "cursor": "Mg=="}]
    rows = json.loads(out)["rows"]
    assert [(r["from"], r["recorded"], r["billed"]["cost_usd"], r["gap"]) for r in rows] == [
        ("2026-11-20", {"units": {"input_audio_ms": 150000}, "cost_usd": 0.012, "calls": 2}, 0.012, None),
        ("2026-11-21", {"units": {"input_audio_ms": 120000}, "cost_usd": 0.0096, "calls": 1}, 0.0096, None),
    ]
    assert code == 0


def test_rejected_keys_are_a_configuration_error_naming_the_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, observations_api: ObservationsApi
) -> None:
    langfuse_env(monkeypatch, observations_api.url, secret="sk-lf-wrong")
    code, out = run(capsys, "--langfuse", "--deepgram", str(SAMPLES / "deepgram_usage_breakdown.json"))
    assert code == 2
    assert out == (
        f"INPUT ERROR: Langfuse at {observations_api.url} rejected the keys (HTTP 401). Check LANGFUSE_PUBLIC_KEY "
        "and LANGFUSE_SECRET_KEY (one pair, of the project at LANGFUSE_BASE_URL); `uv run test_langfuse` tells "
        "which fix applies.\n"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--langfuse"], "INPUT ERROR: No provider export given. Pass at least one of --deepgram FILE"),
        (["--openai", "x.json"], "INPUT ERROR: No recorded side given. Pass --langfuse"),
        (
            ["--openai", str(SAMPLES / "openai_costs.json"), "--langfuse"],
            "INPUT ERROR: Invalid configuration: ENABLE_TRACING is true but LANGFUSE_PUBLIC_KEY and "
            "LANGFUSE_SECRET_KEY are not set.",
        ),
        (
            ["--openai", str(SAMPLES / "deepgram_usage_breakdown.json"), "--spool", "nowhere"],
            "is not an OpenAI usage or costs answer",
        ),
        (
            ["--openai", str(SAMPLES / "openai_costs.json"), "--spool", "nowhere"],
            "INPUT ERROR: The spool folder nowhere does not exist.",
        ),
        (["--openai", str(SAMPLES / "openai_costs.json"), "--observations", "x", "--alias", "nova"], "--alias 'nova'"),
    ],
)
def test_input_and_configuration_errors_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code, out = run(capsys, *args)
    assert expected in out
    assert code == 2
