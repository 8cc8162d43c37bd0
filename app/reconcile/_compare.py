"""The comparison: recorded vs billed per (provider, model, period), each gap classified.

Classes, checked in this order (the first that applies names the gap):

* ``coverage``: calls or days missing on one side: a line only one side has (or billed at zero), or,
  where the export counts requests like we count generations (OpenAI completions), request counts
  that differ by more than the threshold;
* ``units``: the usage differs by more than the threshold for some usage key;
* ``rate``: the units agree, but the cost differs by more than the threshold: the price we apply is
  not the price billed (compare the implied rate, billed cost / billed units, with our table's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

from app.reconcile._billed import BilledExport
from app.reconcile._types import (
    ALL_MODELS,
    ONE_DAY,
    PROVIDER_CARTESIA,
    PROVIDER_DEEPGRAM,
    PROVIDER_OPENAI,
    UNIT_CREDITS,
    BilledLine,
    Observation,
    Period,
    ReconcileInputError,
    utc_day,
)
from pipecat_langfuse.pricing import (
    SIMULATED_PREFIX,
    USAGE_INPUT,
    USAGE_INPUT_AUDIO_MS,
    USAGE_INPUT_CACHE_CREATION_TOKENS,
    USAGE_INPUT_CACHED_TOKENS,
    USAGE_INPUT_CHARACTERS,
    USAGE_OUTPUT,
    USAGE_OUTPUT_AUDIO_MS,
    ModelPrice,
    PriceTable,
)

__all__ = ["GAP_COVERAGE", "GAP_RATE", "GAP_UNITS", "Report", "Row", "reconcile"]

GAP_COVERAGE = "coverage"
GAP_UNITS = "units"
GAP_RATE = "rate"
DEFAULT_THRESHOLD_PCT = Decimal(5)

_PREFIX_PROVIDERS = (
    ("deepgram/", PROVIDER_DEEPGRAM),
    ("nova-", PROVIDER_DEEPGRAM),
    ("flux-", PROVIDER_DEEPGRAM),
    ("aura", PROVIDER_DEEPGRAM),
    ("openai/", PROVIDER_OPENAI),
    ("gpt-", PROVIDER_OPENAI),
    ("o1", PROVIDER_OPENAI),
    ("o3", PROVIDER_OPENAI),
    ("o4", PROVIDER_OPENAI),
    ("whisper-1", PROVIDER_OPENAI),
    ("tts-1", PROVIDER_OPENAI),
    ("cartesia/", PROVIDER_CARTESIA),
    ("sonic", PROVIDER_CARTESIA),
    ("ink-", PROVIDER_CARTESIA),
)
"""Provider of a model without a price entry, by the start of its name."""

# Cartesia credits (https://docs.cartesia.ai/pricing, 2026-11-29): ~1 credit per TTS character
# (1.5 with a Pro Voice Clone, which the traces cannot tell), STT over the websocket per second of audio.
CARTESIA_CREDITS_PER_CHARACTER = Decimal(1)
CARTESIA_STT_CREDITS_PER_SECOND = {"ink-whisper": Decimal(1), "ink-2": Decimal(3)}

_TOKENS = "tokens"
_AUDIO = "audio"
_CHARACTERS = "characters"
_FAMILIES = {
    USAGE_INPUT: _TOKENS,
    USAGE_INPUT_CACHED_TOKENS: _TOKENS,
    USAGE_INPUT_CACHE_CREATION_TOKENS: _TOKENS,
    USAGE_OUTPUT: _TOKENS,
    USAGE_INPUT_AUDIO_MS: _AUDIO,
    USAGE_OUTPUT_AUDIO_MS: _AUDIO,
    USAGE_INPUT_CHARACTERS: _CHARACTERS,
    UNIT_CREDITS: UNIT_CREDITS,
}
# Family -> (units per priced quantity, label of the rate).
RATE_UNITS = {
    _TOKENS: (Decimal(1_000_000), "USD per 1M tokens"),
    _AUDIO: (Decimal(60_000), "USD per minute"),
    _CHARACTERS: (Decimal(1_000_000), "USD per 1M characters"),
    UNIT_CREDITS: (Decimal(1_000), "USD per 1k credits"),
}
RATE_SUFFIXES = {
    "USD per 1M tokens": "/1M tokens",
    "USD per minute": "/min",
    "USD per 1M characters": "/1M chars",
    "USD per 1k credits": "/1k credits",
}
"""How the table writes each rate unit after the number."""


@dataclass
class Side:
    """One side of a row: units by usage key, USD, calls (None where unknown)."""

    units: dict[str, Decimal] = field(default_factory=dict)
    cost: Decimal | None = None
    calls: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The side for ``--json``."""
        return {
            "units": {k: _number(v) for k, v in self.units.items()},
            "cost_usd": _number(self.cost),
            "calls": self.calls,
        }


