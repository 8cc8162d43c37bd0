"""Unit tests of the price table: matching, costs, user overrides and malformed files."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from pipecat_langfuse.pricing import ModelPrice, PriceTable, PricingError

VALID_ENTRY = """
[[model]]
name = "my-llm"
kind = "llm"
match = "(?i)^(acme/)?my-llm$"
usd_per_million_tokens = { input = 1.0, output = 2.0 }
source = "https://example.com/pricing"
date = "2026-01-31"
"""


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def write(tmp_path: Path, text: str, name: str = "prices.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- exact costs, by hand from the values in prices.toml -----------------------------------


def test_llm_cost_prices_each_key_reasoning_as_output_and_never_total(table: PriceTable) -> None:
    # gpt-4.1-mini: input 0.40, cached 0.10, output 1.60 USD per 1M tokens; reasoning is output.
    usage = {
        "input": 1000,
        "input_cached_tokens": 2000,
        "output": 300,
        "output_reasoning_tokens": 100,
        "total": 3300,
    }
    assert table.cost("gpt-4.1-mini", usage) == {
        "input": 0.0004,  # 1000 * 0.40 / 1e6
        "input_cached_tokens": 0.0002,  # 2000 * 0.10 / 1e6
        "output": 0.00048,  # 300 * 1.60 / 1e6
        "output_reasoning_tokens": 0.00016,  # 100 * 1.60 / 1e6
        "total": 0.00124,
    }


def test_llm_cost_gpt_4o_and_nano(table: PriceTable) -> None:
    # gpt-4o: input 2.50, cached 1.25, output 10.00 per 1M tokens.
    assert table.cost("gpt-4o", {"input": 12_345, "input_cached_tokens": 1024, "output": 77}) == {
        "input": 0.0308625,  # 12345 * 2.5 / 1e6
        "input_cached_tokens": 0.00128,  # 1024 * 1.25 / 1e6
        "output": 0.00077,  # 77 * 10 / 1e6
        "total": 0.0329125,
    }
    # gpt-4.1-nano: input 0.10, cached 0.025, output 0.40 per 1M tokens.
    assert table.cost("gpt-4.1-nano", {"input_cached_tokens": 3, "output": 1}) == {
        "input_cached_tokens": 7.5e-08,  # 3 * 0.025 / 1e6
        "output": 4e-07,
        "total": 4.75e-07,
    }


def test_stt_cost_per_millisecond_of_audio(table: PriceTable) -> None:
    # nova-3: 0.0048 USD per minute; gpt-4o-mini-transcribe: 0.003; whisper-1: 0.006.
    assert table.cost("nova-3", {"input_audio_ms": 1500}) == {"input_audio_ms": 0.00012, "total": 0.00012}
    assert table.cost("gpt-4o-mini-transcribe", {"input_audio_ms": 60_000}) == {
        "input_audio_ms": 0.003,
        "total": 0.003,
    }
    assert table.cost("whisper-1", {"input_audio_ms": 90_000}) == {"input_audio_ms": 0.009, "total": 0.009}


def test_tts_cost_per_character(table: PriceTable) -> None:
    # sonic-3: 39.20 USD per 1M characters; eleven_flash: 0.04 per 1k; tts-1: 15 per 1M.
    assert table.cost("sonic-3", {"input_characters": 1000}) == {
        "input_characters": 0.0392,
        "total": 0.0392,
    }
    assert table.cost("eleven_flash_v2_5", {"input_characters": 2000}) == {
        "input_characters": 0.08,
        "total": 0.08,
    }
    assert table.cost("tts-1", {"input_characters": 123}) == {
        "input_characters": 0.001845,
        "total": 0.001845,
    }


def test_unpriced_keys_are_omitted_and_empty_usage_costs_zero(table: PriceTable) -> None:
    # OpenAI lists no cache-write price, and an LLM has no character price.
    usage = {"input_cache_creation_tokens": 500, "input_characters": 10, "output": 0}
    assert table.cost("gpt-4.1", usage) == {"output": 0.0, "total": 0.0}
    assert table.cost("gpt-4.1", {}) == {"total": 0.0}


def test_cost_is_never_negative_and_usage_must_be_int(table: PriceTable) -> None:
    assert table.cost("gpt-4.1", {"input": -10, "output": 1}) == {
        "input": 0.0,
        "output": 8e-06,
        "total": 8e-06,
    }
    with pytest.raises(TypeError, match="input"):
        table.cost("gpt-4.1", {"input": 1.5})  # type: ignore[dict-item]


def test_unknown_model_has_no_price(table: PriceTable) -> None:
    assert table.find("my-own-llm") is None
    assert table.cost("my-own-llm", {"input": 1}) is None
    assert table.cost("simulated/unknown", {"input": 1}) is None
    assert table.find("") is None


# --- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        # dated snapshots and provider prefixes, any case
        ("gpt-4.1-mini", "gpt-4.1-mini"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("GPT-4.1-Mini", "gpt-4.1-mini"),
        (" gpt-4.1-mini ", "gpt-4.1-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-mini-tts-2025-03-20", "gpt-4o-mini-tts"),
        ("tts-1-1106", "tts-1"),
        ("tts-1-hd-1106", "tts-1-hd"),
        ("nova-3-general", "nova-3"),
        ("deepgram/nova-3", "nova-3"),
        ("nova-2-phonecall", "nova-2"),
        ("sonic-3-2026-01-12", "sonic-3"),
        ("sonic-3-latest", "sonic-3"),
        ("sonic-3.5", "sonic-3"),
        ("sonic-3.6", "sonic-3"),
        ("cartesia/sonic-2-2025-06-11", "sonic-2"),
        ("sonic-turbo-2025-06-04", "sonic-turbo"),
        ("eleven_flash_v2", "eleven_flash"),
        ("eleven_turbo_v2_5", "eleven_turbo"),
        ("ELEVENLABS/eleven_multilingual_v2", "eleven_multilingual_v2"),
        # offline runs are priced as the live model they simulate
        ("simulated/gpt-4.1-mini", "gpt-4.1-mini"),
        ("Simulated/gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("simulated/nova-3", "nova-3"),
        ("simulated/nova-3-general", "nova-3"),
        ("simulated/sonic-3", "sonic-3"),
        ("simulated/sonic-3.6", "sonic-3"),
    ],
)
def test_find_matches_dated_prefixed_and_simulated_names(table: PriceTable, model: str, entry: str) -> None:
    found = table.find(model)
    assert found is not None, model
    assert found.name == entry


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-tts", "gpt-4o-mini-tts"),
        ("gpt-4o-transcribe", "gpt-4o-transcribe"),
        ("gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe"),
        ("gpt-4.1", "gpt-4.1"),
        ("gpt-4.1-mini", "gpt-4.1-mini"),
        ("gpt-4.1-nano", "gpt-4.1-nano"),
        ("tts-1", "tts-1"),
        ("tts-1-hd", "tts-1-hd"),
        ("nova-2", "nova-2"),
        ("nova-3", "nova-3"),
        ("sonic-2", "sonic-2"),
        ("sonic-turbo", "sonic-turbo"),
        ("sonic-3", "sonic-3"),
        ("eleven_flash_v2_5", "eleven_flash"),
        ("eleven_turbo_v2", "eleven_turbo"),
        ("eleven_multilingual_v2", "eleven_multilingual_v2"),
        ("eleven_v3", "eleven_v3"),
        ("whisper-1", "whisper-1"),
        ("gpt-realtime-whisper", "gpt-realtime-whisper"),
    ],
)
def test_similar_names_are_not_confused(table: PriceTable, model: str, entry: str) -> None:
    matching = [e.name for e in table.entries if e.matches(model)]
    assert matching == [entry]


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-mini-realtime",
        "gpt-realtime-2.1-nano",
        "gpt-4.1-mini-fast",
        "gpt-4.10",
        "chatgpt-4o-latest",
        "nova-3-medical",
        "nova",
        "sonic",
        "sonic-4",
        "sonic-2-turbo",
        "eleven_flash_v3",
        "whisper-1-large",
        "simulated/simulated/gpt-4.1-mini",
        "xsimulated/gpt-4.1-mini",
    ],
)
def test_near_misses_are_not_priced(table: PriceTable, model: str) -> None:
    assert table.find(model) is None


def test_default_table_is_complete_and_well_formed(table: PriceTable) -> None:
    names = [e.name for e in table.entries]
    assert len(names) == len(set(names))
    for required in (
        "nova-2",
        "nova-3",
        "sonic-2",
        "sonic-3",
        "sonic-turbo",
        "eleven_flash",
        "eleven_turbo",
        "eleven_multilingual_v2",
        "tts-1",
        "tts-1-hd",
        "gpt-4o-mini-tts",
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
    ):
        assert required in names
    # Each kind's entries price one of its billing units (see the table in pricing.py's docstring).
    units = {
        "llm": [{"input", "output"}],
        "stt": [{"input_audio_ms"}, {"requests"}, {"input_audio_tokens"}],
        "tts": [{"input_characters"}, {"output_audio_ms"}, {"requests"}, {"output_audio_tokens"}],
        "s2s": [
            {"input_text_tokens", "input_audio_tokens", "output_text_tokens", "output_audio_tokens"},
            {"input_text", "input_audio", "output_text", "output_audio"},
            {"session_ms"},
        ],
    }
    for entry in table.entries:
        assert isinstance(entry, ModelPrice)
        assert entry.source.startswith("https://"), entry.name
        date.fromisoformat(entry.date)
        assert any(unit <= set(entry.unit_prices) for unit in units[entry.kind]), entry.name
        assert all(price >= 0 for price in entry.unit_prices.values()), entry.name
        assert entry.pattern.flags & re.IGNORECASE
        assert entry.provenance in {"builtin", "self-hosted"}, entry.name
        derives_audio_tokens = entry.kind != "s2s" and {"input_audio_tokens", "output_audio_tokens"} & set(
            entry.unit_prices
        )
        assert (entry.audio_tokens_per_second is not None) == bool(derives_audio_tokens), entry.name
    assert table.find("gpt-4o-mini-tts") is not None
    assert "estimate" in table.find("gpt-4o-mini-tts").note.lower()  # type: ignore[union-attr]


def test_every_billing_unit_is_converted_to_its_usage_key(tmp_path: Path) -> None:
    text = "".join(
        entry(name=f'"m{i}"', kind=f'"{kind}"', usd_per_million_tokens="", **{field: value})
        for i, (kind, field, value) in enumerate(
            [
                ("stt", "usd_per_hour", "0.36"),
                ("stt", "usd_per_1k_requests", "2.0"),
                ("tts", "usd_per_generated_minute", "0.6"),
                ("tts", "usd_per_1k_requests", "1.0"),
                ("stt", "self_hosted", "true"),
                ("tts", "self_hosted", "true"),
                ("llm", "self_hosted", "true"),
            ]
        )
    )
    table = PriceTable.load(write(tmp_path, text))
    assert [(e.name, dict(e.unit_prices), e.provenance) for e in table.entries[:7]] == [
        ("m0", {"input_audio_ms": 1e-07}, "PRICING_FILE"),  # $0.36 per 3,600,000 ms
        ("m1", {"requests": 0.002}, "PRICING_FILE"),
        ("m2", {"output_audio_ms": 1e-05}, "PRICING_FILE"),  # $0.60 per 60,000 ms
        ("m3", {"requests": 0.001}, "PRICING_FILE"),
        ("m4", {"input_audio_ms": 0.0}, "self-hosted"),
        ("m5", {"input_characters": 0.0}, "self-hosted"),
        ("m6", {"input": 0.0, "output": 0.0}, "self-hosted"),
    ]
    assert table.entries[4].cost({"input_audio_ms": 60_000}) == {"input_audio_ms": 0.0, "total": 0.0}


def test_audio_tokens_are_rounded_up_at_the_vendors_rate(tmp_path: Path) -> None:
    text = entry(
        kind='"stt"', usd_per_million_tokens="{ input_audio_tokens = 6.0, output = 10.0 }", audio_tokens_per_second="10"
    )
    price = PriceTable.load(write(tmp_path, text)).entries[0]
    assert [price.audio_tokens(ms) for ms in (0, 1, 100, 101, 1999, 60_000)] == [0, 1, 1, 2, 20, 600]
    assert dict(price.unit_prices) == {"input_audio_tokens": 6e-06, "output": 1e-05}


def test_unit_prices_are_converted_from_the_file_units(table: PriceTable) -> None:
    assert dict(table.find("gpt-4.1-mini").unit_prices) == {  # type: ignore[union-attr]
        "input": 4e-07,
        "input_cached_tokens": 1e-07,
        "output": 1.6e-06,
        "output_reasoning_tokens": 1.6e-06,  # billed as output
    }
    assert dict(table.find("nova-3").unit_prices) == {"input_audio_ms": 8e-08}  # type: ignore[union-attr]
    assert dict(table.find("eleven_v3").unit_prices) == {"input_characters": 8e-05}  # type: ignore[union-attr]


# --- user file --------------------------------------------------------------------------------


def test_user_file_overrides_a_default_and_adds_a_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[model]]
name = "nova-3"
kind = "stt"
match = '(?i)^(deepgram/)?nova-3(-general)?$'
usd_per_minute = 0.0042
source = "https://example.com/our-growth-contract"
date = 2026-10-01
note = "Growth plan"

[[model]]
name = "my-llm"
kind = "llm"
usd_per_million_tokens = { input = 1.0, input_cache_creation_tokens = 1.25, output = 2.0 }
source = "https://example.com/pricing"
date = "2026-01-31"
""",
    )
    table = PriceTable.load(path)
    nova = table.find("simulated/nova-3-general")
    assert nova is not None
    assert nova.note == "Growth plan"
    assert nova.date == "2026-10-01"
    assert table.cost("nova-3", {"input_audio_ms": 60_000}) == {"input_audio_ms": 0.0042, "total": 0.0042}
    assert [e.name for e in table.entries].count("nova-3") == 1
    # without `match`, the name itself matches (any case)
    assert table.cost("My-LLM", {"input": 1000, "input_cache_creation_tokens": 1000, "output": 1000}) == {
        "input": 0.001,
        "input_cache_creation_tokens": 0.00125,
        "output": 0.002,
        "total": 0.00425,
    }
    assert table.find("my-llm-2") is None
    # defaults are still there
    assert table.find("gpt-4.1-mini") is not None
    assert PriceTable.load().find("nova-3").unit_prices["input_audio_ms"] == 8e-08  # type: ignore[union-attr]


