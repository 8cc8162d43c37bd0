"""``uv run test_langfuse --prices``: the table, where each price comes from, and which are stale."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from app.check import main
from app.prices import price_listing
from pipecat_langfuse import PriceTable

USER_FILE = """
[[model]]
name = "nova-3"
kind = "stt"
match = "(?i)^nova-3(-general)?$"
usd_per_minute = 0.0043
source = "https://example.com/our-contract"
date = "2026-08-01"
"""


def test_every_entry_is_listed_with_its_source_date_and_price() -> None:
    code, lines = price_listing({}, today=date(2026, 11, 29))
    table = PriceTable.load()
    assert code == 0
    rows_end = lines.index("")
    assert rows_end == 1 + 2 * len(table.entries)  # a row and its source line per entry
    assert lines[0].split() == ["kind", "entry", "source", "date", "age", "price"]
    rows = dict(zip(lines[1:rows_end:2], lines[2:rows_end:2], strict=True))
    nova = next(row for row in rows if row.split()[1] == "nova-3")
    assert nova.split() == ["stt", "nova-3", "builtin", "2026-11-28", "1d", "usd_per_minute", "=", "0.0048"]
    assert rows[nova].strip() == "https://deepgram.com/pricing"
    assert lines[rows_end + 1].startswith(f"{len(table.entries)} prices from the built-in table (PRICING_FILE not set)")


def test_prices_older_than_90_days_are_marked_stale(tmp_path: Path) -> None:
    user_file = tmp_path / "prices.toml"
    user_file.write_text(USER_FILE, encoding="utf-8")
    code, lines = price_listing({"PRICING_FILE": str(user_file)}, today=date(2026, 11, 29))
    assert code == 0
    # The user's entry comes first (it wins), is 120 days old, and replaces the built-in nova-3.
    assert lines[1].split() == [
        "stt",
        "nova-3",
        "PRICING_FILE",
        "2026-08-01",
        "120d",
        "usd_per_minute",
        "=",
        "0.0043",
        "STALE",
    ]
    assert lines[2].strip() == "https://example.com/our-contract"
    rows = lines[1 : lines.index("") : 2]
    assert sum(line.split()[1] == "nova-3" for line in rows) == 1
    stale = [line.split()[1] for line in rows if line.endswith("STALE")]
    assert "nova-3" in stale
    # A self-hosted $0 is never stale.
    assert not any(line.split()[2] == "self-hosted" for line in rows if line.endswith("STALE"))
    assert lines[-2].endswith(f"{len(stale)} older than 90 days (STALE).")
    assert lines[-1] == "Re-check stale prices on their source page; override them in PRICING_FILE (README, Pricing)."


def test_a_broken_pricing_file_is_a_configuration_error(tmp_path: Path) -> None:
    user_file = tmp_path / "prices.toml"
    user_file.write_text('[[model]]\nname = "x"\nkind = "stt"\n', encoding="utf-8")
    code, lines = price_listing({"PRICING_FILE": str(user_file)})
    assert code == 2
    assert lines == [
        f"PRICING_FILE: {user_file}: [[model]] #1 (name 'x'): missing field 'source'. "
        'Add it, e.g. source = "https://example.com/pricing".'
    ]


def test_the_command_prints_the_listing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    assert main(["--prices"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["kind", "entry", "source", "date", "age", "price"]
    assert "https://deepgram.com/pricing" in out


def test_the_readme_shows_the_price_table_as_it_is() -> None:
    from app.prices import markdown_table

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    shown = readme.split("<!-- prices:start -->\n", 1)[1].split("\n<!-- prices:end -->", 1)[0]
    assert shown == markdown_table(), "regenerate the README's table: uv run python -m app.prices"
