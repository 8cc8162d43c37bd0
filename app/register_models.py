r"""``uv run register_models``: put our price table into Langfuse as model definitions.

The tracer prices every generation itself (client-side costing: it sends ``cost_details``
computed from :class:`~pipecat_langfuse.PriceTable`). This command lets Langfuse price the same
usage itself (server-side costing): it creates one Langfuse *model definition* per entry of the
price table (built-in prices + ``PRICING_FILE``), with the same match rule and the same price
per usage key, so usage sent without ``cost_details`` costs the same in Langfuse.

It reads the variables the bot reads (``LANGFUSE_PUBLIC_KEY``, ``LANGFUSE_SECRET_KEY``,
``LANGFUSE_BASE_URL`` or ``LANGFUSE_HOST``, ``LANGFUSE_TIMEOUT``, ``PRICING_FILE``) from the
environment and from ``.env`` in the current directory (the environment wins), lists the
project's model definitions (every page), and changes only what differs:

* **create**: no definition of ours for the entry yet;
* **update**: ours exists with another pattern, unit or price: it is deleted and created
  again (the public API has no update, see below);
* **unchanged**: ours exists and is equal;
* **skip**: the entry cannot be registered (reason printed), or the project already has a
  definition with that name that this command did not create (it is never touched);
* **stale**: a definition of ours whose entry is gone from the table: kept, deleted with ``--prune``.

``--dry-run`` prints the plan and sends nothing but the list requests. The secret key is never printed.

What a definition looks like (entry ``gpt-4.1-mini``, 0.40 / 0.10 / 1.60 USD per 1M tokens)::

    {"modelName": "gpt-4.1-mini",
     "matchPattern": "(?i)^(simulated/)?((openai/)?gpt-4\\.1-mini(-\\d{4}-\\d{2}-\\d{2})?)$",
     "unit": "TOKENS",
     "pricingTiers": [{"name": "Standard", "isDefault": true, "priority": 0, "conditions": [],
                       "prices": {"input": 4e-07, "input_cached_tokens": 1e-07, "output": 1.6e-06}}]}

* ``modelName`` is the entry's name (unique per project in Langfuse, like in our table).
* ``matchPattern`` is the entry's ``match`` regex without its ``(?i)``, ``^`` and ``$``, wrapped
  as ``(?i)^(simulated/)?(...)$``: case-insensitive, anchored like Langfuse's own defaults, and
  also matching the ``simulated/<model>`` names of the offline bot (the table strips that prefix
  too). The ``(?i)^(simulated/)?(`` prefix is also how a definition is recognized as ours.
  Entries matched by service class (``<Service>/<model>``, e.g. models self-hosted on SageMaker)
  are skipped: generations carry the bare model name, so Langfuse could not tell them apart.
* Prices are USD per ONE usage unit, per usage key (``input``, ``input_cached_tokens``,
  ``input_audio_ms``, ``input_characters``, ``output_audio_ms``, ``requests``, ...): the
  table's per-million / per-minute / per-1k prices divided in decimal (``0.40 / 1e6`` is sent as
  ``4e-07``, not ``4.0000000000000003e-07``). Self-hosted entries register explicit $0 prices.
* ``unit`` (TOKENS, MILLISECONDS, CHARACTERS, REQUESTS) is informational; Langfuse prices by usage key.
  No ``tokenizerId``: our generations always carry usage, and a tokenizer would make Langfuse
  invent usage (and cost) for generations the tracer left unpriced.

Verified (2026-11-29) against:

* the SDK's generated client, langfuse 5.0.4: ``.venv/lib/python3.11/site-packages/langfuse/api/``
  ``models/raw_client.py`` (``GET api/public/models?page&limit``, ``POST api/public/models``,
  ``GET``/``DELETE api/public/models/{id}``; also a ``PUT api/public/models/{id}`` "upsert"),
  ``models/types/create_model_request.py``, ``models/types/paginated_models.py``,
  ``commons/types/model.py``, ``commons/types/pricing_tier_input.py``,
  ``commons/types/model_usage_unit.py``, ``utils/pagination/types/meta_response.py``;
* the server, langfuse/langfuse @62751446 (2026-08-22):
  ``web/src/pages/api/public/models/index.ts`` and ``[modelId]/index.ts`` (GET, POST, GET by id,
  DELETE only: **no PUT route**, so an update is delete + create),
  ``web/src/features/public-api/types/models.ts`` (body schema: flat prices OR ``pricingTiers``;
  flat prices only know input/output/total, so custom usage keys need a tier),
  ``web/src/features/models/server/publicApiModelService.ts`` (list ordered by name with
  ``meta {page, limit, totalItems, totalPages}``; create rejects a name already in the project
  and a pattern Postgres cannot compile; delete only project models, answering
  ``{"message": "Model successfully deleted"}``),
  ``packages/shared/src/utils/zod.ts`` (``limit`` 1..100, default 50; ``page`` from 1),
  ``packages/shared/src/features/model-pricing/validation.ts`` (one default tier, priority 0,
  no conditions; prices >= 0),
  ``packages/shared/src/server/ingestion/modelMatch.ts`` (``findModelInPostgres``:
  ``<model> ~ match_pattern``, project models first, then newest ``start_date``),
  ``packages/shared/src/server/pricing-tiers/matcher.ts`` and
  ``worker/src/services/IngestionService/index.ts`` (``calculateUsageCosts``: cost of each usage
  key that has a price = price x units; total = their sum; any client-sent cost wins),
  ``worker/src/constants/default-model-prices.json`` (the pattern style ``(?i)^(openai\/)?(gpt-4o)$``
  and the ``Standard`` default tier).

The 89 patterns the built-in table gives were also run through a real PostgreSQL 15 (``name ~
pattern``) on 149 model names (plain, ``simulated/``, upper case, near misses): all compile, and each
name matched exactly the definition ``PriceTable.find`` picks, or none when the table has none
(the one difference: a name with a trailing newline, which the table strips and Postgres does not).

Exit codes:
    0: OK: Langfuse's definitions match the table (or, with ``--dry-run``, the plan was printed).
    1: Unexpected error in the command itself (run with ``--verbose`` for the traceback).
    2: Missing or invalid configuration (a variable is unset or malformed, or ``PRICING_FILE`` is broken).
    3: Wrong keys: Langfuse answered 401/403.
    4: Host unreachable, timed out, a server error, or not a Langfuse server (no models API).
    5: Langfuse refused some definitions (HTTP 4xx on create or delete); the others were applied.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

import httpx
import pydantic
from langfuse.api import LangfuseAPI
from langfuse.api.commons.types.model import Model
from langfuse.api.commons.types.model_usage_unit import ModelUsageUnit
from langfuse.api.commons.types.pricing_tier_input import PricingTierInput
from langfuse.api.core.api_error import ApiError
from langfuse.api.core.request_options import RequestOptions
from langfuse.api.models.client import ModelsClient
from loguru import logger

# pipecat_langfuse imports Pipecat, whose import logs a banner to stderr; keep it out of the output.
logger.disable("pipecat")
from app._cli import exit_codes, load_local_dotenv, redact  # noqa: E402
from pipecat_langfuse import pricing  # noqa: E402
from pipecat_langfuse.pricing import ModelPrice, PriceTable, PricingError  # noqa: E402
from pipecat_langfuse.settings import (  # noqa: E402
    ENABLE_TRACING,
    LANGFUSE_BASE_URL,
    LANGFUSE_HOST,
    LANGFUSE_PUBLIC_KEY,
    LANGFUSE_SECRET_KEY,
    LANGFUSE_TIMEOUT,
    PRICING_FILE,
    SettingsError,
    TracingSettings,
)

logger.enable("pipecat")

__all__ = ["OWN_PATTERN_PREFIX", "Action", "Definition", "ExitCode", "Result", "desired", "main", "plan", "register"]

OWN_PATTERN_PREFIX = "(?i)^(simulated/)?("
"""How every pattern this command writes starts; a project definition with our name and this
prefix is ours (created by ``register_models``), any other is left alone."""
DEFAULT_TIER = "Standard"
"""Name of the one (default) pricing tier, as Langfuse names the tier of flat prices."""
PAGE_SIZE = 100
"""Models per list request: the most Langfuse allows."""
_MAX_PAGES = 1000  # a server whose totalPages never ends must not loop forever

# The unit of a definition (a ModelUsageUnit value), from the usage keys it prices (first found wins).
_UNITS: tuple[tuple[str, str], ...] = (
    (pricing.USAGE_SESSION_MS, "MILLISECONDS"),
    (pricing.USAGE_INPUT_AUDIO_MS, "MILLISECONDS"),
    (pricing.USAGE_OUTPUT_AUDIO_MS, "MILLISECONDS"),
    (pricing.USAGE_INPUT_CHARACTERS, "CHARACTERS"),
    (pricing.USAGE_REQUESTS, "REQUESTS"),
)
_TOKENS = "TOKENS"
# Regex syntax Python and Postgres (Langfuse matches with `model ~ match_pattern`) read alike.
_ALLOWED_GROUPS = ("(?:", "(?=", "(?!")
# Matched by "<service class>/<model>": the tracer prices those, Langfuse never sees that name.
_SERVICE_CLASS = re.compile(r"Service\)?/")


class ExitCode(IntEnum):
    """Exit status of ``register_models``."""

    OK = 0
    UNEXPECTED = 1
    CONFIG = 2
    WRONG_KEYS = 3
    UNREACHABLE = 4
    REFUSED = 5


@dataclass(frozen=True)
class Definition:
    """A Langfuse model definition as this command wants it.

    Attributes:
        model_name: The price entry's name.
        match_pattern: The Langfuse ``matchPattern`` (see the module docstring).
        unit: Langfuse's ``unit`` (a :class:`ModelUsageUnit` value).
        prices: USD per one usage unit, by usage key, for the default tier.
    """

    model_name: str
    match_pattern: str
    unit: str
    prices: Mapping[str, float] = field(hash=False)

    def body(self) -> dict[str, Any]:
        """The JSON body of ``POST /api/public/models``, as the SDK sends it."""
        return {
            "modelName": self.model_name,
            "matchPattern": self.match_pattern,
            "unit": self.unit,
            "pricingTiers": [
                {"name": DEFAULT_TIER, "isDefault": True, "priority": 0, "conditions": [], "prices": dict(self.prices)}
            ],
        }

    def differences(self, model: Model) -> list[str]:
        """How ``model`` (one of ours in Langfuse) differs from this definition; empty when equal."""
        found: list[str] = []
        if model.match_pattern != self.match_pattern:
            found.append(f"matchPattern {model.match_pattern} -> {self.match_pattern}")
        if model.unit != self.unit:
            found.append(f"unit {model.unit} -> {self.unit}")
        tiers = model.pricing_tiers
        default = next((tier for tier in tiers if tier.is_default), None)
        if len(tiers) != 1 or default is None or default.conditions or default.name != DEFAULT_TIER:
            found.append(f"pricing tiers {[tier.name for tier in tiers]} -> ['{DEFAULT_TIER}']")
        else:
            for key in sorted(set(default.prices) | set(self.prices)):
                old, new = default.prices.get(key), self.prices.get(key)
                if old != new:
                    found.append(f"{key} {_price(old)} -> {_price(new)}")
        if model.start_date is not None:
            found.append(f"startDate {model.start_date.isoformat()} -> none")
        if model.tokenizer_id is not None:
            found.append(f"tokenizerId {model.tokenizer_id} -> none")
        return found


@dataclass(frozen=True)
class Action:
    """One line of the plan.

    Attributes:
        verb: ``create``, ``update``, ``unchanged``, ``skip`` or ``stale``.
        name: The entry's (or the stale definition's) name.
        detail: Why, or what changes.
        definition: What to create (``create`` and ``update``).
        existing_id: Langfuse id of the definition to delete first (``update``; ``stale`` with ``--prune``).
    """

    verb: Literal["create", "update", "unchanged", "skip", "stale"]
    name: str
    detail: str = ""
    definition: Definition | None = None
    existing_id: str | None = None

    def line(self, pruning: bool = False) -> str:
        """The action as one line of output."""
        verb = "delete" if self.verb == "stale" and pruning else self.verb
        return f"{verb:<9}  {self.name}{f': {self.detail}' if self.detail else ''}"


@dataclass(frozen=True)
class Result:
    """Outcome of :func:`register`: the exit code and the lines to print."""

    exit_code: ExitCode
    lines: tuple[str, ...]
    error: BaseException | None = field(default=None, compare=False)


def langfuse_pattern(entry: ModelPrice) -> str:
    """The Langfuse ``matchPattern`` for ``entry``: its regex anchored, case-insensitive, with ``simulated/``.

    Raises:
        ValueError: The entry's regex cannot be translated (the message says why).
    """
    source = entry.pattern.pattern
    if _SERVICE_CLASS.search(source):
        raise ValueError(
            "it prices '<service class>/<model>' names; generations carry only the model name, "
            "so Langfuse cannot tell this service from the vendor's own"
        )
    inner = source.removeprefix("(?i)")
    inner = inner.removeprefix("^")
    if inner.endswith("$") and not _escaped(inner, len(inner) - 1):
        inner = inner[:-1]
    problem = _unportable(inner)
    if problem:
        raise ValueError(f"its match regex {source!r} {problem}")
    return f"{OWN_PATTERN_PREFIX}{inner})$"


def desired(table: PriceTable) -> tuple[list[Definition], list[Action]]:
    """The definitions ``table`` asks for, and the entries skipped (as ``skip`` actions)."""
    definitions: list[Definition] = []
    skipped: list[Action] = []
    for entry in table.entries:
        if not entry.unit_prices:
            skipped.append(Action("skip", entry.name, "unpriced in the price table"))
            continue
        try:
            match_pattern = langfuse_pattern(entry)
        except ValueError as exc:
            skipped.append(Action("skip", entry.name, str(exc)))
            continue
        unit = next((unit for key, unit in _UNITS if key in entry.unit_prices), _TOKENS)
        prices = {key: entry.unit_prices[key] for key in sorted(entry.unit_prices)}
        definitions.append(Definition(entry.name, match_pattern, unit, prices))
    return definitions, skipped


def plan(definitions: Sequence[Definition], skipped: Sequence[Action], existing: Sequence[Model]) -> list[Action]:
    """Compare what we want with what Langfuse has; never plans to touch a definition that is not ours.

    Args:
        definitions: What we want (see :func:`desired`).
        skipped: The entries skipped by :func:`desired`.
        existing: Every definition Langfuse lists for the project (built-in ones included).
    """
    project = {model.model_name: model for model in existing if not model.is_langfuse_managed}
    actions: list[Action] = []
    for definition in definitions:
        model = project.get(definition.model_name)
        if model is None:
            actions.append(Action("create", definition.model_name, _describe(definition), definition))
        elif not _is_ours(model):
            actions.append(
                Action(
                    "skip",
                    definition.model_name,
                    f"the project already has a definition of that name not created by register_models "
                    f"(id {model.id}, pattern {model.match_pattern}); left untouched",
                )
            )
        elif changes := definition.differences(model):
            actions.append(Action("update", definition.model_name, "; ".join(changes), definition, model.id))
        else:
            actions.append(Action("unchanged", definition.model_name))
    actions.extend(skipped)
    wanted = {definition.model_name for definition in definitions}
    for model in project.values():
        if _is_ours(model) and model.model_name not in wanted:
            detail = "created by register_models, no longer in the price table (delete it with --prune)"
            actions.append(Action("stale", model.model_name, detail, existing_id=model.id))
    return actions


def register(env: Mapping[str, str] | None = None, *, dry_run: bool = False, prune: bool = False) -> Result:
    """Bring Langfuse's model definitions in line with the price table; never raises.

    Args:
        env: Variables to read (default: ``os.environ``).
        dry_run: Only list and print the plan.
        prune: Also delete our definitions whose entry left the table.

    Returns:
        The exit code and the lines to print, with the secret key redacted.
    """
    env = os.environ if env is None else env
    secret = (env.get(LANGFUSE_SECRET_KEY) or "").strip()
    try:
        result = _register(env, dry_run, prune)
    except Exception as exc:  # noqa: BLE001 - a command-line tool reports every failure as a verdict
        result = Result(
            ExitCode.UNEXPECTED,
            (f"UNEXPECTED ERROR: {type(exc).__name__}: {exc}", "  Run with --verbose for the traceback."),
            exc,
        )
    return Result(result.exit_code, tuple(redact(line, secret) for line in result.lines), result.error)


def _register(env: Mapping[str, str], dry_run: bool, prune: bool) -> Result:
    missing = [name for name in (LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY) if not (env.get(name) or "").strip()]
    if missing:
        return Result(
            ExitCode.CONFIG,
            (
                f"MISSING VARIABLES: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set.",
                "  Set the key pair of your Langfuse project (Settings > API Keys) in ./.env or the environment,",
                f"  and {LANGFUSE_BASE_URL} to where the project lives.",
            ),
        )
    try:
        settings = TracingSettings.from_env({**env, ENABLE_TRACING: "true"})
    except SettingsError as exc:
        return Result(ExitCode.CONFIG, (f"INVALID CONFIGURATION: {exc}",), exc)
    try:
        table = PriceTable.load(settings.pricing_file)
    except PricingError as exc:
        return Result(ExitCode.CONFIG, (f"INVALID CONFIGURATION: {PRICING_FILE}: {exc}",), exc)
    definitions, skipped = desired(table)

    host_var = next((n for n in (LANGFUSE_BASE_URL, LANGFUSE_HOST) if (env.get(n) or "").strip()), LANGFUSE_BASE_URL)
    api = LangfuseAPI(
        base_url=settings.base_url,
        username=settings.public_key,
        password=settings.secret_key,
        x_langfuse_public_key=settings.public_key,
        timeout=settings.timeout_s,
    )
    models: ModelsClient = api.models  # the property is not annotated
    options: RequestOptions = {"timeout_in_seconds": settings.timeout_s, "max_retries": 0}
    url = f"{settings.base_url}/api/public/models"
    try:
        existing = _list_all(models, options)
    except Exception as exc:  # noqa: BLE001 - classified below
        return _failure(exc, f"GET {url}", settings, host_var)

    actions = plan(definitions, skipped, existing)
    source = f"built-in table + {settings.pricing_file}" if settings.pricing_file else "built-in table"
    lines = [f"Langfuse at {settings.base_url}: {len(existing)} model definitions listed; price table: {source}."]
    lines.extend(action.line(prune) for action in actions)
    counts = {verb: sum(a.verb == verb for a in actions) for verb in ("create", "update", "unchanged", "skip", "stale")}
    if dry_run:
        deleting = f", delete {counts['stale']}" if prune else ""
        lines.append(
            f"DRY RUN: would create {counts['create']}, update {counts['update']}{deleting}; "
            f"{counts['unchanged']} unchanged, {counts['skip']} skipped, "
            f"{0 if prune else counts['stale']} stale kept. Nothing was sent."
        )
        return Result(ExitCode.OK, tuple(lines))

    refused: list[str] = []
    done = dict.fromkeys(("create", "update", "stale"), 0)
    for action in actions:
        if action.verb not in done or (action.verb == "stale" and not prune):
            continue
        try:
            if action.existing_id is not None:
                models.delete(action.existing_id, request_options=options)
            if action.definition is not None:
                stored = _create(models, action.definition, options)
                if changes := action.definition.differences(stored):
                    refused.append(
                        f"  {action.name}: Langfuse stored something else ({'; '.join(changes)}); "
                        "a Langfuse without pricing tiers (added 2025-11) ignores them: upgrade it."
                    )
                    continue
        except ApiError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500 and exc.status_code not in (401, 403):
                refused.append(f"  {action.name}: HTTP {exc.status_code} {_message(exc)}")
                continue
            return _failure(exc, f"{action.verb} {action.name} ({url})", settings, host_var, lines)
        except Exception as exc:  # noqa: BLE001 - classified below
            return _failure(exc, f"{action.verb} {action.name} ({url})", settings, host_var, lines)
        done[action.verb] += 1
    stale = f"deleted {done['stale']}" if prune else f"stale kept {counts['stale']}"
    summary = (
        f"created {done['create']}, updated {done['update']}, unchanged {counts['unchanged']}, "
        f"skipped {counts['skip']}, {stale}"
    )
    if refused:
        lines.append(f"REFUSED: Langfuse refused {len(refused)} definitions; {summary}.")
        lines.extend(refused)
        return Result(ExitCode.REFUSED, tuple(lines))
    lines.append(f"OK: Langfuse's model definitions match the price table ({summary}).")
    return Result(ExitCode.OK, tuple(lines))


def _list_all(models_api: ModelsClient, options: RequestOptions) -> list[Model]:
    models: list[Model] = []
    page = 1
    while page <= _MAX_PAGES:
        answer = models_api.list(page=page, limit=PAGE_SIZE, request_options=options)
        models.extend(answer.data)
        if page >= answer.meta.total_pages or not answer.data:
            break
        page += 1
    return models


def _create(models: ModelsClient, definition: Definition, options: RequestOptions) -> Model:
    body = definition.body()
    return models.create(
        model_name=definition.model_name,
        match_pattern=definition.match_pattern,
        unit=ModelUsageUnit(definition.unit),
        pricing_tiers=[PricingTierInput.model_validate(tier) for tier in body["pricingTiers"]],
        request_options=options,
    )


def _failure(exc: Exception, what: str, settings: TracingSettings, host_var: str, before: Sequence[str] = ()) -> Result:
    status = exc.status_code if isinstance(exc, ApiError) else None
    fix_host = f"  Check {host_var}: the host only, e.g. https://cloud.langfuse.com or http://localhost:3000."
    if status in (401, 403):
        assert isinstance(exc, ApiError)
        return Result(
            ExitCode.WRONG_KEYS,
            (
                *before,
                f"WRONG KEYS: Langfuse at {settings.base_url} rejected the key pair: HTTP {status} {_message(exc)}.",
                f"  Check that {LANGFUSE_PUBLIC_KEY} and {LANGFUSE_SECRET_KEY} are one pair of the same project and",
                f"  that {host_var} is where it lives; `uv run test_langfuse` tells which fix applies.",
            ),
            exc,
        )
    if status == 404 or isinstance(exc, pydantic.ValidationError) or (status is not None and 200 <= status < 300):
        answer = f"HTTP {status}" if status is not None else "JSON of another shape"
        return Result(
            ExitCode.UNREACHABLE,
            (
                *before,
                f"NOT A LANGFUSE SERVER: {what} answered {answer}; no Langfuse models API there.",
                fix_host,
                "  Do not include a path such as /api/public; the command adds it.",
            ),
            exc,
        )
    if status is not None:
        assert isinstance(exc, ApiError)
        why = f"answered HTTP {status} {_message(exc)}"
    elif isinstance(exc, httpx.TimeoutException):
        why = f"no answer within {settings.timeout_s} s ({LANGFUSE_TIMEOUT}={settings.timeout_s})"
    elif isinstance(exc, httpx.ConnectError):
        why = "cannot connect (connection refused, DNS or TLS error)"
    elif isinstance(exc, httpx.HTTPError):
        why = f"{type(exc).__name__}: {exc}"
    else:
        raise exc
    return Result(
        ExitCode.UNREACHABLE,
        (*before, f"UNREACHABLE: {what}: {why}.", fix_host, "  Nothing more was changed; run it again later."),
        exc,
    )


def _is_ours(model: Model) -> bool:
    return not model.is_langfuse_managed and model.match_pattern.startswith(OWN_PATTERN_PREFIX)


def _describe(definition: Definition) -> str:
    prices = ", ".join(f"{key}={_price(price)}" for key, price in definition.prices.items())
    return f"{definition.match_pattern} {definition.unit} {prices} USD/unit"


def _price(value: float | None) -> str:
    return "none" if value is None else repr(value)


def _message(exc: ApiError) -> str:
    message = exc.body.get("message") if isinstance(exc.body, dict) else None
    return f'"{message}"' if message else ""


def _escaped(text: str, index: int) -> bool:
    backslashes = 0
    while index - backslashes - 1 >= 0 and text[index - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _unportable(inner: str) -> str | None:
    """Why ``inner`` would not mean the same in Postgres inside our anchors, or None."""
    in_class = False
    for index, char in enumerate(inner):
        if _escaped(inner, index):
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char in "^$":
            return f"has an anchor '{char}' inside; write one ^...$ around the whole regex"
        elif char == "(" and inner[index + 1 : index + 2] == "?" and inner[index : index + 3] not in _ALLOWED_GROUPS:
            return f"uses {inner[index : index + 4]!r}, which Postgres (Langfuse's matcher) does not read like Python"
    return None


def _parser() -> argparse.ArgumentParser:
    codes = exit_codes(
        (
            (ExitCode.OK, "OK: definitions match the price table (or the dry-run plan was printed)"),
            (ExitCode.UNEXPECTED, "unexpected error (see --verbose)"),
            (ExitCode.CONFIG, "missing or invalid configuration"),
            (ExitCode.WRONG_KEYS, "wrong keys (HTTP 401/403)"),
            (ExitCode.UNREACHABLE, "host unreachable, timed out, server error, or not a Langfuse server"),
            (ExitCode.REFUSED, "Langfuse refused some definitions (the others were applied)"),
        )
    )
    return argparse.ArgumentParser(
        prog="register_models",
        description=(
            "Create or update Langfuse model definitions from the price table (built-in + PRICING_FILE),\n"
            "so Langfuse itself prices usage sent without cost (server-side costing).\n"
            f"Reads {LANGFUSE_PUBLIC_KEY}, {LANGFUSE_SECRET_KEY}, {LANGFUSE_BASE_URL} (or {LANGFUSE_HOST}),\n"
            f"{LANGFUSE_TIMEOUT} and {PRICING_FILE} from the environment and ./.env (the environment wins)."
        ),
        epilog=codes,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``register_models`` from the command line; returns the exit code.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = _parser()
    parser.add_argument("--dry-run", action="store_true", help="print the plan; send nothing but the list requests")
    parser.add_argument(
        "--prune", action="store_true", help="also delete definitions this command created whose entry left the table"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the traceback of a failure")
    args = parser.parse_args(argv)

    loaded = load_local_dotenv()
    result = register(os.environ, dry_run=args.dry_run, prune=args.prune)
    print("\n".join(result.lines))
    if result.exit_code is ExitCode.CONFIG and not loaded:
        print(f"  (no .env file in {Path.cwd()}; only the environment was read)")
    if args.verbose and result.error is not None:
        secret = (os.environ.get(LANGFUSE_SECRET_KEY) or "").strip()
        print(redact("".join(traceback.format_exception(result.error)), secret), file=sys.stderr, end="")
    return int(result.exit_code)


if __name__ == "__main__":
    raise SystemExit(main())