def test_user_patterns_are_matched_before_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[model]]
name = "all-gpt-4.1"
kind = "llm"
match = '(?i)^gpt-4\\.1.*$'
usd_per_million_tokens = { input = 0, output = 0 }
source = "https://example.com/free"
date = "2026-01-31"
""",
    )
    table = PriceTable.load(path)
    assert table.entries[0].name == "all-gpt-4.1"
    assert table.find("simulated/gpt-4.1-mini").name == "all-gpt-4.1"  # type: ignore[union-attr]
    assert table.cost("gpt-4.1-mini", {"input": 1000, "output": 1000}) == {
        "input": 0.0,
        "output": 0.0,
        "total": 0.0,
    }
    assert table.find("gpt-4o").name == "gpt-4o"  # type: ignore[union-attr]


def test_empty_user_file_keeps_the_defaults(tmp_path: Path) -> None:
    table = PriceTable.load(write(tmp_path, "# nothing yet\n"))
    assert [e.name for e in table.entries] == [e.name for e in PriceTable.load().entries]


# --- malformed files --------------------------------------------------------------------------


def entry(**fields: str) -> str:
    """A valid [[model]] entry with some fields replaced (value "" removes the field)."""
    base = {
        "name": '"bad-model"',
        "kind": '"llm"',
        "match": '"(?i)^bad-model$"',
        "usd_per_million_tokens": "{ input = 1.0, output = 2.0 }",
        "source": '"https://example.com/pricing"',
        "date": '"2026-01-31"',
    }
    base.update(fields)
    lines = [f"{key} = {value}" for key, value in base.items() if value != ""]
    return "[[model]]\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (entry(source=""), "missing field 'source'"),
        (entry(kind=""), "missing field 'kind'"),
        (entry(date=""), "missing field 'date'"),
        (entry(kind='"asr"'), "unknown kind 'asr'"),
        (entry(usd_per_million_tokens="", usd_per_second="0.1"), "unknown field(s) 'usd_per_second'"),
        (entry(usd_per_million_tokens=""), "missing price"),
        (entry(usd_per_million_tokens="", usd_per_minute="0.01"), "'usd_per_minute' is not a price for kind 'llm'"),
        (
            entry(kind='"tts"', usd_per_million_tokens="", usd_per_million_characters="1", usd_per_1k_characters="1"),
            "several prices",
        ),
        (entry(match='"(?i)^gpt-4o(-\\\\d{4}$"'), "not a valid regular expression"),
        (entry(usd_per_million_tokens='{ input = "0.40", output = 1.0 }'), "must be a number"),
        (entry(usd_per_million_tokens="{ input = 1.0, output = true }"), "must be a number"),
        (entry(usd_per_million_tokens="{ input = 1.0, output = nan }"), "finite"),
        (entry(usd_per_million_tokens="{ input = 1.0 }"), "missing 'output'"),
        (
            entry(usd_per_million_tokens="{ input = 1.0, output = 1.0, output_reasoning_tokens = 3.0 }"),
            "Reasoning tokens are billed as output",
        ),
        (entry(usd_per_million_tokens="1.0"), "must be a table"),
        (entry(date='"31/01/2026"'), "YYYY-MM-DD"),
        (entry(usd_per_million_tokens="", usd_per_hour="0.1"), "'usd_per_hour' is not a price for kind 'llm'"),
        (entry(usd_per_million_tokens="", self_hosted="false"), "'self_hosted' can only be true"),
        (entry(usd_per_million_tokens="", self_hosted="true", usd_per_minute="1"), "several prices"),
        (
            entry(kind='"stt"', usd_per_million_tokens="{ input_audio_tokens = 6.0, output = 10.0 }"),
            "has no 'audio_tokens_per_second'. Add the vendor's rate",
        ),
        (
            entry(kind='"stt"', usd_per_million_tokens="{ output = 10.0 }"),
            "missing 'input_audio_tokens'",
        ),
        (
            entry(kind='"tts"', usd_per_million_tokens="{ input = 1.0, output = 2.0 }"),
            "unknown usage key(s) 'output' for kind 'tts'",
        ),
        (entry(audio_tokens_per_second="10"), "'audio_tokens_per_second' is only used with a price for"),
        (
            entry(
                kind='"tts"',
                usd_per_million_tokens="{ output_audio_tokens = 12.0 }",
                audio_tokens_per_second="0",
            ),
            "'audio_tokens_per_second' must be above 0",
        ),
        (entry(name='""'), "'name' must be a non-empty string"),
        (entry(note="3"), "'note' must be a string"),
    ],
)
def test_malformed_entry_raises_naming_file_and_entry(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, VALID_ENTRY + text)
    with pytest.raises(PricingError) as info:
        PriceTable.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "[[model]] #2" in message
    assert fragment in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        (entry(usd_per_million_tokens="{ input = -0.40, output = 1.0 }"), "usd_per_million_tokens.input"),
        (entry(kind='"stt"', usd_per_million_tokens="", usd_per_minute="-0.0048"), "usd_per_minute"),
        (entry(kind='"tts"', usd_per_million_tokens="", usd_per_1k_characters="-0.05"), "usd_per_1k_characters"),
    ],
)
def test_negative_price_raises(tmp_path: Path, text: str, label: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PricingError, match="negative") as info:
        PriceTable.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "'bad-model'" in message
    assert label in message
    assert "fix the sign" in message


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID_ENTRY + '\n[[model]]\nname = "oops\nkind = "llm"\n')
    with pytest.raises(PricingError) as info:
        PriceTable.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "not valid TOML" in message
    assert "line 11" in message
    assert "[[model]]" in message  # shows what an entry looks like


def test_duplicate_names_in_one_file_raise(tmp_path: Path) -> None:
    path = write(tmp_path, VALID_ENTRY + VALID_ENTRY.replace("my-llm$", "my-llm-2$"))
    with pytest.raises(PricingError, match=r"#2 \(name 'my-llm'\) has the same name as \[\[model\]\] #1"):
        PriceTable.load(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (VALID_ENTRY.replace("[[model]]", "[[models]]"), "unknown top-level key(s) 'models'"),
        (VALID_ENTRY.replace("[[model]]", "[model]"), "write [[model]], not [model]"),
    ],
)
def test_misspelled_tables_raise(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PricingError) as info:
        PriceTable.load(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_user_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(PricingError, match="PRICING_FILE") as info:
        PriceTable.load(path)
    assert str(path) in str(info.value)


def test_a_price_is_found_by_kind_and_a_service_apart_by_its_class(tmp_path: Path) -> None:
    text = (
        entry(name='"local-base"', kind='"stt"', match='"(?i)^base$"', usd_per_million_tokens="", self_hosted="true")
        + entry(
            name='"tts-base"', kind='"tts"', match='"(?i)^base$"', usd_per_million_tokens="", usd_per_1k_characters="1"
        )
        + entry(
            name='"on-our-endpoint"',
            kind='"stt"',
            match='"(?i)^OurSageMakerSTTService/.+$"',
            usd_per_million_tokens="",
            self_hosted="true",
        )
        + entry(name='"hosted"', kind='"stt"', match='"(?i)^nova-3$"', usd_per_million_tokens="", usd_per_minute="1")
    )
    table = PriceTable.load(write(tmp_path, text))
    # The same name, two kinds: an STT model never picks up a TTS price, nor the reverse.
    assert table.find("base", "stt").name == "local-base"  # type: ignore[union-attr]
    assert table.find("base", "tts").name == "tts-base"  # type: ignore[union-attr]
    assert table.find("base", "llm") is None
    # "<service>/<model>" first: the same model is self-hosted on one service, hosted elsewhere.
    assert table.find("nova-3", "stt", service="OurSageMakerSTTService").name == "on-our-endpoint"  # type: ignore[union-attr]
    assert table.find("nova-3", "stt", service="DeepgramSTTService").name == "hosted"  # type: ignore[union-attr]
    assert table.find("nova-3", "stt").name == "hosted"  # type: ignore[union-attr]
