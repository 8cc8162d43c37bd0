"""Values shared by both sides of the reconciliation: periods, billed lines, observations, input errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

ALL_MODELS = "*"
"""Model name of a billed line that covers every model of its provider (Cartesia bills credits, not models)."""

PROVIDER_DEEPGRAM = "deepgram"
PROVIDER_OPENAI = "openai"
PROVIDER_CARTESIA = "cartesia"

UNIT_CREDITS = "credits"
"""Cartesia's billing unit; the recorded side converts its usage to credits (see ``_recorded``)."""

ONE_DAY = timedelta(days=1)


class ReconcileInputError(ValueError):
    """An input file, option or variable is missing or malformed.

    The message names the file (or variable) and the fix, so it is shown to the user as is (exit code 2).
    """


@dataclass(frozen=True, order=True)
class Period:
    """Whole UTC days from ``start`` (inclusive) to ``end`` (exclusive)."""

    start: date
    end: date

    @classmethod
    def day(cls, day: date) -> Period:
        """The period of the single day ``day``."""
        return cls(day, day + ONE_DAY)

    def contains(self, day: date) -> bool:
        """Whether ``day`` is one of the period's days."""
        return self.start <= day < self.end

    @property
    def label(self) -> str:
        """``2026-11-20`` for one day, ``2026-11-01..2026-11-07`` (both inclusive) for several."""
        last = self.end - ONE_DAY
        return self.start.isoformat() if last == self.start else f"{self.start.isoformat()}..{last.isoformat()}"


def utc_day(moment: datetime) -> date:
    """The UTC calendar day of ``moment`` (a naive datetime counts as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).date()


@dataclass
class BilledLine:
    """What a provider's export says about one model in one period.

    Attributes:
        provider: ``deepgram``, ``openai`` or ``cartesia``.
        model: The model, named like the price table's entry when one matches; :data:`ALL_MODELS` for
            an export without models.
        period: The days the line covers.
        units: Billed units by usage key (the ``usage_details`` keys of :mod:`pipecat_langfuse.pricing`,
            or :data:`UNIT_CREDITS`), only the keys the export reports.
        cost: Billed USD, None when the export has no cost.
        calls: Billed requests, only when they count the same thing as our generations (OpenAI
            completions), else None.
        sources: The files the line was read from.
    """

    provider: str
    model: str
    period: Period
    units: dict[str, Decimal] = field(default_factory=dict)
    cost: Decimal | None = None
    calls: int | None = None
    sources: list[str] = field(default_factory=list)

    def merge(self, units: Mapping[str, Decimal], cost: Decimal | None, calls: int | None, source: str) -> None:
        """Add another result of the same (provider, model, period), e.g. a usage file and a cost file."""
        for key, value in units.items():
            self.units[key] = self.units.get(key, Decimal(0)) + value
        if cost is not None:
            self.cost = cost if self.cost is None else self.cost + cost
        if calls is not None:
            self.calls = calls if self.calls is None else self.calls + calls
        if source not in self.sources:
            self.sources.append(source)


@dataclass(frozen=True)
class Observation:
    """One generation as recorded: by Langfuse (API, JSON dump) or waiting in the spool.

    Attributes:
        id: The observation id (the span id in hex): the same generation read from two sources counts once.
        model: The model name as the tracer reported it (``simulated/…`` for offline runs).
        start: When the generation started (UTC).
        usage: ``usage_details``: integer units by usage key.
        cost: ``cost_details["total"]`` in USD; None when the generation has no cost (unpriced model).
    """

    id: str
    model: str
    start: datetime
    usage: Mapping[str, int]
    cost: Decimal | None
