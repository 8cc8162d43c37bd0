"""The provider side: parsers of Deepgram's, OpenAI's and Cartesia's usage exports.

Each format is written down from the vendor's own documentation (read on 2026-11-29); nothing
here reads a field the documentation does not name. None of the three vendors documents a
downloadable file (CSV) of its dashboard, so each parser reads the JSON answer of the vendor's
usage API, saved to a file as is (``curl ... > file.json``).

Deepgram (:func:`parse_deepgram`), one of:
    * ``GET /v1/projects/{project_id}/usage/breakdown?grouping=models`` ("Get Project Usage
      Breakdown", https://developers.deepgram.com/reference/manage/usage/breakdown/get, its OpenAPI
      3.1 schema ``UsageBreakdownV1Response``): ``{start, end, resolution: {units, amount},
      results: [{hours, total_hours, agent_hours, tokens_in, tokens_out, tts_characters, requests,
      grouping: {start, end, models, accessor, endpoint, feature_set, method, tags, deployment}}]}``.
      ``hours`` ("audio hours processed") becomes ``input_audio_ms``, ``tts_characters`` becomes
      ``input_characters``. ``requests`` counts API requests (a streaming connection is one), not
      our generations, so it is not compared.
    * ``GET /v1/projects/{project_id}/billing/breakdown?grouping=line_item`` ("Get Project Billing
      Breakdown", https://developers.deepgram.com/reference/manage/billing/breakdown/get; the result
      items, ``{dollars, grouping: {start, end, accessor, deployment, line_item, tags}}``, as in
      Deepgram's OpenAPI schema ``BillingBreakdownV1Response``): ``dollars`` is the billed USD;
      the model is the part of ``line_item`` after ``::`` (the documented example is
      ``streaming::nova-3``).
    Dates: ``grouping.start``/``grouping.end`` (else the top-level ``start``/``end``) are
    ``YYYY-MM-DD`` dates, read here as inclusive like the request's ``start``/``end``; a full
    timestamp ``end`` is read as exclusive.

OpenAI (:func:`parse_openai`), the organization Usage and Costs APIs (Admin key), ``bucket_width=1d``:
    * ``GET /v1/organization/usage/completions?group_by=model`` (the Usage API,
      https://cookbook.openai.com/examples/completions_usage_api, and the API reference
      https://developers.openai.com/api/reference/): a page ``{object: "page", data: [{object:
      "bucket", start_time, end_time, results: [{object: "organization.usage.completions.result",
      input_tokens, input_cached_tokens, output_tokens, num_model_requests, model, ...}]}],
      has_more, next_page}``. ``input_tokens`` includes the cached ones, so ``input`` is
      ``input_tokens - input_cached_tokens``. ``num_model_requests`` is compared with our count of
      generations.
    * ``GET /v1/organization/costs?group_by=line_item`` (the Costs API,
      https://developers.openai.com/api/reference/resources/organization/subresources/audit_logs/methods/get_costs):
      the same buckets, with results ``{object: "organization.costs.result", amount: {value,
      currency}, line_item, project_id}``. OpenAI does not document how a ``line_item`` is spelled;
      the model is taken as its text before the first comma (``gpt-4o-2024-08-06, input``).
    The reference names the bucket's list ``result``, its examples ``results``: both are read. A
    file holds one page, or a list of pages or of buckets (all pages of a paginated answer).
    Results of other usage endpoints (audio, images, ...) are skipped and counted in a note.

Cartesia (:func:`parse_cartesia`):
    * ``GET /usage/credits?interval=day`` ("Get Credit Usage",
      https://docs.cartesia.ai/api-reference/usage/credits): ``{data: [{start_ts, end_ts,
      credits}]}``, RFC 3339 times. There is no model and no USD: one line per day for all of
      Cartesia's models, in credits. Cartesia documents ~1 credit per TTS character and 1 or 3
      credits per second of STT audio (https://docs.cartesia.ai/pricing); the recorded side is
      converted to credits the same way. A USD price per credit (plan-dependent) can be given to
      compare costs too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from app.reconcile._types import (
    ALL_MODELS,
    ONE_DAY,
    PROVIDER_CARTESIA,
    PROVIDER_DEEPGRAM,
    PROVIDER_OPENAI,
    UNIT_CREDITS,
    BilledLine,
    Period,
    ReconcileInputError,
)
from pipecat_langfuse.pricing import (
    USAGE_INPUT,
    USAGE_INPUT_AUDIO_MS,
    USAGE_INPUT_CACHED_TOKENS,
    USAGE_INPUT_CHARACTERS,
    USAGE_OUTPUT,
)

__all__ = ["BilledExport", "parse_cartesia", "parse_deepgram", "parse_openai"]

MS_PER_HOUR = Decimal(3_600_000)

_OPENAI_COMPLETIONS = "organization.usage.completions.result"
_OPENAI_COSTS = "organization.costs.result"


@dataclass
class BilledExport:
    """The lines of one export file.

    Attributes:
        provider: The vendor.
        lines: One line per model (as the export names it) and period.
        kinds: The kinds of model the export covers (``llm``, ``stt``, ``tts``); None for all.
            Recorded generations of other kinds are not compared against it.
        notes: What was skipped, in plain words.
    """

    provider: str
    lines: list[BilledLine]
    kinds: frozenset[str] | None = None
    notes: list[str] = field(default_factory=list)


def load_json(path: Path) -> Any:
    """The JSON document in ``path``.

    Raises:
        ReconcileInputError: The file cannot be read or is not JSON.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReconcileInputError(f"Cannot read {path}: {exc.strerror or exc}. Check the path.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReconcileInputError(
            f"{path} is not JSON ({exc.msg} at line {exc.lineno}). Save the API's answer as is, e.g. "
            "`curl ... > file.json`."
        ) from None