@dataclass
class Row:
    """The comparison of one (provider, model, period).

    Attributes:
        recorded: Our side; None when no generation was recorded.
        billed: The provider's side; None when the export has no such line.
        units_gap_pct: (recorded - billed) / billed in percent, by compared usage key; None for a key billed at 0.
        cost_gap_pct: The same for the cost, when both sides have one.
        calls_gap_pct: The same for the calls, when both sides count them.
        gap: ``coverage``, ``units`` or ``rate`` when flagged, else None.
        rate_unit: The unit of the two rates, e.g. ``USD per minute``.
        implied_rate: Billed cost / billed units.
        table_rate: Our price table's rate for the same units.
        note: Why the row is flagged, or what could not be compared.
    """

    provider: str
    model: str
    period: Period
    recorded: Side | None
    billed: Side | None
    units_gap_pct: dict[str, Decimal | None] = field(default_factory=dict)
    cost_gap_pct: Decimal | None = None
    calls_gap_pct: Decimal | None = None
    gap: str | None = None
    rate_unit: str | None = None
    implied_rate: Decimal | None = None
    table_rate: Decimal | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        """The row for ``--json``."""
        return {
            "provider": self.provider,
            "model": self.model,
            "from": self.period.start.isoformat(),
            "to": _last_day(self.period),
            "recorded": None if self.recorded is None else self.recorded.as_json(),
            "billed": None if self.billed is None else self.billed.as_json(),
            "units_gap_pct": {k: _number(v) for k, v in self.units_gap_pct.items()},
            "cost_gap_pct": _number(self.cost_gap_pct),
            "calls_gap_pct": _number(self.calls_gap_pct),
            "gap": self.gap,
            "flagged": self.gap is not None,
            "rate_unit": self.rate_unit,
            "implied_rate": _number(self.implied_rate),
            "table_rate": _number(self.table_rate),
            "note": self.note,
        }


