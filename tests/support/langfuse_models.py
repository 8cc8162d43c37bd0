"""Langfuse's model definitions, as the public API and the ingestion worker treat them.

Read from langfuse/langfuse @62751446 (2026-08-22):

* ``web/src/pages/api/public/models/index.ts`` (GET list, POST create) and ``[modelId]/index.ts``
  (GET, DELETE; no PUT: Next's route answers 405 for other methods);
* ``web/src/features/public-api/types/models.ts``: the body schema (flat prices OR ``pricingTiers``,
  ``unit`` required) and the response shape (``prices`` and flat prices from the default tier,
  ``isLangfuseManaged`` when the model has no project);
* ``web/src/features/models/server/publicApiModelService.ts``: list ordered by ``modelName`` with
  ``meta {page, limit, totalItems, totalPages}``; create refuses a name already in the project and
  a pattern Postgres cannot compile (400); delete only project models (404 otherwise);
* ``packages/shared/src/utils/zod.ts``: ``page`` >= 1 (default 1), ``limit`` 1..100 (default 50);
* ``packages/shared/src/features/model-pricing/validation.ts``: exactly one default tier with
  priority 0 and no conditions; unique tier names and priorities; prices >= 0;
* ``packages/shared/src/server/ingestion/modelMatch.ts`` (``findModelInPostgres``): the model name
  is matched with ``name ~ match_pattern`` (a Postgres regex *search*, case-sensitive unless the
  pattern starts with ``(?i)``), project models first, then the newest ``start_date``;
* ``worker/src/services/IngestionService/index.ts`` (``calculateUsageCosts``): each usage key with
  a price in the matched tier costs ``Decimal(price) * units`` (then a JS number); the total is
  their sum; ClickHouse stores costs as Decimal64(12).
"""

from __future__ import annotations

import copy
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

MODELS_PATH = "/api/public/models"
MODEL_UNITS = frozenset({"TOKENS", "CHARACTERS", "MILLISECONDS", "SECONDS", "REQUESTS", "IMAGES"})
STORED_COST_QUANTUM = Decimal("1e-12")
"""ClickHouse keeps costs as Decimal64(12)."""

LANGFUSE_MANAGED_MODELS: tuple[dict[str, Any], ...] = (
    {
        # worker/src/constants/default-model-prices.json @62751446, as the API lists it.
        "id": "cm7zzrs1327124dhjtb95w8p96",
        "projectId": None,
        "modelName": "gpt-4.1-mini",
        "matchPattern": "(?i)^(openai/)?(gpt-4.1-mini)$",
        "startDate": None,
        "unit": None,
        "tokenizerId": "openai",
        "tokenizerConfig": {"tokensPerName": 1, "tokenizerModel": "gpt-4", "tokensPerMessage": 3},
        "createdAt": "2025-04-22T10:11:35.241Z",
        "pricingTiers": [
            {
                "id": "cm7zzrs1327124dhjtb95w8p96_tier_default",
                "name": "Standard",
                "isDefault": True,
                "priority": 0,
                "conditions": [],
                "prices": {"input": 4e-07, "input_cached_tokens": 1e-07, "output": 1.6e-06},
            },
            {
                "id": "e747c083-dae8-4085-a1e2-e46c16e39498",
                "name": "Fast mode",
                "isDefault": False,
                "priority": 1,
                "conditions": [
                    {"source": "model_parameters", "key": "service_tier", "operator": "in", "values": ["fast"]}
                ],
                "prices": {"input": 7e-07, "input_cached_tokens": 1.75e-07, "output": 2.8e-06},
            },
        ],
    },
    {
        "id": "clrntjt89000108jwcou1af71",
        "projectId": None,
        "modelName": "whisper",
        "matchPattern": "(?i)^(openai/)?(whisper-1)$",
        "startDate": None,
        "unit": "SECONDS",
        "tokenizerId": None,
        "tokenizerConfig": None,
        "createdAt": "2024-01-24T18:18:50.861Z",
        "pricingTiers": [
            {
                "id": "clrntjt89000108jwcou1af71_tier_default",
                "name": "Standard",
                "isDefault": True,
                "priority": 0,
                "conditions": [],
                "prices": {"total": 0.0001},
            }
        ],
    },
)
"""Two of Langfuse's built-in definitions (no project): one overlaps our ``gpt-4.1-mini`` entry."""


