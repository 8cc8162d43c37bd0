"""``uv run reconcile``: does what Langfuse recorded match the provider's invoice?

It compares, per provider, model and day, the generations our traces recorded (usage and cost)
with a provider's usage export (billed units and cost), and classifies each gap:

* ``coverage``: calls or days missing on one side (a line only one side has, or OpenAI's request
  count differing from our count of generations);
* ``units``: the usage differs (we measure audio, characters or tokens otherwise than the provider);
* ``rate``: the units agree but the cost does not (our price table's rate is not the billed rate;
  the table shows the implied rate, billed cost / billed units, next to ours).

Gaps over 5% (``--threshold``) are flagged. Usage::

    uv run reconcile --openai usage.json --openai costs.json --langfuse
    uv run reconcile --deepgram dg-usage.json --deepgram dg-billing.json --spool --observations dump.json
    uv run reconcile --cartesia credits.json --cartesia-usd-per-credit 0.00003 --langfuse --json

Provider side (formats and their sources: :mod:`app.reconcile._billed`): Deepgram's usage and
billing breakdowns, OpenAI's completions usage and costs, Cartesia's credit usage, each the JSON
answer of the vendor's API saved to a file. Recorded side (:mod:`app.reconcile._recorded`): the
Langfuse public API (``--langfuse``: keys and host as the bot reads them, from the environment and
``./.env``), the spool (``--spool [DIR]``, default ``LANGFUSE_SPOOL_DIR``), or a JSON dump of the
observations API (``--observations``); several sources add up, a generation counted once by id.
Models are matched by their price table entry (built-in + ``PRICING_FILE``), else by name;
``--alias`` maps an export's name for a model to ours. The offline bot's ``simulated/…``
generations are left out unless ``--include-simulated``.

Exit codes:
    0: every line agrees within the threshold.
    1: at least one gap is flagged.
    2: an input file, option or variable is missing or malformed (the message names it and the fix).
    3: unexpected error in reconcile itself (run with ``--verbose`` for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from pathlib import Path

from loguru import logger

# pipecat_langfuse imports Pipecat, whose import logs a banner to stderr; keep it out of the report.
logger.disable("pipecat")
from app._cli import exit_codes, load_local_dotenv  # noqa: E402
from app.reconcile._billed import BilledExport, parse_cartesia, parse_deepgram, parse_openai  # noqa: E402
from app.reconcile._compare import (  # noqa: E402
    DEFAULT_THRESHOLD_PCT,
    GAP_COVERAGE,
    GAP_RATE,
    GAP_UNITS,
    RATE_SUFFIXES,
    Report,
    Row,
    Side,
    reconcile,
)
from app.reconcile._recorded import (  # noqa: E402
    dedupe,
    fetch_observations,
    read_observations_file,
    read_spool,
)
from app.reconcile._types import ONE_DAY, UNIT_CREDITS, Observation, Period, ReconcileInputError  # noqa: E402
from pipecat_langfuse.pricing import (  # noqa: E402
    USAGE_INPUT,
    USAGE_INPUT_AUDIO_MS,
    USAGE_INPUT_CACHE_CREATION_TOKENS,
    USAGE_INPUT_CACHED_TOKENS,
    USAGE_INPUT_CHARACTERS,
    USAGE_OUTPUT,
    USAGE_OUTPUT_AUDIO_MS,
    PriceTable,
    PricingError,
)
from pipecat_langfuse.settings import (  # noqa: E402
    ENABLE_TRACING,
    LANGFUSE_SPOOL_DIR,
    SettingsError,
    TracingSettings,
)

logger.enable("pipecat")

__all__ = [
    "GAP_COVERAGE",
    "GAP_RATE",
    "GAP_UNITS",
    "ExitCode",
    "ReconcileInputError",
    "Report",
    "main",
    "parse_cartesia",
    "parse_deepgram",
    "parse_openai",
    "read_observations_file",
    "read_spool",
    "reconcile",
    "render",
]


class ExitCode(IntEnum):
    """Exit status of ``reconcile``."""

    OK = 0
    GAP = 1
    INPUT = 2
    UNEXPECTED = 3


_SHORT = {
    USAGE_INPUT: "in",
    USAGE_INPUT_CACHED_TOKENS: "cached",
    USAGE_INPUT_CACHE_CREATION_TOKENS: "cache-write",
    USAGE_OUTPUT: "out",
    USAGE_INPUT_AUDIO_MS: "audio",
    USAGE_OUTPUT_AUDIO_MS: "audio out",
    USAGE_INPUT_CHARACTERS: "chars",
    UNIT_CREDITS: "credits",
}


@dataclass(frozen=True)
class _Inputs:
    exports: list[BilledExport]
    observations: list[Observation]
    prices: PriceTable
    window: Period


def run(args: argparse.Namespace, env: Mapping[str, str]) -> Report:
    """Read the inputs named by ``args`` and compare them.

    Raises:
        ReconcileInputError: An input, option or variable is missing or malformed.
    """
    aliases = _aliases(args.alias)
    inputs = _read_inputs(args, env)
    return reconcile(
        inputs.exports,
        inputs.observations,
        inputs.prices,
        window=inputs.window,
        threshold_pct=args.threshold,
        include_simulated=args.include_simulated,
        aliases=aliases,
    )


def _read_inputs(args: argparse.Namespace, env: Mapping[str, str]) -> _Inputs:
    if not (args.deepgram or args.openai or args.cartesia):
        raise ReconcileInputError(
            "No provider export given. Pass at least one of --deepgram FILE, --openai FILE, --cartesia FILE "
            "(the JSON answer of the vendor's usage API; see --help)."
        )
    if not (args.langfuse or args.spool is not None or args.observations):
        raise ReconcileInputError(
            "No recorded side given. Pass --langfuse (the Langfuse API), --spool [DIR] and/or --observations FILE."
        )
    try:
        settings = TracingSettings.from_env({**env, ENABLE_TRACING: "true"} if args.langfuse else env)
    except SettingsError as exc:
        raise ReconcileInputError(f"Invalid configuration: {exc}") from None
    try:
        prices = PriceTable.load(settings.pricing_file)
    except PricingError as exc:
        raise ReconcileInputError(str(exc)) from None

    exports = [parse_deepgram(Path(p)) for p in args.deepgram]
    exports += [parse_openai(Path(p)) for p in args.openai]
    exports += [parse_cartesia(Path(p), args.cartesia_usd_per_credit) for p in args.cartesia]
    window = _window(exports, args.since, args.until)

    observations: list[Observation] = []
    if args.langfuse:
        start = datetime(window.start.year, window.start.month, window.start.day, tzinfo=UTC)
        end = datetime(window.end.year, window.end.month, window.end.day, tzinfo=UTC)
        observations += fetch_observations(settings, start, end)
    if args.spool is not None:
        folder = Path(args.spool) if args.spool else settings.spool_dir
        if folder is None:
            raise ReconcileInputError(
                f"Spooling is off ({LANGFUSE_SPOOL_DIR}={env.get(LANGFUSE_SPOOL_DIR)}), so there is no spool to read. "
                "Pass the folder: --spool DIR."
            )
        observations += read_spool(folder)
    for path in args.observations:
        observations += read_observations_file(Path(path))
    return _Inputs(exports, dedupe(observations), prices, window)


def _window(exports: Sequence[BilledExport], since: date | None, until: date | None) -> Period:
    lines = [line for export in exports for line in export.lines]
    if (since is None or until is None) and not lines:
        raise ReconcileInputError(
            "The exports hold no lines, so there is no period to compare. Pass --from and --to, or check the files."
        )
    start = since if since is not None else min(line.period.start for line in lines)
    end = until + ONE_DAY if until is not None else max(line.period.end for line in lines)
    if end <= start:
        raise ReconcileInputError(f"--to ({end - ONE_DAY}) is before --from ({start}). Swap them.")
    return Period(start, end)


def _aliases(pairs: Sequence[str]) -> dict[str, str]:
    aliases = {}
    for pair in pairs:
        theirs, sep, ours = pair.partition("=")
        if not sep or not theirs.strip() or not ours.strip():
            raise ReconcileInputError(f"--alias {pair!r} must be THEIR_NAME=OUR_MODEL, e.g. --alias 4d892fb6=nova-3.")
        aliases[theirs.strip()] = ours.strip()
    return aliases


def render(report: Report) -> list[str]:
    """The report as the lines ``reconcile`` prints: a verdict, a table, then the flagged rows' reasons and notes."""
    threshold = f"{report.threshold_pct:g}%"
    flagged = report.flagged
    span = report.window.label
    if not report.rows:
        verdict = f"NOTHING TO COMPARE: no recorded or billed usage in {span}."
    elif not flagged:
        verdict = f"RECONCILE OK: all {len(report.rows)} lines agree within {threshold} ({span})."
    else:
        counts = ", ".join(
            f"{gap} {n}"
            for gap in (GAP_COVERAGE, GAP_UNITS, GAP_RATE)
            if (n := sum(1 for r in flagged if r.gap == gap))
        )
        verdict = (
            f"GAPS FOUND: {len(flagged)} of {len(report.rows)} lines differ by more than {threshold} "
            f"({counts}; {span})."
        )
    header = (
        "provider",
        "model",
        "day",
        "recorded units",
        "billed units",
        "Δ units",
        "recorded $",
        "billed $",
        "Δ cost",
        "implied rate",
        "table rate",
        "gap",
    )
    table = [header, *(_cells(row) for row in report.rows)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
    lines = [verdict, ""]
    lines += [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in table
    ]
    reasons = [f"  {row.provider} {row.model} {row.period.label} [{row.gap}]: {row.note}" for row in flagged]
    if reasons:
        lines += ["", "Why:", *reasons]
    others = [
        f"  {row.provider} {row.model} {row.period.label}: {row.note}"
        for row in report.rows
        if row.gap is None and row.note
    ]
    if others or report.notes:
        lines += ["", "Notes:", *others, *(f"  {note}" for note in report.notes)]
    return lines


def _cells(row: Row) -> tuple[str, ...]:
    keys = list(row.units_gap_pct) or list((row.billed or row.recorded or Side()).units)
    worst = max(
        row.units_gap_pct.values(), key=lambda p: abs(p) if p is not None else Decimal("Infinity"), default=None
    )
    return (
        row.provider,
        row.model,
        row.period.label,
        _units(row.recorded, keys),
        _units(row.billed, keys),
        _pct(worst) if row.units_gap_pct else "",
        _usd(row.recorded.cost if row.recorded else None),
        _usd(row.billed.cost if row.billed else None),
        _pct(row.cost_gap_pct) if row.cost_gap_pct is not None or (row.billed and row.billed.cost == 0) else "",
        _rate(row.implied_rate, row.rate_unit),
        _rate(row.table_rate, row.rate_unit),
        row.gap or "ok",
    )


def _units(side: Side | None, keys: Sequence[str]) -> str:
    if side is None:
        return "—"
    parts = []
    for key in keys:
        value = side.units.get(key, Decimal(0))
        label = _SHORT.get(key, key)
        if key in (USAGE_INPUT_AUDIO_MS, USAGE_OUTPUT_AUDIO_MS):
            parts.append(f"{label} {value / 60_000:,.2f} min")
        elif value == value.to_integral_value():
            parts.append(f"{label} {int(value):,}")
        else:
            parts.append(f"{label} {value:,.2f}")
    return " · ".join(parts) or "—"


def _pct(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def _usd(value: Decimal | None) -> str:
    return "—" if value is None else f"${value:,.6f}"


def _rate(value: Decimal | None, unit: str | None) -> str:
    if value is None:
        return "—"
    rounded = format(Decimal(f"{value:.4g}").normalize(), "f")  # 4 significant digits, no exponent
    return f"${rounded}{RATE_SUFFIXES.get(unit or '', '')}"


def _decimal_arg(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of at least 0")
    return value


def _date_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconcile",
        description=(
            "Compare what our traces recorded (Langfuse, the spool, or a JSON dump) with a provider's usage export,\n"
            "per provider, model and day; flag gaps over the threshold as coverage, units or rate."
        ),
        epilog=exit_codes(
            (
                (ExitCode.OK, "every line within the threshold"),
                (ExitCode.GAP, "a gap is flagged"),
                (ExitCode.INPUT, "input or configuration error (the message names the file or variable and the fix)"),
                (ExitCode.UNEXPECTED, "unexpected error (see --verbose)"),
            )
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    billed = parser.add_argument_group("provider exports (JSON answers of the vendors' usage APIs)")
    billed.add_argument(
        "--deepgram",
        action="append",
        default=[],
        metavar="FILE",
        help="GET /v1/projects/{id}/usage/breakdown?grouping=models, or /billing/breakdown?grouping=line_item",
    )
    billed.add_argument(
        "--openai",
        action="append",
        default=[],
        metavar="FILE",
        help="GET /v1/organization/usage/completions?bucket_width=1d&group_by=model, or /costs?group_by=line_item",
    )
    billed.add_argument(
        "--cartesia", action="append", default=[], metavar="FILE", help="GET /usage/credits?interval=day"
    )
    billed.add_argument(
        "--cartesia-usd-per-credit",
        type=_decimal_arg,
        metavar="USD",
        help="your plan's USD per Cartesia credit, to compare costs too (else credits only)",
    )
    recorded = parser.add_argument_group("recorded side (any combination; a generation counts once)")
    recorded.add_argument("--langfuse", action="store_true", help="the Langfuse public API (keys from env / .env)")
    recorded.add_argument(
        "--spool", nargs="?", const="", metavar="DIR", help="the spool's .pb files (default: LANGFUSE_SPOOL_DIR)"
    )
    recorded.add_argument(
        "--observations",
        action="append",
        default=[],
        metavar="FILE",
        help="a JSON dump of GET /api/public/v2/observations",
    )
    parser.add_argument(
        "--from", dest="since", type=_date_arg, metavar="YYYY-MM-DD", help="first day (default: the exports' first)"
    )
    parser.add_argument(
        "--to",
        dest="until",
        type=_date_arg,
        metavar="YYYY-MM-DD",
        help="last day, inclusive (default: the exports' last)",
    )
    parser.add_argument(
        "--threshold",
        type=_decimal_arg,
        default=DEFAULT_THRESHOLD_PCT,
        metavar="PCT",
        help="flag gaps above PCT percent (5)",
    )
    parser.add_argument(
        "--include-simulated", action="store_true", help="count the offline bot's simulated/… generations"
    )
    parser.add_argument(
        "--alias", action="append", default=[], metavar="THEIRS=OURS", help="the export's name for one of our models"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an unexpected error")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the reconciliation from the command line; returns the exit code.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on a usage error, 0 for --help
        return int(exc.code or 0)
    load_local_dotenv()
    try:
        report = run(args, os.environ)
    except ReconcileInputError as exc:
        print(f"INPUT ERROR: {exc}", file=sys.stderr)
        return int(ExitCode.INPUT)
    except Exception as exc:  # noqa: BLE001 - a CLI reports every failure with an exit code
        print(f"UNEXPECTED ERROR: {type(exc).__name__}: {exc}", file=sys.stderr)
        if args.verbose:
            traceback.print_exception(exc, file=sys.stderr)
        else:
            print("This is a bug in reconcile; run it with --verbose for the traceback.", file=sys.stderr)
        return int(ExitCode.UNEXPECTED)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print("\n".join(render(report)))
    return int(ExitCode.GAP if report.flagged else ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
