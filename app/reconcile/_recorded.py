"""The recorded side: the generations our traces hold, from Langfuse, a JSON dump of it, or the spool.

Sources (several can be combined; a generation found in two of them, by id, counts once):

* the Langfuse public API: ``GET /api/public/v2/observations?type=GENERATION&fields=core,basic,model,usage``
  with ``fromStartTime``/``toStartTime`` and cursor pagination (``meta.cursor``), Basic auth with
  ``LANGFUSE_PUBLIC_KEY``:``LANGFUSE_SECRET_KEY`` (the SDK's generated client,
  ``langfuse/api/observations/raw_client.py``, and its ``ObservationV2`` type, langfuse 5.0.4);
* a JSON dump of that answer: one page ``{"data": [...], "meta": {...}}``, a list of pages, or the
  list of observations itself (fields ``id``, ``type``, ``startTime``, ``model``,
  ``usageDetails``, ``costDetails``, ``totalCost``);
* the spool (``LANGFUSE_SPOOL_DIR``): the OTLP protobuf files (``*.pb``) of spans that did not
  reach Langfuse, decoded with opentelemetry-proto; a generation is a span whose
  ``langfuse.observation.type`` is ``generation``, with ``langfuse.observation.model.name``,
  ``langfuse.observation.usage_details`` and ``langfuse.observation.cost_details`` (JSON strings).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
from langfuse import LangfuseOtelSpanAttributes
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from app.reconcile._billed import load_json
from app.reconcile._types import Observation, ReconcileInputError
from pipecat_langfuse._spool import SPOOL_SUFFIX
from pipecat_langfuse.pricing import USAGE_TOTAL
from pipecat_langfuse.settings import LANGFUSE_BASE_URL, LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, TracingSettings

__all__ = ["OBSERVATIONS_PATH", "fetch_observations", "observations_from_json", "read_observations_file", "read_spool"]

OBSERVATIONS_PATH = "/api/public/v2/observations"
"""The Langfuse endpoint of observations with field groups and cursor pagination."""
GENERATION = "GENERATION"
"""The API's observation type of a generation."""
PAGE_LIMIT = 1000
"""Observations per page: the endpoint's maximum."""
FIELDS = "core,basic,model,usage"
"""Field groups asked for: id/type/startTime, name, model, usageDetails/costDetails/totalCost."""

_SPAN_GENERATION = "generation"


def observations_from_json(document: Any, where: str) -> list[Observation]:
    """The generations of an observations answer (see the module docstring for the shapes).

    Raises:
        ReconcileInputError: ``document`` has another shape.
    """
    items: list[Any] = []
    pages = document if isinstance(document, list) else [document]
    for page in pages:
        if isinstance(page, dict) and isinstance(page.get("data"), list):
            items.extend(page["data"])
        elif isinstance(page, dict) and "id" in page:
            items.append(page)
        else:
            raise ReconcileInputError(
                f"{where} is not a list of Langfuse observations: expected {{'data': [...]}} as "
                f"GET {OBSERVATIONS_PATH} answers, a list of such pages, or a list of observations."
            )
    observations = []
    for index, item in enumerate(items):
        at = f"{where}: observation {index}"
        if not isinstance(item, dict):
            raise ReconcileInputError(f"{at} is not an object.")
        if item.get("type", GENERATION) != GENERATION:
            continue
        observation = _from_api(item, at)
        if observation is not None:
            observations.append(observation)
    return observations


def read_observations_file(path: Path) -> list[Observation]:
    """The generations in a JSON dump of the observations API."""
    return observations_from_json(load_json(path), str(path))


def read_spool(directory: Path) -> list[Observation]:
    """The generations in the spool files (``*.pb``) under ``directory`` (a spool folder or one host's).

    Raises:
        ReconcileInputError: ``directory`` does not exist, or a file is not an OTLP export.
    """
    if not directory.is_dir():
        raise ReconcileInputError(
            f"The spool folder {directory} does not exist. Pass the folder of LANGFUSE_SPOOL_DIR (or one host's "
            "folder in it)."
        )
    observations = []
    for path in sorted(directory.rglob(f"*{SPOOL_SUFFIX}")):
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError, among others
            raise ReconcileInputError(
                f"{path} is not an OTLP trace export ({type(exc).__name__}). Remove it from the spool folder."
            ) from None
        for resource_spans in message.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {kv.key: _value(kv.value) for kv in span.attributes}
                    if attributes.get(LangfuseOtelSpanAttributes.OBSERVATION_TYPE) != _SPAN_GENERATION:
                        continue
                    at = f"{path}: span {span.span_id.hex()}"
                    model = attributes.get(LangfuseOtelSpanAttributes.OBSERVATION_MODEL)
                    if not isinstance(model, str) or not model:
                        continue
                    usage = _json_object(attributes.get(LangfuseOtelSpanAttributes.OBSERVATION_USAGE_DETAILS), at)
                    costs = _json_object(attributes.get(LangfuseOtelSpanAttributes.OBSERVATION_COST_DETAILS), at)
                    observations.append(
                        Observation(
                            id=span.span_id.hex(),
                            model=model,
                            start=datetime.fromtimestamp(span.start_time_unix_nano / 1e9, UTC),
                            usage=_usage(usage, at),
                            cost=_total_cost(costs, None, at),
                        )
                    )
    return observations