class ApiRefusalError(Exception):
    """What Langfuse answers instead of a model: ``status`` and a JSON ``payload``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.payload = {"message": message, "error": "InvalidRequestError" if status == 400 else "NotFound"}


class ModelStore:
    """A project's view of the ``models`` table: Langfuse's own definitions plus the project's.

    Not thread-safe by itself: the server calls it under its lock.
    """

    def __init__(self, managed: Iterable[Mapping[str, Any]] = LANGFUSE_MANAGED_MODELS) -> None:
        self.rows: list[dict[str, Any]] = [copy.deepcopy(dict(row)) for row in managed]

    def project_models(self) -> list[dict[str, Any]]:
        """The definitions the project created (as the API returns them)."""
        return [api_model(row) for row in self.rows if row["projectId"] is not None]

    def list(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """``GET /api/public/models?page=&limit=``."""
        page = _integer(query, "page", 1, low=1, high=None)
        limit = _integer(query, "limit", 50, low=1, high=100)
        rows = sorted(self.rows, key=lambda r: (r["modelName"], r["unit"] or "", r["startDate"] is None))
        chosen = rows[(page - 1) * limit : page * limit]
        meta = {"page": page, "limit": limit, "totalItems": len(rows), "totalPages": math.ceil(len(rows) / limit)}
        return {"data": [api_model(row) for row in chosen], "meta": meta}

    def get(self, model_id: str) -> dict[str, Any]:
        """``GET /api/public/models/{id}``: the project's and Langfuse's definitions."""
        for row in self.rows:
            if row["id"] == model_id:
                return api_model(row)
        raise ApiRefusalError(404, "No model with this id found.")

    def create(self, body: Any) -> dict[str, Any]:
        """``POST /api/public/models``: validate like Langfuse, store, return the model with its id."""
        problem = create_error(body)
        if problem is not None:
            raise ApiRefusalError(400, problem)
        if any(row["projectId"] is not None and row["modelName"] == body["modelName"] for row in self.rows):
            raise ApiRefusalError(400, f"Model name '{body['modelName']}' already exists in project")
        model_id = f"cm{uuid.uuid4().hex[:23]}"
        tiers = body.get("pricingTiers") or [
            {
                "id": f"{model_id}_tier_default",
                "name": "Standard",
                "isDefault": True,
                "priority": 0,
                "conditions": [],
                "prices": {
                    key: body[flat]
                    for key, flat in (("input", "inputPrice"), ("output", "outputPrice"), ("total", "totalPrice"))
                    if body.get(flat) is not None
                },
            }
        ]
        row = {
            "id": model_id,
            "projectId": "project-local",
            "modelName": body["modelName"],
            "matchPattern": body["matchPattern"],
            "startDate": body.get("startDate"),
            "unit": body["unit"],
            "tokenizerId": body.get("tokenizerId"),
            "tokenizerConfig": body.get("tokenizerConfig"),
            "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "pricingTiers": [
                {
                    "id": tier.get("id") or f"cm{uuid.uuid4().hex[:23]}",
                    "name": tier["name"].strip(),
                    "isDefault": bool(tier.get("isDefault", False)),
                    "priority": tier["priority"],
                    "conditions": tier["conditions"],
                    # Postgres keeps the Decimal of the JS number; the API answers price.toNumber().
                    "prices": {key: float(Decimal(repr(float(price)))) for key, price in tier["prices"].items()},
                }
                for tier in sorted(tiers, key=lambda t: t["priority"])
            ],
        }
        self.rows.append(row)
        return api_model(row)

    def delete(self, model_id: str) -> dict[str, Any]:
        """``DELETE /api/public/models/{id}``: project models only."""
        for index, row in enumerate(self.rows):
            if row["id"] == model_id and row["projectId"] is not None:
                del self.rows[index]
                return {"message": "Model successfully deleted"}
        raise ApiRefusalError(
            404,
            "No model with this id found. Note: You cannot delete built-in models, "
            "override them with a model with the same name.",
        )


def api_model(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the API returns it (``prismaToApiModelDefinition``)."""
    tiers = copy.deepcopy(row["pricingTiers"])
    default = next((tier for tier in tiers if tier["isDefault"]), None)
    flat = dict(default["prices"]) if default else {}
    return {
        "id": row["id"],
        "modelName": row["modelName"],
        "matchPattern": row["matchPattern"],
        "startDate": row["startDate"],
        "inputPrice": flat.get("input"),
        "outputPrice": flat.get("output"),
        "totalPrice": flat.get("total"),
        "unit": row["unit"],
        "tokenizerId": row["tokenizerId"],
        "tokenizerConfig": row["tokenizerConfig"],
        "isLangfuseManaged": row["projectId"] is None,
        "createdAt": row["createdAt"],
        "prices": {key: {"price": price} for key, price in flat.items()},
        "pricingTiers": tiers,
    }