def parse_deepgram(path: Path) -> BilledExport:
    """Read a Deepgram usage breakdown or billing breakdown (see the module docstring for the sources).

    Args:
        path: The JSON answer of ``/usage/breakdown?grouping=models`` or ``/billing/breakdown?grouping=line_item``.

    Returns:
        One line per result: units (usage breakdown) or USD (billing breakdown).

    Raises:
        ReconcileInputError: The file is not such an answer, or is not grouped by model.
    """
    document = load_json(path)
    where = str(path)
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise ReconcileInputError(
            f"{where} is not a Deepgram usage or billing breakdown: expected an object with a 'results' list "
            "(GET /v1/projects/{project_id}/usage/breakdown?grouping=models)."
        )
    lines: list[BilledLine] = []
    for index, result in enumerate(document["results"]):
        at = f"{where}: results[{index}]"
        if not isinstance(result, dict):
            raise ReconcileInputError(f"{at} is not an object.")
        grouping = result.get("grouping")
        if not isinstance(grouping, dict):
            raise ReconcileInputError(f"{at} has no 'grouping' object.")
        period = _deepgram_period(grouping, document, at)
        if "dollars" in result:
            line_item = grouping.get("line_item")
            if not isinstance(line_item, str) or not line_item.strip():
                raise ReconcileInputError(
                    f"{at}: grouping.line_item is empty, so the cost has no model. Export the billing breakdown "
                    "with grouping=line_item."
                )
            item_model = line_item.strip().rpartition("::")[2]
            cost = _decimal(result["dollars"], f"{at}.dollars")
            lines.append(BilledLine(PROVIDER_DEEPGRAM, item_model, period, cost=cost, sources=[where]))
            continue
        model = grouping.get("models")
        if not isinstance(model, str) or not model.strip():
            raise ReconcileInputError(
                f"{at}: grouping.models is empty, so the usage has no model. Export the usage breakdown with "
                "grouping=models."
            )
        units = {
            USAGE_INPUT_AUDIO_MS: _decimal(_field(result, "hours", at), f"{at}.hours") * MS_PER_HOUR,
            USAGE_INPUT_CHARACTERS: _decimal(_field(result, "tts_characters", at), f"{at}.tts_characters"),
        }
        lines.append(BilledLine(PROVIDER_DEEPGRAM, model.strip(), period, units=units, sources=[where]))
    return BilledExport(PROVIDER_DEEPGRAM, lines)


