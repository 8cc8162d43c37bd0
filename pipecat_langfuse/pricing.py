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
    kind = "llm"                 # required: "llm", "stt", "tts" or "s2s" (speech-to-speech)
    match = "(?i)^(openai/)?gpt-4\\.1-mini(-\\d{4}-\\d{2}-\\d{2})?$"   # optional
    usd_per_million_tokens = { input = 0.40, input_cached_tokens = 0.10, output = 1.60 }
    source = "https://developers.openai.com/api/docs/pricing"   # required
    date = "2026-11-28"          # required, YYYY-MM-DD the price was taken or verified
    note = "..."                 # optional

``match`` is a regular expression (like a Langfuse ``match_pattern``) that must match the
*whole* model name reported by Pipecat metrics, always case-insensitively; it defaults to the
``name`` itself. A model name starting with ``simulated/`` (the offline bot) is looked up with
that prefix removed, so it is priced as the live model it stands in for.

Each entry has exactly one price field, in the unit the vendor bills (numbers, never negative).
The usage key each one prices is the Langfuse ``usage_details`` key the generation carries:

==============================  ========  ==================================================
price field                     kinds     usage key (unit)
==============================  ========  ==================================================
``usd_per_million_tokens``      llm       ``input``, ``output`` (required),
                                          ``input_cached_tokens``, ``input_cache_creation_tokens``;
                                          ``output_reasoning_tokens`` is priced as ``output``
``usd_per_million_tokens``      s2s       ``input_text_tokens``, ``input_audio_tokens``,
                                          ``output_text_tokens``, ``output_audio_tokens``
                                          (required), ``input_cached_text_tokens``,
                                          ``input_cached_audio_tokens``; or Gemini's
                                          ``input_text``, ``input_audio``, ``output_text``,
                                          ``output_audio`` (see :data:`S2S_USAGE_KEYS`)
``usd_per_minute``              s2s       ``session_ms`` (a model billed by session time)
``usd_per_million_tokens``      stt       ``input_audio_tokens`` (required), ``input``, ``output``
``usd_per_million_tokens``      tts       ``output_audio_tokens`` (required), ``input``
``usd_per_minute``              stt       ``input_audio_ms`` (audio sent, silence included)
``usd_per_hour``                stt       ``input_audio_ms``
``usd_per_million_characters``  tts       ``input_characters`` (text sent)
``usd_per_1k_characters``       tts       ``input_characters``
``usd_per_generated_minute``    tts       ``output_audio_ms`` (audio received)
``usd_per_1k_requests``         stt, tts  ``requests`` (usage reports: one per request)
``self_hosted = true``          any       the kind's measured usage, at an explicit $0
==============================  ========  ==================================================