def create_error(body: Any) -> str | None:
    """Why Langfuse would refuse this create body (400), or None (the checks that matter here)."""
    if not isinstance(body, dict):
        return "Invalid request data: expected an object"
    for key in ("modelName", "matchPattern"):
        if not isinstance(body.get(key), str):
            return f"{key}: Required"
    if body.get("unit") not in MODEL_UNITS:
        return f"unit: Invalid enum value {body.get('unit')!r}"
    if body.get("tokenizerId") not in (None, "openai", "claude"):
        return f"tokenizerId: Invalid enum value {body.get('tokenizerId')!r}"
    flat = [body.get(key) for key in ("inputPrice", "outputPrice", "totalPrice")]
    if any(not _price_ok(price) for price in flat if price is not None):
        return "flat prices must be non-negative numbers"
    has_flat = any(price is not None for price in flat)
    tiers = body.get("pricingTiers")
    has_tiers = isinstance(tiers, list) and len(tiers) > 0
    if has_flat and has_tiers:
        return "Must provide either flat prices (inputPrice/outputPrice/totalPrice) OR pricingTiers, not both"
    if not has_flat and not has_tiers:
        return "Must provide either flat prices (inputPrice/outputPrice/totalPrice) OR pricingTiers"
    if has_tiers:
        problem = tiers_error(tiers)
        if problem is not None:
            return problem
    if postgres_regex_error(body["matchPattern"]) is not None:
        return "matchPattern is not a valid regex pattern (Postgres)"
    return None


def tiers_error(tiers: list[Any]) -> str | None:
    """``PricingTierInputSchema`` + ``validatePricingTiers``."""
    for tier in tiers:
        if not isinstance(tier, dict) or not isinstance(tier.get("name"), str) or not tier["name"].strip():
            return "pricingTiers: Name cannot be empty"
        priority = tier.get("priority")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 999:
            return "pricingTiers: Priority must be an integer in 0..999"
        if not isinstance(tier.get("conditions"), list):
            return "pricingTiers: conditions: Required"
        prices = tier.get("prices")
        if not isinstance(prices, dict) or not all(_price_ok(p) for p in prices.values()):
            return "pricingTiers: Price must be non-negative"
    defaults = [tier for tier in tiers if tier.get("isDefault")]
    if len(defaults) != 1:
        return "Exactly one pricing tier must have isDefault: true"
    if defaults[0]["priority"] != 0:
        return "Default pricing tier must have priority: 0"
    if defaults[0]["conditions"]:
        return "Default pricing tier must have empty conditions array"
    if any(not tier.get("isDefault") and not tier["conditions"] for tier in tiers):
        return "Non-default pricing tier must have at least one condition"
    if len({tier["priority"] for tier in tiers}) != len(tiers):
        return "Pricing tier priorities must be unique within a model"
    if len({tier["name"].strip() for tier in tiers}) != len(tiers):
        return "Pricing tier names must be unique"
    return None


def postgres_regex_error(pattern: str) -> str | None:
    """Why Postgres would not compile ``pattern`` (an approximation with Python's ``re``), or None.

    Rejects what Postgres AREs do not have: named groups ``(?P<..>``/``(?<name>`` and inline flags
    other than a leading ``(?i)``.
    """
    body = pattern[4:] if pattern.startswith("(?i)") else pattern
    if re.search(r"\(\?(P|<[A-Za-z]|[aiLmsux-]+[):])", body):
        return "syntax Postgres does not read"
    try:
        re.compile(body)
    except re.error as exc:
        return str(exc)
    return None