@dataclass
class Report:
    """The whole comparison.

    Attributes:
        rows: One per (provider, model, period), sorted.
        window: The days compared.
        threshold_pct: A gap above this many percent is flagged.
        notes: What was left out, in plain words.
    """

    rows: list[Row]
    window: Period
    threshold_pct: Decimal
    notes: list[str]

    @property
    def flagged(self) -> list[Row]:
        """The rows with a gap over the threshold."""
        return [row for row in self.rows if row.gap is not None]

    def as_json(self) -> dict[str, Any]:
        """The report for ``--json``."""
        counts = {gap: sum(1 for row in self.flagged if row.gap == gap) for gap in (GAP_COVERAGE, GAP_UNITS, GAP_RATE)}
        return {
            "from": self.window.start.isoformat(),
            "to": _last_day(self.window),
            "threshold_pct": _number(self.threshold_pct),
            "flagged": len(self.flagged),
            "gaps": counts,
            "rows": [row.as_json() for row in self.rows],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class _Resolved:
    provider: str
    model: str
    price: ModelPrice | None
    simulated: bool


class ModelNames:
    """Names a model the same way on both sides: by its price table entry, else by its own name.

    Args:
        prices: The price table (built-in + ``PRICING_FILE``).
        aliases: Provider name -> our name, for exports that name a model otherwise (e.g. an id).
    """

    def __init__(self, prices: PriceTable, aliases: Mapping[str, str] | None = None) -> None:
        self._prices = prices
        self._aliases = {k.strip().casefold(): v.strip() for k, v in (aliases or {}).items()}

    def resolve(self, raw: str) -> _Resolved:
        """The provider and canonical name of the model ``raw``."""
        name = raw.strip()
        name = self._aliases.get(name.casefold(), name)
        simulated = name[: len(SIMULATED_PREFIX)].casefold() == SIMULATED_PREFIX
        if simulated:
            name = name[len(SIMULATED_PREFIX) :]
        price = self._prices.find(name)
        if price is not None:
            return _Resolved(_provider_of_source(price.source) or _provider_of_name(name), price.name, price, simulated)
        provider = _provider_of_name(name)
        bare = name.split("/", 1)[1] if "/" in name and name.split("/", 1)[0].casefold() == provider else name
        return _Resolved(provider, bare.casefold(), None, simulated)


def _provider_of_source(url: str) -> str | None:
    host = urlparse(url).hostname or ""
    labels = host.split(".")
    return labels[-2] if len(labels) >= 2 else None


def _provider_of_name(name: str) -> str:
    lowered = name.casefold()
    for prefix, provider in _PREFIX_PROVIDERS:
        if lowered.startswith(prefix):
            return provider
    return lowered.split("/", 1)[0] if "/" in lowered else "unknown"


@dataclass
class _Recorded:
    units: dict[str, Decimal] = field(default_factory=dict)
    cost: Decimal | None = None
    calls: int = 0
    unpriced: int = 0
    price: ModelPrice | None = None


def reconcile(
    exports: Sequence[BilledExport],
    observations: Iterable[Observation],
    prices: PriceTable,
    *,
    window: Period | None = None,
    threshold_pct: Decimal = DEFAULT_THRESHOLD_PCT,
    include_simulated: bool = False,
    aliases: Mapping[str, str] | None = None,
) -> Report:
    """Compare the recorded generations with the billed lines.

    Args:
        exports: The parsed provider exports.
        observations: The recorded generations (already deduplicated).
        prices: The price table, to name models, map them to providers and show our rates.
        window: The days to compare; default: from the first to the last billed day.
        threshold_pct: Flag gaps above this many percent.
        include_simulated: Count the offline bot's ``simulated/…`` generations as real usage.
        aliases: Provider model name -> our model name.

    Returns:
        The rows, sorted by provider, model and period, and notes on what was left out.
    """
    names = ModelNames(prices, aliases)
    notes = [note for export in exports for note in export.notes]
    billed: dict[tuple[str, str, Period], BilledLine] = {}
    kinds: dict[str, set[str] | None] = {}
    for export in exports:
        covered = kinds.get(export.provider, set())
        kinds[export.provider] = None if export.kinds is None or covered is None else covered | export.kinds
        for line in export.lines:
            model = line.model if line.model == ALL_MODELS else names.resolve(line.model).model
            key = (export.provider, model, line.period)
            if key in billed:
                billed[key].merge(line.units, line.cost, line.calls, line.sources[0] if line.sources else "")
            else:
                billed[key] = BilledLine(
                    export.provider, model, line.period, dict(line.units), line.cost, line.calls, list(line.sources)
                )
    if window is None:
        if billed:
            window = Period(min(k[2].start for k in billed), max(k[2].end for k in billed))
        else:
            raise ReconcileInputError("The exports hold no lines: pass the days to compare (--from and --to).")
    billed = {k: v for k, v in billed.items() if window.start <= k[2].start < window.end}
    periods: dict[str, list[Period]] = {}
    all_models = set()
    for provider, model, period in billed:
        periods.setdefault(provider, []).append(period)
        if model == ALL_MODELS:
            all_models.add(provider)

    recorded: dict[tuple[str, str, Period], _Recorded] = {}
    simulated = outside = 0
    uncompared: dict[str, int] = {}
    not_covered: dict[str, int] = {}
    no_credits: dict[str, int] = {}
    for observation in observations:
        resolved = names.resolve(observation.model)
        if resolved.simulated and not include_simulated:
            simulated += 1
            continue
        day = utc_day(observation.start)
        if not window.contains(day):
            outside += 1
            continue
        if resolved.provider not in kinds:
            uncompared[resolved.provider] = uncompared.get(resolved.provider, 0) + 1
            continue
        covered = kinds[resolved.provider]
        if covered is not None and resolved.price is not None and resolved.price.kind not in covered:
            not_covered[resolved.model] = not_covered.get(resolved.model, 0) + 1
            continue
        period = next((p for p in sorted(set(periods.get(resolved.provider, []))) if p.contains(day)), Period.day(day))
        if resolved.provider in all_models:
            credits = cartesia_credits(resolved, observation.usage)
            if credits is None:
                no_credits[resolved.model] = no_credits.get(resolved.model, 0) + 1
                continue
            key = (resolved.provider, ALL_MODELS, period)
            units: Mapping[str, Decimal] = {UNIT_CREDITS: credits}
        else:
            key = (resolved.provider, resolved.model, period)
            units = {k: Decimal(v) for k, v in observation.usage.items()}
        ours = recorded.setdefault(key, _Recorded(price=resolved.price))
        for unit, value in units.items():
            ours.units[unit] = ours.units.get(unit, Decimal(0)) + value
        ours.calls += 1
        if observation.cost is None:
            ours.unpriced += 1
        else:
            ours.cost = observation.cost if ours.cost is None else ours.cost + observation.cost

    if simulated:
        notes.append(
            f"Left out {simulated} simulated generation(s) (model simulated/…, the offline bot): not real usage. "
            "Count them with --include-simulated."
        )
    if outside:
        notes.append(f"Left out {outside} generation(s) outside {window.label}.")
    for provider, count in sorted(uncompared.items()):
        notes.append(f"Not compared: {count} generation(s) of {provider}, for which no export was given.")
    for model, count in sorted(not_covered.items()):
        notes.append(
            f"Not compared: {count} generation(s) of {model}: the export given for its provider does not cover it."
        )
    for model, count in sorted(no_credits.items()):
        notes.append(f"Not compared: {count} generation(s) of {model}: no known credit rate for it.")

    rows = [
        _row(key, recorded.get(key), billed.get(key), names, threshold_pct)
        for key in sorted(set(recorded) | set(billed), key=lambda k: (k[0], k[1], k[2]))
    ]
    return Report([row for row in rows if row is not None], window, threshold_pct, notes)


def cartesia_credits(resolved: _Resolved, usage: Mapping[str, int]) -> Decimal | None:
    """The Cartesia credits of one generation's usage; None when the model's credit rate is unknown."""
    price = resolved.price
    kind = price.kind if price is not None else None
    if kind == "tts" or (kind is None and resolved.model.startswith("sonic")):
        return Decimal(usage.get(USAGE_INPUT_CHARACTERS, 0)) * CARTESIA_CREDITS_PER_CHARACTER
    rate = CARTESIA_STT_CREDITS_PER_SECOND.get(resolved.model)
    if rate is None:
        return None
    return Decimal(usage.get(USAGE_INPUT_AUDIO_MS, 0)) / 1000 * rate


def _row(
    key: tuple[str, str, Period],
    recorded: _Recorded | None,
    billed: BilledLine | None,
    names: ModelNames,
    threshold: Decimal,
) -> Row | None:
    provider, model, period = key
    billed_empty = billed is None or (not any(billed.units.values()) and not billed.cost)
    if billed_empty and recorded is None:
        return None  # e.g. Cartesia's buckets of days without usage
    ours = None if recorded is None else Side(dict(recorded.units), recorded.cost, recorded.calls)
    theirs = None if billed is None else Side(dict(billed.units), billed.cost, billed.calls)
    row = Row(provider, model, period, ours, theirs)
    if recorded is not None and recorded.unpriced:
        row.note = f"{recorded.unpriced} generation(s) without a cost (unpriced model). "
    price = None if model == ALL_MODELS else names.resolve(model).price
    if recorded is None:
        assert billed is not None  # not both empty
        compared = [k for k, v in billed.units.items() if v]
        row.units_gap_pct = {k: _pct(Decimal(0), billed.units[k]) for k in compared}
        row.cost_gap_pct = _pct(Decimal(0), billed.cost) if billed.cost else None
        _rates(row, billed, compared, price)
        row.gap = GAP_COVERAGE
        row.note += "Billed, but no generation was recorded: calls missing from our traces (or another app bills it)."
        if price is None and model != ALL_MODELS:
            row.note += f" No price entry matches {model!r}: if it names one of our models, pass --alias {model}=OURS."
        return row
    if billed is None or billed_empty:
        row.gap = GAP_COVERAGE
        row.note += f"Recorded {recorded.calls} generation(s), but the export bills nothing for them."
        return row

    compared = [k for k, v in billed.units.items() if v or recorded.units.get(k)]
    row.units_gap_pct = {k: _pct(recorded.units.get(k, Decimal(0)), billed.units[k]) for k in compared}
    if billed.calls is not None:
        row.calls_gap_pct = _pct(Decimal(recorded.calls), Decimal(billed.calls))
    if billed.cost is not None and recorded.cost is not None:
        row.cost_gap_pct = _pct(recorded.cost, billed.cost)
    _rates(row, billed, compared, price)

    if billed.calls is not None and _over(row.calls_gap_pct, threshold):
        row.gap = GAP_COVERAGE
        row.note += f"Recorded {recorded.calls} calls, billed {billed.calls}: calls missing on one side."
    elif any(_over(pct, threshold) for pct in row.units_gap_pct.values()):
        row.gap = GAP_UNITS
        worst = max(compared, key=lambda k: abs(row.units_gap_pct[k] or Decimal("Infinity")))
        row.note += (
            f"Usage differs ({worst} {_signed(row.units_gap_pct[worst])}): we measure it otherwise than the "
            "provider bills it."
        )
    elif billed.cost is not None and recorded.cost is not None and _over(row.cost_gap_pct, threshold):
        row.gap = GAP_RATE
        row.note += (
            f"Same units, cost {_signed(row.cost_gap_pct)}: our price table's rate is not the billed rate; "
            "check the entry (or PRICING_FILE)."
        )
        if not compared:
            row.note += " The export has no units, so this may be a units gap too."
    if billed.cost is None:
        row.note += " The export has no cost: only the units are compared."
    row.note = row.note.strip()
    return row


def _rates(row: Row, billed: BilledLine, compared: Sequence[str], price: ModelPrice | None) -> None:
    families = {_FAMILIES.get(k) for k in compared}
    if len(families) != 1 or None in families:
        return
    (family,) = families
    assert family is not None
    scale, label = RATE_UNITS[family]
    total = sum((billed.units[k] for k in compared), Decimal(0))
    if not total:
        return
    row.rate_unit = label
    if billed.cost is not None:
        row.implied_rate = billed.cost / total * scale
    if price is not None and all(k in price.unit_prices for k in compared):
        table_cost = sum((billed.units[k] * Decimal(repr(price.unit_prices[k])) for k in compared), Decimal(0))
        row.table_rate = table_cost / total * scale


def _pct(recorded: Decimal, billed: Decimal) -> Decimal | None:
    if billed == 0:
        return Decimal(0) if recorded == 0 else None
    return (recorded - billed) / billed * 100


def _over(pct: Decimal | None, threshold: Decimal) -> bool:
    """Whether a gap is over the threshold; None (something against a billed 0) always is."""
    return pct is None or abs(pct) > threshold


def _signed(pct: Decimal | None) -> str:
    return "n/a (billed 0)" if pct is None else f"{pct:+.1f}%"


def _last_day(period: Period) -> str:
    """The period's last day (inclusive), ISO."""
    return (period.end - ONE_DAY).isoformat()


def _number(value: Decimal | None) -> int | float | None:
    if value is None:
        return None
    if value == value.to_integral_value():
        return int(value)
    return float(round(value, 10))