Audio tokens of STT and TTS are not reported by Pipecat: an entry that prices ``input_audio_tokens`` or
``output_audio_tokens`` needs ``audio_tokens_per_second`` (the vendor's rate), and the tracer
derives them from the audio duration; text tokens of STT/TTS (``input``/``output``) are counted
with the tokenizer. Such usage is flagged ``usage_estimated`` in the generation's metadata.

They are converted at load time to USD per single usage unit. Each entry also records where
it comes from (:attr:`ModelPrice.provenance`): ``builtin``, ``PRICING_FILE`` or ``self-hosted``.
A malformed file raises :class:`PricingError` naming the file, the entry and the fix.

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
    "S2S_USAGE_KEYS",
    "SIMULATED_PREFIX",
    "USAGE_INPUT",
    "USAGE_INPUT_AUDIO_MS",
    "USAGE_INPUT_AUDIO_TOKENS",
    "USAGE_INPUT_CACHED_AUDIO_TOKENS",
    "USAGE_INPUT_CACHED_TEXT_TOKENS",
    "USAGE_INPUT_CACHED_TOKENS",
    "USAGE_INPUT_CACHE_CREATION_TOKENS",
    "USAGE_INPUT_CHARACTERS",
    "USAGE_INPUT_TEXT_TOKENS",
    "USAGE_OUTPUT",
    "USAGE_OUTPUT_AUDIO_MS",
    "USAGE_OUTPUT_AUDIO_TOKENS",
    "USAGE_OUTPUT_REASONING_TOKENS",
    "USAGE_OUTPUT_TEXT_TOKENS",
    "USAGE_REQUESTS",
    "USAGE_SESSION_MS",
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
"""LLM completion tokens, reasoning tokens excluded (they are ``output_reasoning_tokens``)."""
USAGE_OUTPUT_REASONING_TOKENS = "output_reasoning_tokens"
"""LLM reasoning tokens, apart from ``output`` as Langfuse counts them; priced as output."""
USAGE_TOTAL = "total"
"""Sum of the usage; in ``cost_details``, the total cost. Never priced itself."""
USAGE_INPUT_CHARACTERS = "input_characters"
"""TTS characters of text sent to the service."""
USAGE_INPUT_AUDIO_MS = "input_audio_ms"
"""STT milliseconds of audio sent to the service."""
USAGE_OUTPUT_AUDIO_MS = "output_audio_ms"
"""TTS milliseconds of audio the service generated."""
USAGE_REQUESTS = "requests"
"""STT/TTS requests: the service's usage reports (Pipecat reports once per request)."""
USAGE_INPUT_AUDIO_TOKENS = "input_audio_tokens"
"""Audio tokens of the audio sent (token-billed STT), derived from its duration."""
USAGE_OUTPUT_AUDIO_TOKENS = "output_audio_tokens"
"""Audio tokens of the audio generated (token-billed TTS), derived from its duration."""
USAGE_INPUT_TEXT_TOKENS = "input_text_tokens"
"""Speech-to-speech: text (and image) prompt tokens not read from the cache."""
USAGE_INPUT_CACHED_TEXT_TOKENS = "input_cached_text_tokens"
"""Speech-to-speech: text prompt tokens read from the cache."""
USAGE_INPUT_CACHED_AUDIO_TOKENS = "input_cached_audio_tokens"
"""Speech-to-speech: audio prompt tokens read from the cache."""
USAGE_OUTPUT_TEXT_TOKENS = "output_text_tokens"
"""Speech-to-speech: text output tokens (the transcript of the reply, and any reasoning)."""
USAGE_SESSION_MS = "session_ms"
"""Speech-to-speech billed by the minute: milliseconds of the session, split over its responses."""
S2S_USAGE_KEYS = {
    "openai": {
        "input_text": USAGE_INPUT_TEXT_TOKENS,
        "input_cached_text": USAGE_INPUT_CACHED_TEXT_TOKENS,
        "input_audio": USAGE_INPUT_AUDIO_TOKENS,
        "input_cached_audio": USAGE_INPUT_CACHED_AUDIO_TOKENS,
        "output_text": USAGE_OUTPUT_TEXT_TOKENS,
        "output_audio": USAGE_OUTPUT_AUDIO_TOKENS,
    },
    "gemini": {
        "input_text": "input_text",
        "input_cached_text": "input_cached_text",
        "input_audio": "input_audio",
        "input_cached_audio": "input_cached_audio",
        "output_text": "output_text",
        "output_audio": "output_audio",
    },
}
"""Speech-to-speech usage keys by naming scheme: bucket -> the key Langfuse's default prices use.

``openai``: the keys of Langfuse's ``gpt-4o-realtime-preview`` definition, used by every
speech-to-speech model but Gemini's. ``gemini``: the unsuffixed keys of its
``gemini-live-2.5-flash-native-audio`` definition. The six buckets are disjoint: their sum is the
tokens the provider bills.
"""

PROVENANCE_BUILTIN = "builtin"
"""The price comes from the table shipped with this package."""
PROVENANCE_PRICING_FILE = "PRICING_FILE"
"""The price comes from the user's ``PRICING_FILE``."""
PROVENANCE_SELF_HOSTED = "self-hosted"
"""The model runs on the user's own hardware: an explicit $0."""
PROVENANCE_UNPRICED = "unpriced"
"""No entry matches the model: its usage is recorded without a cost (never as $0)."""

SIMULATED_PREFIX = "simulated/"
"""Prefix of the model names the offline bot reports; stripped before lookup."""

Kind = Literal["llm", "stt", "tts", "s2s"]

_Fail = Callable[[str], "PricingError"]

_COST_DECIMALS = 10
_PACKAGE = __name__.rpartition(".")[0]
_DEFAULT_FILE = "prices.toml"

# Scalar price field -> {kind: (usage key it prices, usage units per priced quantity)}.
_SCALAR_FIELDS: dict[str, dict[str, tuple[str, int]]] = {
    "usd_per_minute": {"stt": (USAGE_INPUT_AUDIO_MS, 60_000), "s2s": (USAGE_SESSION_MS, 60_000)},
    "usd_per_hour": {"stt": (USAGE_INPUT_AUDIO_MS, 3_600_000)},
    "usd_per_million_characters": {"tts": (USAGE_INPUT_CHARACTERS, 1_000_000)},
    "usd_per_1k_characters": {"tts": (USAGE_INPUT_CHARACTERS, 1_000)},
    "usd_per_generated_minute": {"tts": (USAGE_OUTPUT_AUDIO_MS, 60_000)},
    "usd_per_1k_requests": {"stt": (USAGE_REQUESTS, 1_000), "tts": (USAGE_REQUESTS, 1_000)},
}
_TOKENS_FIELD = "usd_per_million_tokens"
_SELF_HOSTED_FIELD = "self_hosted"
_AUDIO_RATE_FIELD = "audio_tokens_per_second"
_PRICE_FIELDS = (_TOKENS_FIELD, *_SCALAR_FIELDS, _SELF_HOSTED_FIELD)
# Token price keys by kind: (allowed, required).
_TOKEN_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "llm": (
        (USAGE_INPUT, USAGE_INPUT_CACHED_TOKENS, USAGE_INPUT_CACHE_CREATION_TOKENS, USAGE_OUTPUT),
        (USAGE_INPUT, USAGE_OUTPUT),
    ),
    "stt": ((USAGE_INPUT_AUDIO_TOKENS, USAGE_INPUT, USAGE_OUTPUT), (USAGE_INPUT_AUDIO_TOKENS,)),
    "tts": ((USAGE_OUTPUT_AUDIO_TOKENS, USAGE_INPUT), (USAGE_OUTPUT_AUDIO_TOKENS,)),
    # One naming scheme per entry (checked in _unit_prices); its text and audio, in and out, are required.
    "s2s": (
        tuple(key for scheme in S2S_USAGE_KEYS.values() for key in scheme.values()),
        (),
    ),
}
_AUDIO_TOKEN_KEYS = (USAGE_INPUT_AUDIO_TOKENS, USAGE_OUTPUT_AUDIO_TOKENS)
# What a self-hosted entry prices at $0: the usage the tracer measures for the kind.
_SELF_HOSTED_KEYS = {
    "llm": (USAGE_INPUT, USAGE_OUTPUT),
    "stt": (USAGE_INPUT_AUDIO_MS,),
    "tts": (USAGE_INPUT_CHARACTERS,),
    "s2s": tuple(S2S_USAGE_KEYS["openai"].values()),
}
_EXPECTED = {
    "llm": f"{_TOKENS_FIELD} = {{ input = 0.40, output = 1.60 }}",
    "stt": "usd_per_minute = 0.0048 (or usd_per_hour, usd_per_1k_requests, usd_per_million_tokens, self_hosted = true)",
    "tts": "usd_per_million_characters = 15.0 (or usd_per_1k_characters, usd_per_generated_minute, "
    "usd_per_1k_requests, usd_per_million_tokens, self_hosted = true)",
    "s2s": f"{_TOKENS_FIELD} = {{ input_text_tokens = 4, input_cached_text_tokens = 0.4, input_audio_tokens = 32, "
    "input_cached_audio_tokens = 0.4, output_text_tokens = 16, output_audio_tokens = 64 } (Gemini: input_text, "
    "input_audio, output_text, output_audio), or usd_per_minute = 0.05 for a model billed by session time",
}
_KINDS = ("llm", "stt", "tts", "s2s")
_FIELDS = ("name", "kind", "match", "source", "date", "note", _AUDIO_RATE_FIELD, *_PRICE_FIELDS)
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
        origin: ``"builtin"`` or ``"PRICING_FILE"``: the table the entry was read from.
        self_hosted: The model runs on the user's hardware (``self_hosted = true``): priced at $0.
        audio_tokens_per_second: The vendor's audio-token rate, for entries that price audio tokens.
        listed: The price as the table writes it, e.g. ``usd_per_minute = 0.0048``.
    """

    name: str
    kind: Kind
    pattern: re.Pattern[str]
    unit_prices: Mapping[str, float] = field(hash=False)
    source: str
    date: str
    note: str = ""
    origin: str = PROVENANCE_BUILTIN
    self_hosted: bool = False
    audio_tokens_per_second: float | None = None
    listed: str = ""

    @property
    def provenance(self) -> str:
        """Where the price comes from: ``"builtin"``, ``"PRICING_FILE"`` or ``"self-hosted"``."""
        return PROVENANCE_SELF_HOSTED if self.self_hosted else self.origin

    def audio_tokens(self, audio_ms: int) -> int:
        """Audio tokens of ``audio_ms`` milliseconds at :attr:`audio_tokens_per_second` (rounded up).

        Raises:
            ValueError: The entry prices no audio tokens.
        """
        if self.audio_tokens_per_second is None:
            raise ValueError(f"{self.name} prices no audio tokens")
        return math.ceil(Decimal(max(audio_ms, 0)) * Decimal(repr(self.audio_tokens_per_second)) / 1000)

    def age_days(self, today: _date) -> int:
        """Days from :attr:`date` to ``today``."""
        return (today - _date.fromisoformat(self.date)).days

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
            ``"total"``. Keys without a price (and ``total``) are omitted. Negative usage counts
            as zero, so no cost is negative.

        Raises:
            TypeError: A usage value is not an integer.
        """
        costs: dict[str, float] = {}
        for key, units in usage.items():
            if isinstance(units, bool) or not isinstance(units, int):
                raise TypeError(f"usage[{key!r}] must be an int, got {type(units).__name__} {units!r}")
            price = self.unit_prices.get(key)
            if price is None or key == USAGE_TOTAL:
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
        user = _parse(text, str(user_file), PROVENANCE_PRICING_FILE)
        replaced = {entry.name.casefold() for entry in user}
        return cls([*user, *(entry for entry in defaults if entry.name.casefold() not in replaced)])

    @property
    def entries(self) -> tuple[ModelPrice, ...]:
        """All entries, in match order."""
        return self._entries

    def find(self, model: str, kind: str | None = None, *, service: str | None = None) -> ModelPrice | None:
        """Find the price of ``model``, a model name as reported by Pipecat metrics.

        A leading ``simulated/`` is stripped first, so offline runs are priced as the
        live model they simulate.

        Args:
            model: The model name (surrounding spaces are ignored).
            kind: Only entries of this kind (``"stt"``, ``"llm"``, ``"tts"``, ``"s2s"``), when given.
            service: The Pipecat service class reporting ``model``. An entry matching
                ``"<service>/<model>"`` wins: it prices a service that bills differently from
                the model's vendor (e.g. a model self-hosted on SageMaker).

        Returns:
            The first matching entry, or None if no entry matches.
        """
        name = model.strip()
        if name[: len(SIMULATED_PREFIX)].casefold() == SIMULATED_PREFIX:
            name = name[len(SIMULATED_PREFIX) :]
        candidates = (*((f"{service}/{name}",) if service else ()), name)
        for candidate in candidates:
            for entry in self._entries:
                if (kind is None or entry.kind == kind) and entry.matches(candidate):
                    return entry
        return None

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
    return _parse(text, f"{_PACKAGE.replace('.', '/')}/{_DEFAULT_FILE} (built-in)", PROVENANCE_BUILTIN)