def postgres_search(pattern: str, name: str) -> bool:
    """``name ~ pattern`` in Postgres: a search; case-insensitive only with a leading ``(?i)``.

    Python's ``$`` also matches before a final newline, Postgres's does not: names have none here.
    """
    if pattern.startswith("(?i)"):
        return re.search(pattern[4:], name, re.IGNORECASE) is not None
    return re.search(pattern, name) is not None


@dataclass(frozen=True)
class ServerCost:
    """What Langfuse's worker computes for one observation priced by a model definition.

    Attributes:
        model_id: The matched definition's id.
        model_name: The matched definition's name.
        cost_details: Cost per priced usage key, as the worker computes it (``Decimal * units``
            as a JS number), plus ``total``.
        stored: ``cost_details`` as ClickHouse keeps them (Decimal64(12)); e.g. a JS sum of
            0.0006655999999999999 is kept as 0.000665600000.
    """

    model_id: str
    model_name: str
    cost_details: dict[str, float]
    stored: dict[str, Decimal]

    @property
    def total_stored(self) -> Decimal:
        """The total cost as Langfuse keeps and shows it."""
        return self.stored["total"]


def match_model(model_name: str, models: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The definition Langfuse would pick for ``model_name`` (``findModelInPostgres``).

    ``models`` are rows as the API lists them; project models win over Langfuse's, then the newest
    ``startDate``. Among equals Postgres gives no order; this keeps the listed order.
    """
    matching = [m for m in models if postgres_search(m["matchPattern"], model_name)]
    matching.sort(key=lambda m: (m["isLangfuseManaged"], m["startDate"] is None, _negated_date(m["startDate"])))
    return matching[0] if matching else None


def server_cost(model_name: str, usage: Mapping[str, Any], models: Iterable[Mapping[str, Any]]) -> ServerCost | None:
    """Price one observation the way Langfuse's server would, from its model definitions.

    Args:
        model_name: The generation's model, as sent.
        usage: Its ``usage_details`` as sent (no ``cost_details``: server-side costing).
        models: The definitions, as ``GET /api/public/models`` lists them.

    Returns:
        None when no definition matches or the usage is empty; else the costs. Only the default
        tier is applied (the tiers our definitions have; conditional tiers are not evaluated).
    """
    model = match_model(model_name, models)
    details = normalized_usage(usage)
    if model is None or not details:
        return None
    default = next(tier for tier in model["pricingTiers"] if tier["isDefault"])
    prices = {key: Decimal(repr(float(price))) for key, price in default["prices"].items()}
    costs = {key: float(prices[key] * units) for key, units in details.items() if key in prices}
    if costs:
        costs["total"] = costs["total"] if "total" in costs else _js_sum(costs.values())
    stored = {key: Decimal(repr(cost)).quantize(STORED_COST_QUANTUM) for key, cost in costs.items()}
    return ServerCost(model["id"], model["modelName"], costs, stored)


def normalized_usage(usage: Mapping[str, Any]) -> dict[str, int]:
    """Usage as the server keeps it: non-negative integers (numeric strings parsed), ``total`` added."""
    kept: dict[str, int] = {}
    for key, value in usage.items():
        if isinstance(value, str):
            try:
                value = int(float(value))
            except ValueError:
                continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            continue
        kept[key] = value
    if kept and "total" not in kept:
        kept["total"] = sum(kept.values())
    return kept


def _js_sum(values: Iterable[float]) -> float:
    total = 0.0
    for value in values:
        total += value  # JS reduce((acc, c) => acc + c, 0): plain float addition, in order
    return total


def _negated_date(value: str | None) -> float:
    return -datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else 0.0


def _price_ok(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _integer(query: Mapping[str, list[str]], name: str, default: int, *, low: int, high: int | None) -> int:
    raw = (query.get(name) or [""])[0]
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiRefusalError(400, f"{name}: Expected number, received {raw!r}") from None
    if value < low or (high is not None and value > high):
        raise ApiRefusalError(400, f"{name}: Number must be between {low} and {high or 'infinity'}")
    return value