def parse_openai(path: Path) -> BilledExport:
    """Read an OpenAI completions usage page or costs page (see the module docstring for the sources).

    Args:
        path: The JSON answer of ``/v1/organization/usage/completions?group_by=model`` or
            ``/v1/organization/costs?group_by=line_item``: one page, or a list of pages or buckets.

    Returns:
        One line per result; ``kinds`` is ``{"llm"}`` for a file of completions only.

    Raises:
        ReconcileInputError: The file is not such an answer, or is not grouped by model / line item.
    """
    document = load_json(path)
    where = str(path)
    buckets = _openai_buckets(document, where)
    lines: list[BilledLine] = []
    skipped: dict[str, int] = {}
    objects: set[str] = set()
    for b_index, bucket in enumerate(buckets):
        at = f"{where}: bucket {b_index}"
        if not isinstance(bucket, dict):
            raise ReconcileInputError(f"{at} is not an object.")
        period = _openai_period(bucket, at)
        results = bucket.get("results", bucket.get("result"))
        if not isinstance(results, list):
            raise ReconcileInputError(f"{at} has no 'results' list.")
        for r_index, result in enumerate(results):
            r_at = f"{at}, result {r_index}"
            kind = result.get("object") if isinstance(result, dict) else None
            if kind == _OPENAI_COMPLETIONS:
                lines.append(_openai_completion(result, period, r_at, where))
            elif kind == _OPENAI_COSTS:
                lines.append(_openai_cost(result, period, r_at, where))
            else:
                skipped[str(kind)] = skipped.get(str(kind), 0) + 1
                continue
            objects.add(kind)
    notes = [
        f"{where}: skipped {count} result(s) of type {kind} (only completions usage and costs are read)."
        for kind, count in sorted(skipped.items())
    ]
    kinds = frozenset({"llm"}) if objects == {_OPENAI_COMPLETIONS} else None
    return BilledExport(PROVIDER_OPENAI, lines, kinds, notes)


def parse_cartesia(path: Path, usd_per_credit: Decimal | None = None) -> BilledExport:
    """Read Cartesia's credit usage (see the module docstring for the source).

    Args:
        path: The JSON answer of ``GET /usage/credits?interval=day``.
        usd_per_credit: The plan's USD per credit, to compare costs too; None compares credits only.

    Returns:
        One line per bucket with credits, for all models (:data:`ALL_MODELS`).

    Raises:
        ReconcileInputError: The file is not such an answer.
    """
    document = load_json(path)
    where = str(path)
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise ReconcileInputError(
            f"{where} is not Cartesia's credit usage: expected an object with a 'data' list "
            "(GET https://api.cartesia.ai/usage/credits?interval=day)."
        )
    lines = []
    for index, bucket in enumerate(document["data"]):
        at = f"{where}: data[{index}]"
        if not isinstance(bucket, dict):
            raise ReconcileInputError(f"{at} is not an object.")
        start = _timestamp(_field(bucket, "start_ts", at), f"{at}.start_ts")
        end = _timestamp(_field(bucket, "end_ts", at), f"{at}.end_ts")
        credits = _decimal(_field(bucket, "credits", at), f"{at}.credits")
        cost = None if usd_per_credit is None else credits * usd_per_credit
        lines.append(
            BilledLine(
                PROVIDER_CARTESIA,
                ALL_MODELS,
                _period(start.date(), _exclusive_end(end), at),
                units={UNIT_CREDITS: credits},
                cost=cost,
                sources=[where],
            )
        )
    return BilledExport(PROVIDER_CARTESIA, lines)


def _openai_buckets(document: Any, where: str) -> list[Any]:
    pages: Sequence[Any]
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        pages = [document]
    elif isinstance(document, list):
        pages = document
    else:
        raise ReconcileInputError(
            f"{where} is not an OpenAI usage or costs answer: expected a page {{'object': 'page', 'data': [...]}} "
            "or a list of pages or buckets (GET /v1/organization/usage/completions?bucket_width=1d&group_by=model)."
        )
    buckets: list[Any] = []
    for page in pages:
        if isinstance(page, dict) and isinstance(page.get("data"), list):
            buckets.extend(page["data"])
        else:
            buckets.append(page)
    return buckets