def _parse(text: str, file: str, origin: str) -> tuple[ModelPrice, ...]:
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
        entry = _parse_entry(table, file, index, origin)
        first = seen.setdefault(entry.name.casefold(), index)
        if first != index:
            raise PricingError(
                f"{file}: [[model]] #{index} (name {entry.name!r}) has the same name as [[model]] #{first}. "
                "Names must be unique within a file: rename or remove one of them."
            )
        entries.append(entry)
    return tuple(entries)


def _parse_entry(table: object, file: str, index: int, origin: str) -> ModelPrice:
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
        origin=origin,
        self_hosted=_SELF_HOSTED_FIELD in raw,
        audio_tokens_per_second=_audio_rate(raw, unit_prices, fail),
        listed=_listed(raw),
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
    """USD per single usage unit, by usage key, of the entry's one price field."""
    expected = _EXPECTED[kind]
    fields = [key for key in _PRICE_FIELDS if key in raw]
    if not fields:
        raise fail(f"missing price. A {kind!r} entry needs {expected}.")
    if len(fields) > 1:
        raise fail(f"has several prices ({', '.join(fields)}). Keep exactly one: {expected}.")
    (price_field,) = fields
    value = raw[price_field]
    if price_field == _SELF_HOSTED_FIELD:
        if value is not True:
            raise fail("'self_hosted' can only be true: leave it out, or give a price instead.")
        return dict.fromkeys(_SELF_HOSTED_KEYS[kind], 0.0)
    if price_field in _SCALAR_FIELDS:
        if kind not in _SCALAR_FIELDS[price_field]:
            raise fail(f"{price_field!r} is not a price for kind {kind!r}. Use {expected}.")
        key, units = _SCALAR_FIELDS[price_field][kind]
        return {key: _per_unit(_amount(value, price_field, fail), units)}
    allowed, required = _TOKEN_KEYS[kind]
    if not isinstance(value, dict):
        raise fail(f"{_TOKENS_FIELD!r} must be a table of prices by usage key, e.g. {expected}.")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        hint = (
            " Reasoning tokens are billed as output: do not price them separately."
            if USAGE_OUTPUT_REASONING_TOKENS in unknown
            else ""
        )
        raise fail(
            f"{_TOKENS_FIELD} has unknown usage key(s) {', '.join(map(repr, unknown))} for kind {kind!r}. "
            f"Allowed: {', '.join(allowed)}.{hint}"
        )
    if kind == "s2s":
        required = _s2s_scheme_keys(value, fail, expected)
    missing = [key for key in required if key not in value]
    if missing:
        raise fail(f"{_TOKENS_FIELD} is missing {' and '.join(map(repr, missing))}. Add them, e.g. {expected}.")
    prices = {key: _amount(value[key], f"{_TOKENS_FIELD}.{key}", fail) for key in allowed if key in value}
    if kind == "llm":  # reasoning tokens are billed as output; Langfuse counts them apart
        prices[USAGE_OUTPUT_REASONING_TOKENS] = prices[USAGE_OUTPUT]
    return {key: _per_unit(amount, 1_000_000) for key, amount in prices.items()}


