r"""Prices of STT, LLM and TTS models, and the USD cost of a generation's usage.

Costs are computed locally from a price table and sent to Langfuse as ``cost_details``
next to the integer ``usage_details`` of each generation. The usage keys are the
``USAGE_*`` constants below; nothing else in the tracer spells them out.

The built-in table is ``prices.toml`` next to this module (read with
:mod:`importlib.resources`; no network at runtime). A user TOML file (``PRICING_FILE``)
uses the same schema, and overrides or extends it:

* user entries are matched **before** the built-in ones, so a user pattern always wins;
* a user entry with the same ``name`` as a built-in entry replaces it.

Schema, one ``[[model]]`` table per model::

    [[model]]
    name = "gpt-4.1-mini"        # required, unique within the file
    kind = "llm"                 # required: "llm", "stt" or "tts"
    match = "(?i)^(openai/)?gpt-4\\.1-mini(-\\d{4}-\\d{2}-\\d{2})?$"   # optional
    usd_per_million_tokens = { input = 0.40, input_cached_tokens = 0.10, output = 1.60 }
    source = "https://developers.openai.com/api/docs/pricing"   # required
    date = "2026-11-28"          # required, YYYY-MM-DD the price was taken or verified
    note = "..."                 # optional

``match`` is a regular expression (like a Langfuse ``match_pattern``) that must match the
*whole* model name reported by Pipecat metrics, always case-insensitively; it defaults to the
``name`` itself. A model name starting with ``simulated/`` (the offline bot) is looked up with
that prefix removed, so it is priced as the live model it stands in for.

Each entry has exactly one price field, matching its kind (numbers, never negative):

* ``llm``: ``usd_per_million_tokens``, a table with keys ``input`` and ``output`` (required)
  and ``input_cached_tokens``, ``input_cache_creation_tokens`` (optional);
* ``stt``: ``usd_per_minute`` of audio;
* ``tts``: ``usd_per_million_characters`` or ``usd_per_1k_characters``.

They are converted at load time to USD per single usage unit (token, millisecond of audio,
character). A malformed file raises :class:`PricingError` naming the file, the entry and the fix.

Costs are rounded to 10 decimal places (a tenth of a nano-dollar), so equal inputs always
give equal floats; ``total`` is the rounded sum of the rounded parts.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date as _date
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

__all__ = [
    "SIMULATED_PREFIX",
    "USAGE_INPUT",
    "USAGE_INPUT_AUDIO_MS",
    "USAGE_INPUT_CACHED_TOKENS",
    "USAGE_INPUT_CACHE_CREATION_TOKENS",
    "USAGE_INPUT_CHARACTERS",
    "USAGE_OUTPUT",
    "USAGE_OUTPUT_REASONING_TOKENS",
    "USAGE_TOTAL",
    "ModelPrice",
    "PriceTable",
    "PricingError",
]

USAGE_INPUT = "input"
"""LLM prompt tokens NOT read from the cache."""
USAGE_INPUT_CACHED_TOKENS = "input_cached_tokens"
"""LLM prompt tokens read from the prompt cache."""
USAGE_INPUT_CACHE_CREATION_TOKENS = "input_cache_creation_tokens"
"""LLM prompt tokens written to the prompt cache."""
USAGE_OUTPUT = "output"
"""LLM completion tokens, reasoning tokens included."""
USAGE_OUTPUT_REASONING_TOKENS = "output_reasoning_tokens"
"""LLM reasoning tokens: a subset of ``output``, informational, never priced separately."""
USAGE_TOTAL = "total"
"""Sum of the usage; in ``cost_details``, the total cost. Never priced itself."""
USAGE_INPUT_CHARACTERS = "input_characters"
"""TTS characters of text sent to the service."""
USAGE_INPUT_AUDIO_MS = "input_audio_ms"
"""STT milliseconds of audio sent to the service."""

SIMULATED_PREFIX = "simulated/"
"""Prefix of the model names the offline bot reports; stripped before lookup."""

Kind = Literal["llm", "stt", "tts"]

_Fail = Callable[[str], "PricingError"]

_COST_DECIMALS = 10
_PACKAGE = __name__.rpartition(".")[0]
_DEFAULT_FILE = "prices.toml"

# Price field -> kind; TTS fields -> units per priced quantity.
_LLM_FIELD = "usd_per_million_tokens"
_STT_FIELD = "usd_per_minute"
_TTS_FIELDS = {"usd_per_million_characters": 1_000_000, "usd_per_1k_characters": 1_000}
_PRICE_FIELDS = {_LLM_FIELD: "llm", _STT_FIELD: "stt"} | dict.fromkeys(_TTS_FIELDS, "tts")
_LLM_KEYS = (USAGE_INPUT, USAGE_INPUT_CACHED_TOKENS, USAGE_INPUT_CACHE_CREATION_TOKENS, USAGE_OUTPUT)
_LLM_REQUIRED_KEYS = (USAGE_INPUT, USAGE_OUTPUT)
_KINDS = ("llm", "stt", "tts")
_FIELDS = ("name", "kind", "match", "source", "date", "note", *_PRICE_FIELDS)
_EXAMPLE = (
    '[[model]]\nname = "my-model"\nkind = "llm"\nmatch = "(?i)^(openai/)?my-model$"\n'
    "usd_per_million_tokens = { input = 0.40, output = 1.60 }\n"
    'source = "https://example.com/pricing"\ndate = "2026-01-31"'
)


class PricingError(ValueError):
    """A price file is missing or malformed.

    The message names the file, the entry and how to fix it, so it can be shown to the user as is.
    """


@dataclass(frozen=True)
class ModelPrice:
    """The price of one model (or family of model names).

    Attributes:
        name: Name of the entry, unique within a table; a user entry with the same name
            replaces the built-in one.
        kind: ``"llm"``, ``"stt"`` or ``"tts"``.
        pattern: Case-insensitive regex that must match the whole model name.
        unit_prices: USD per ONE usage unit for each priced usage key, e.g.
            ``{"input": 4e-07, "input_cached_tokens": 1e-07, "output": 1.6e-06}``.
        source: Where the price comes from (URL of the pricing page).
        date: ``YYYY-MM-DD`` the price was taken or verified.
        note: Caveats, e.g. that the price is an estimate.
    """

    name: str
    kind: Kind
    pattern: re.Pattern[str]
    unit_prices: Mapping[str, float] = field(hash=False)
    source: str
    date: str
    note: str = ""

    def matches(self, model: str) -> bool:
        """Tell whether ``model`` is priced by this entry.

        Args:
            model: Model name, already stripped of any ``simulated/`` prefix.

        Returns:
            True when :attr:`pattern` matches the whole name.
        """
        return self.pattern.fullmatch(model) is not None

    def cost(self, usage: Mapping[str, int]) -> dict[str, float]:
        """USD cost of ``usage`` at this price.

        Args:
            usage: Usage units by usage key (``USAGE_*``), as sent in ``usage_details``.

        Returns:
            ``{key: cost}`` for each priced key present in ``usage``, in ``usage`` order, then
            ``"total"``. Keys without a price (including ``output_reasoning_tokens`` and
            ``total``) are omitted. Negative usage counts as zero, so no cost is negative.

        Raises:
            TypeError: A usage value is not an integer.
        """
        costs: dict[str, float] = {}
        for key, units in usage.items():
            if isinstance(units, bool) or not isinstance(units, int):
                raise TypeError(f"usage[{key!r}] must be an int, got {type(units).__name__} {units!r}")
            price = self.unit_prices.get(key)
            if price is None or key in (USAGE_TOTAL, USAGE_OUTPUT_REASONING_TOKENS):
                continue
            costs[key] = round(max(units, 0) * price, _COST_DECIMALS)
        costs[USAGE_TOTAL] = round(math.fsum(costs.values()), _COST_DECIMALS)
        return costs


class PriceTable:
    """Ordered model prices: the first entry whose pattern matches a model name prices it.

    Use :meth:`load` for the usual table (built-in prices plus ``PRICING_FILE``);
    ``PriceTable(())`` prices nothing.

    Args:
        entries: The prices, in match order.
    """

    def __init__(self, entries: Iterable[ModelPrice]) -> None:
        """Build a table from ``entries``, in match order."""
        self._entries = tuple(entries)

    @classmethod
    def load(cls, user_file: Path | None = None) -> PriceTable:
        """Load the built-in prices, overridden and extended by ``user_file`` if given.

        Args:
            user_file: TOML file with the same schema as the built-in ``prices.toml``. Its
                entries are matched first; one with the name of a built-in entry replaces it.

        Returns:
            The table: the user's entries, then the built-in ones they do not replace.

        Raises:
            PricingError: ``user_file`` cannot be read or is malformed.
        """
        defaults = _default_entries()
        if user_file is None:
            return cls(defaults)
        try:
            text = Path(user_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise PricingError(
                f"Cannot read the pricing file {user_file}: {exc.strerror or exc}. "
                "Check the path in PRICING_FILE, or unset it to use the built-in prices."
            ) from None
        user = _parse(text, str(user_file))
        replaced = {entry.name.casefold() for entry in user}
        return cls([*user, *(entry for entry in defaults if entry.name.casefold() not in replaced)])

    @property
    def entries(self) -> tuple[ModelPrice, ...]:
        """All entries, in match order."""
        return self._entries

    def find(self, model: str) -> ModelPrice | None:
        """Find the price of ``model``, a model name as reported by Pipecat metrics.

        A leading ``simulated/`` is stripped first, so offline runs are priced as the
        live model they simulate.

        Args:
            model: The model name (surrounding spaces are ignored).

        Returns:
            The first matching entry, or None if no entry matches.
        """
        name = model.strip()
        if name[: len(SIMULATED_PREFIX)].casefold() == SIMULATED_PREFIX:
            name = name[len(SIMULATED_PREFIX) :]
        return next((entry for entry in self._entries if entry.matches(name)), None)

    def cost(self, model: str, usage: Mapping[str, int]) -> dict[str, float] | None:
        """USD cost of ``usage`` for ``model``.

        Args:
            model: The model name, as for :meth:`find`.
            usage: Usage units by usage key (``USAGE_*``), as sent in ``usage_details``.

        Returns:
            None when the model has no price; else ``{key: cost, ..., "total": sum}`` for the
            priced keys present in ``usage`` (see :meth:`ModelPrice.cost`), rounded to
            10 decimals.

        Raises:
            TypeError: A usage value is not an integer.
        """
        price = self.find(model)
        return None if price is None else price.cost(usage)


@lru_cache(maxsize=1)
def _default_entries() -> tuple[ModelPrice, ...]:
    text = resources.files(_PACKAGE).joinpath(_DEFAULT_FILE).read_text(encoding="utf-8")
    return _parse(text, f"{_PACKAGE.replace('.', '/')}/{_DEFAULT_FILE} (built-in)")


def _parse(text: str, file: str) -> tuple[ModelPrice, ...]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PricingError(
            f"{file} is not valid TOML: {exc}. Fix the syntax at that line (strings need double "
            "quotes, and a backslash in a regex is written \\\\ inside them). An entry looks like:\n"
            f"{_EXAMPLE}"
        ) from None
    unknown = sorted(set(document) - {"model"})
    if unknown:
        raise PricingError(
            f"{file}: unknown top-level key(s) {', '.join(map(repr, unknown))}. Put every price in a "
            f"[[model]] table, e.g.:\n{_EXAMPLE}"
        )
    tables = document.get("model", [])
    if not isinstance(tables, list):
        raise PricingError(f"{file}: 'model' must be an array of tables: write [[model]], not [model].")
    entries: list[ModelPrice] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables, start=1):
        entry = _parse_entry(table, file, index)
        first = seen.setdefault(entry.name.casefold(), index)
        if first != index:
            raise PricingError(
                f"{file}: [[model]] #{index} (name {entry.name!r}) has the same name as [[model]] #{first}. "
                "Names must be unique within a file: rename or remove one of them."
            )
        entries.append(entry)
    return tuple(entries)


def _parse_entry(table: object, file: str, index: int) -> ModelPrice:
    where = f"{file}: [[model]] #{index}"
    if not isinstance(table, dict):
        raise PricingError(f"{where} is not a table. Write each entry as a [[model]] table.")
    raw = cast(dict[str, Any], table)
    name = raw.get("name")
    if isinstance(name, str) and name.strip():
        where = f"{where} (name {name.strip()!r})"

    def fail(problem: str) -> PricingError:
        return PricingError(f"{where}: {problem}")

    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise fail(f"unknown field(s) {', '.join(map(repr, unknown))}. Allowed fields: {', '.join(_FIELDS)}.")
    name = _required_text(raw, "name", fail, 'e.g. name = "gpt-4.1-mini"')
    kind = raw.get("kind")
    if kind is None:
        raise fail('missing field \'kind\'. Add kind = "llm", "stt" or "tts".')
    if kind not in _KINDS:
        raise fail(f"unknown kind {kind!r}. Use one of: {', '.join(map(repr, _KINDS))}.")
    pattern = _compile(raw.get("match"), name, fail)
    source = _required_text(raw, "source", fail, 'e.g. source = "https://example.com/pricing"')
    date = _parse_date(raw.get("date"), fail)
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise fail("'note' must be a string.")
    unit_prices = _unit_prices(raw, cast(Kind, kind), fail)
    return ModelPrice(
        name=name,
        kind=cast(Kind, kind),
        pattern=pattern,
        unit_prices=MappingProxyType(unit_prices),
        source=source,
        date=date,
        note=note.strip(),
    )


def _required_text(raw: Mapping[str, Any], key: str, fail: _Fail, example: str) -> str:
    value = raw.get(key)
    if value is None:
        raise fail(f"missing field {key!r}. Add it, {example}.")
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{key!r} must be a non-empty string, {example}.")
    return value.strip()


def _compile(match: object, name: str, fail: _Fail) -> re.Pattern[str]:
    if match is None:
        return re.compile(re.escape(name), re.IGNORECASE)
    if not isinstance(match, str) or not match:
        raise fail("'match' must be a non-empty string holding a regular expression.")
    try:
        return re.compile(match, re.IGNORECASE)
    except re.error as exc:
        raise fail(
            f"'match' is not a valid regular expression ({exc}): {match!r}. Fix the regex; in a TOML "
            "double-quoted string write \\\\ for each backslash, or use a single-quoted literal string."
        ) from None


def _parse_date(value: object, fail: _Fail) -> str:
    if value is None:
        raise fail("missing field 'date'. Add the day the price was taken, e.g. date = \"2026-01-31\".")
    if isinstance(value, _date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return _date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise fail(f"'date' must be a YYYY-MM-DD date, got {value!r}. Write e.g. date = \"2026-01-31\".")


def _unit_prices(raw: Mapping[str, Any], kind: Kind, fail: _Fail) -> dict[str, float]:
    fields = [key for key in _PRICE_FIELDS if key in raw]
    expected = {
        "llm": f"{_LLM_FIELD} = {{ input = 0.40, output = 1.60 }}",
        "stt": f"{_STT_FIELD} = 0.0048",
        "tts": "usd_per_million_characters = 15.0 (or usd_per_1k_characters = 0.015)",
    }[kind]
    if not fields:
        raise fail(f"missing price. A {kind!r} entry needs {expected}.")
    if len(fields) > 1:
        raise fail(f"has several prices ({', '.join(fields)}). Keep exactly one: {expected}.")
    (price_field,) = fields
    if _PRICE_FIELDS[price_field] != kind:
        raise fail(f"{price_field!r} is not a price for kind {kind!r}. Use {expected}.")
    value = raw[price_field]
    if kind == "stt":
        return {USAGE_INPUT_AUDIO_MS: _per_unit(_amount(value, price_field, fail), 60_000)}
    if kind == "tts":
        return {USAGE_INPUT_CHARACTERS: _per_unit(_amount(value, price_field, fail), _TTS_FIELDS[price_field])}
    if not isinstance(value, dict):
        raise fail(f"{_LLM_FIELD!r} must be a table of prices by usage key, e.g. {expected}.")
    unknown = sorted(set(value) - set(_LLM_KEYS))
    if unknown:
        hint = (
            " Reasoning tokens are billed as output: do not price them separately."
            if USAGE_OUTPUT_REASONING_TOKENS in unknown
            else ""
        )
        raise fail(
            f"{_LLM_FIELD} has unknown usage key(s) {', '.join(map(repr, unknown))}. "
            f"Allowed: {', '.join(_LLM_KEYS)}.{hint}"
        )
    missing = [key for key in _LLM_REQUIRED_KEYS if key not in value]
    if missing:
        raise fail(f"{_LLM_FIELD} is missing {' and '.join(map(repr, missing))}. Add them, e.g. {expected}.")
    return {
        key: _per_unit(_amount(value[key], f"{_LLM_FIELD}.{key}", fail), 1_000_000) for key in _LLM_KEYS if key in value
    }


def _amount(value: object, label: str, fail: _Fail) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"{label} must be a number of US dollars, got {value!r}. Write it without quotes, e.g. 0.40.")
    if not math.isfinite(value):
        raise fail(f"{label} must be a finite number, got {value!r}.")
    if value < 0:
        raise fail(f"{label} is negative ({value!r}). Prices must be >= 0: fix the sign.")
    return float(value)


def _per_unit(amount: float, units: int) -> float:
    """Divide in decimal so that e.g. 0.40 per 1M tokens gives exactly 4e-07, not 4.0000000000000003e-07."""
    return float(Decimal(repr(amount)) / units)