def fetch_observations(
    settings: TracingSettings, start: datetime, end: datetime, *, client: httpx.Client | None = None
) -> list[Observation]:
    """The generations Langfuse holds that started in ``[start, end)``, all pages.

    Args:
        settings: Host, keys and timeout (``TracingSettings.from_env``).
        start: First moment (UTC).
        end: First moment not included (UTC).
        client: The HTTP client (tests); a new one by default.

    Raises:
        ReconcileInputError: Langfuse cannot be reached, rejects the keys, or answers something else.
    """
    url = f"{settings.base_url}{OBSERVATIONS_PATH}"
    params: dict[str, str | int] = {
        "type": GENERATION,
        "fields": FIELDS,
        "fromStartTime": _iso(start),
        "toStartTime": _iso(end),
        "limit": PAGE_LIMIT,
    }
    auth = (settings.public_key or "", settings.secret_key or "")
    own = client is None
    http = client or httpx.Client(timeout=settings.timeout_s)
    observations: list[Observation] = []
    try:
        seen_cursors: set[str] = set()
        while True:
            try:
                response = http.get(url, params=params, auth=auth)
            except httpx.HTTPError as exc:
                raise ReconcileInputError(
                    f"Cannot reach Langfuse at {settings.base_url} ({type(exc).__name__}: {exc}). Check "
                    f"{LANGFUSE_BASE_URL} (`uv run test_langfuse` tells what is wrong), or read a JSON dump with "
                    "--observations instead."
                ) from None
            page = _page(response, settings)
            observations.extend(observations_from_json(page, f"GET {url}"))
            cursor = page.get("meta", {}).get("cursor") if isinstance(page.get("meta"), dict) else None
            if not cursor or cursor in seen_cursors:
                break
            seen_cursors.add(cursor)
            params["cursor"] = cursor
    finally:
        if own:
            http.close()
    return observations


def _page(response: httpx.Response, settings: TracingSettings) -> dict[str, Any]:
    status = response.status_code
    if status in (401, 403):
        raise ReconcileInputError(
            f"Langfuse at {settings.base_url} rejected the keys (HTTP {status}). Check {LANGFUSE_PUBLIC_KEY} and "
            f"{LANGFUSE_SECRET_KEY} (one pair, of the project at {LANGFUSE_BASE_URL}); `uv run test_langfuse` "
            "tells which fix applies."
        )
    if status == 404:
        raise ReconcileInputError(
            f"Langfuse at {settings.base_url} has no {OBSERVATIONS_PATH} (HTTP 404): an older server, or "
            f"{LANGFUSE_BASE_URL} has a path. Set it to the host only, upgrade the server, or export the "
            "observations as JSON and pass them with --observations."
        )
    if not 200 <= status < 300:
        raise ReconcileInputError(
            f"Langfuse at {settings.base_url} answered HTTP {status} to GET {OBSERVATIONS_PATH}: "
            f"{response.text[:200]!r}. Try again later, or read a JSON dump with --observations."
        )
    try:
        page = response.json()
    except ValueError:
        page = None
    if not isinstance(page, dict) or not isinstance(page.get("data"), list):
        raise ReconcileInputError(
            f"{settings.base_url}{OBSERVATIONS_PATH} answered something else than a page of observations; "
            f"is {LANGFUSE_BASE_URL} a Langfuse server?"
        )
    return page


def _from_api(item: Mapping[str, Any], at: str) -> Observation | None:
    model = item.get("model")
    if not isinstance(model, str) or not model.strip():
        return None  # a generation without a model cannot be matched to any invoice line
    started = item.get("startTime")
    if not isinstance(started, str):
        raise ReconcileInputError(f"{at} has no 'startTime'.")
    try:
        start = datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        raise ReconcileInputError(f"{at}: 'startTime' is not an ISO 8601 time: {started!r}.") from None
    usage = item.get("usageDetails") or {}
    costs = item.get("costDetails") or {}
    if not isinstance(usage, dict) or not isinstance(costs, dict):
        raise ReconcileInputError(f"{at}: 'usageDetails' and 'costDetails' must be objects.")
    return Observation(
        id=str(item.get("id", "")),
        model=model.strip(),
        start=start if start.tzinfo else start.replace(tzinfo=UTC),
        usage=_usage(usage, at),
        cost=_total_cost(costs, item.get("totalCost"), at),
    )


def _usage(usage: Mapping[str, Any], at: str) -> dict[str, int]:
    result = {}
    for key, value in usage.items():
        if key == USAGE_TOTAL:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReconcileInputError(f"{at}: usage {key!r} is not a number: {value!r}.")
        result[str(key)] = int(value)
    return result


def _total_cost(costs: Mapping[str, Any], total_cost: Any, at: str) -> Decimal | None:
    value = costs.get(USAGE_TOTAL, total_cost)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ReconcileInputError(f"{at}: the total cost is not a number: {value!r}.")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ReconcileInputError(f"{at}: the total cost is not a number: {value!r}.") from None


def _json_object(text: Any, at: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ReconcileInputError(f"{at}: a usage or cost attribute is not a JSON object: {text!r}.")
    return value


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dedupe(observations: Iterable[Observation]) -> list[Observation]:
    """``observations`` without repeats of an id (the first one wins); observations without an id are kept."""
    seen: set[str] = set()
    unique = []
    for observation in observations:
        if observation.id:
            if observation.id in seen:
                continue
            seen.add(observation.id)
        unique.append(observation)
    return unique