def _openai_completion(result: Mapping[str, Any], period: Period, at: str, where: str) -> BilledLine:
    model = result.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ReconcileInputError(f"{at}: 'model' is empty, so the usage has no model. Export it with group_by=model.")
    input_tokens = _decimal(_field(result, "input_tokens", at), f"{at}.input_tokens")
    cached = _decimal(result.get("input_cached_tokens") or 0, f"{at}.input_cached_tokens")
    output = _decimal(_field(result, "output_tokens", at), f"{at}.output_tokens")
    requests = _decimal(_field(result, "num_model_requests", at), f"{at}.num_model_requests")
    units = {USAGE_INPUT: input_tokens - cached, USAGE_INPUT_CACHED_TOKENS: cached, USAGE_OUTPUT: output}
    return BilledLine(PROVIDER_OPENAI, model.strip(), period, units=units, calls=int(requests), sources=[where])


def _openai_cost(result: Mapping[str, Any], period: Period, at: str, where: str) -> BilledLine:
    line_item = result.get("line_item")
    if not isinstance(line_item, str) or not line_item.strip():
        raise ReconcileInputError(
            f"{at}: 'line_item' is empty, so the cost has no model. Export the costs with group_by=line_item."
        )
    amount = result.get("amount")
    if not isinstance(amount, dict):
        raise ReconcileInputError(f"{at} has no 'amount' object.")
    currency = str(amount.get("currency", "usd")).lower()
    if currency != "usd":
        raise ReconcileInputError(f"{at}: the amount is in {currency!r}; only USD costs can be compared.")
    cost = _decimal(_field(amount, "value", f"{at}.amount"), f"{at}.amount.value")
    model = line_item.split(",", 1)[0].strip()
    return BilledLine(PROVIDER_OPENAI, model, period, cost=cost, sources=[where])


def _openai_period(bucket: Mapping[str, Any], at: str) -> Period:
    start = _unix(_field(bucket, "start_time", at), f"{at}.start_time")
    end = _unix(_field(bucket, "end_time", at), f"{at}.end_time")
    return _period(start.date(), _exclusive_end(end), at)


def _deepgram_period(grouping: Mapping[str, Any], document: Mapping[str, Any], at: str) -> Period:
    start_text = grouping.get("start") or document.get("start")
    end_text = grouping.get("end") or document.get("end") or start_text
    if not isinstance(start_text, str) or not isinstance(end_text, str):
        raise ReconcileInputError(f"{at}: no 'start'/'end' date in grouping or at the top of the file.")
    start = _date_or_time(start_text, f"{at}.grouping.start")
    end = _date_or_time(end_text, f"{at}.grouping.end")
    first = start if isinstance(start, date) and not isinstance(start, datetime) else _as_datetime(start).date()
    if isinstance(end, datetime):
        return _period(first, _exclusive_end(_as_datetime(end)), at)
    return _period(first, end + ONE_DAY, at)  # a date: inclusive


def _period(start: date, end: date, at: str) -> Period:
    if end <= start:
        raise ReconcileInputError(f"{at}: the period's last day ({end - ONE_DAY}) is before its first ({start}).")
    return Period(start, end)


def _exclusive_end(end: datetime) -> date:
    """The first day not covered by a period ending at ``end`` (exclusive)."""
    midnight = end.hour == end.minute == end.second == end.microsecond == 0
    return end.date() if midnight else end.date() + ONE_DAY


def _field(obj: Mapping[str, Any], key: str, at: str) -> Any:
    if key not in obj or obj[key] is None:
        raise ReconcileInputError(f"{at} has no {key!r}.")
    return obj[key]


def _decimal(value: Any, at: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ReconcileInputError(f"{at} must be a number, got {value!r}.")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ReconcileInputError(f"{at} must be a number, got {value!r}.") from None
    if not number.is_finite():
        raise ReconcileInputError(f"{at} must be a finite number, got {value!r}.")
    return number


def _unix(value: Any, at: str) -> datetime:
    seconds = _decimal(value, at)
    return datetime.fromtimestamp(int(seconds), UTC)


def _timestamp(value: Any, at: str) -> datetime:
    if not isinstance(value, str):
        raise ReconcileInputError(f"{at} must be an RFC 3339 time, got {value!r}.")
    return _as_datetime(_date_or_time(value, at))


def _date_or_time(text: str, at: str) -> date | datetime:
    text = text.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ReconcileInputError(f"{at} must be a YYYY-MM-DD date or an ISO 8601 time, got {text!r}.") from None


def _as_datetime(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)