def _s2s_scheme_keys(value: Mapping[str, Any], fail: _Fail, expected: str) -> tuple[str, ...]:
    """The required keys of a speech-to-speech token price: one naming scheme's text and audio, in and out."""
    schemes = [name for name, keys in S2S_USAGE_KEYS.items() if set(value) & set(keys.values())]
    if len(schemes) > 1:
        raise fail(f"{_TOKENS_FIELD} mixes the OpenAI-style and Gemini-style usage keys. Use one: {expected}.")
    keys = S2S_USAGE_KEYS[schemes[0] if schemes else "openai"]
    return tuple(keys[bucket] for bucket in ("input_text", "input_audio", "output_text", "output_audio"))


def _listed(raw: Mapping[str, Any]) -> str:
    """The entry's price field as written (already validated), e.g. ``usd_per_minute = 0.0048``."""
    field_name = next(key for key in _PRICE_FIELDS if key in raw)
    value = raw[field_name]
    if isinstance(value, dict):
        text = "{ " + ", ".join(f"{key} = {amount:g}" for key, amount in value.items()) + " }"
    else:
        text = "true" if value is True else f"{value:g}"
    rate = raw.get(_AUDIO_RATE_FIELD)
    return f"{field_name} = {text}" + (f", {_AUDIO_RATE_FIELD} = {rate:g}" if rate is not None else "")


def _audio_rate(raw: Mapping[str, Any], unit_prices: Mapping[str, float], fail: _Fail) -> float | None:
    """``audio_tokens_per_second``: required exactly when audio tokens are priced that the tracer derives.

    A speech-to-speech model reports its audio tokens itself.
    """
    priced = [key for key in _AUDIO_TOKEN_KEYS if key in unit_prices and raw.get("kind") != "s2s"]
    value = raw.get(_AUDIO_RATE_FIELD)
    if not priced:
        if value is not None:
            raise fail(f"'{_AUDIO_RATE_FIELD}' is only used with a price for {' or '.join(_AUDIO_TOKEN_KEYS)}.")
        return None
    if value is None:
        raise fail(
            f"prices {priced[0]} but has no '{_AUDIO_RATE_FIELD}'. Add the vendor's rate, e.g. "
            f"{_AUDIO_RATE_FIELD} = 10, with its source in the note."
        )
    rate = _amount(value, _AUDIO_RATE_FIELD, fail)
    if rate == 0:
        raise fail(f"'{_AUDIO_RATE_FIELD}' must be above 0.")
    return rate


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
