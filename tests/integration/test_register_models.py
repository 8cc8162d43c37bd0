"""`register_models` against the local Langfuse stand-in: exact requests, idempotence, and server-side cost parity.

The server-side prices come from ``tests/support/langfuse_models.py``, which prices an observation
the way Langfuse's worker does with the definitions the command created.
"""

from __future__ import annotations

import base64
import math
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.register_models import ExitCode, desired, register
from pipecat_langfuse import PriceTable
from tests.integration.test_check import closed_port
from tests.support.langfuse_models import LANGFUSE_MANAGED_MODELS
from tests.support.langfuse_server import MODELS_PATH, LocalLangfuse, ReceivedRequest, StartLocalLangfuse
from tests.support.processes import run_command

PUBLIC_KEY = "pk-lf-models-public"
SECRET_KEY = "sk-lf-models-secret-0123456789"
WRONG_SECRET = "sk-lf-models-wrong-9876543210"
REGISTER = (sys.executable, "-m", "app.register_models")
SERVICE_CLASS_ENTRIES = {"sagemaker-endpoint-stt", "sagemaker-endpoint-tts"}
"""Built-in entries matched by '<service class>/<model>': Langfuse never sees such a name."""


def listing(server: LocalLangfuse) -> list[tuple[str, str]]:
    """The GET requests that list every definition the project sees now, 100 a page."""
    pages = max(1, math.ceil(len(server.listed_models()) / 100))
    return [("GET", f"page={page}&limit=100") for page in range(1, pages + 1)]


PRICING_FILE = """
[[model]]
name = "acme-voice"
kind = "tts"
match = "(?i)^(acme/)?acme-voice-v[12]$"
usd_per_generated_minute = 0.06
source = "https://example.com/acme"
date = "2026-11-01"

[[model]]
name = "acme-ears"
kind = "stt"
usd_per_1k_requests = 2.5
source = "https://example.com/acme"
date = "2026-11-01"
"""

STANDARD = {"name": "Standard", "isDefault": True, "priority": 0, "conditions": []}
EXPECTED_BODIES: dict[str, dict[str, Any]] = {
    # LLM with cached input: 0.40 / 0.10 / 1.60 USD per 1M tokens.
    "gpt-4.1-mini": {
        "modelName": "gpt-4.1-mini",
        "matchPattern": r"(?i)^(simulated/)?((openai/)?gpt-4\.1-mini(-\d{4}-\d{2}-\d{2})?)$",
        "unit": "TOKENS",
        "pricingTiers": [
            {
                **STANDARD,
                "prices": {
                    "input": 4e-07,
                    "input_cached_tokens": 1e-07,
                    "output": 1.6e-06,
                    "output_reasoning_tokens": 1.6e-06,  # Langfuse counts reasoning apart: priced as output
                },
            }
        ],
    },
    # STT per minute: 0.0048 USD / 60 000 ms.
    "nova-3": {
        "modelName": "nova-3",
        "matchPattern": r"(?i)^(simulated/)?((deepgram/)?nova-3(-general)?)$",
        "unit": "MILLISECONDS",
        "pricingTiers": [{**STANDARD, "prices": {"input_audio_ms": 8e-08}}],
    },
    # TTS per character: 15 USD per 1M characters.
    "tts-1": {
        "modelName": "tts-1",
        "matchPattern": r"(?i)^(simulated/)?((openai/)?tts-1(-\d{4})?)$",
        "unit": "CHARACTERS",
        "pricingTiers": [{**STANDARD, "prices": {"input_characters": 1.5e-05}}],
    },
    # TTS per generated minute (PRICING_FILE): 0.06 USD / 60 000 ms.
    "acme-voice": {
        "modelName": "acme-voice",
        "matchPattern": r"(?i)^(simulated/)?((acme/)?acme-voice-v[12])$",
        "unit": "MILLISECONDS",
        "pricingTiers": [{**STANDARD, "prices": {"output_audio_ms": 1e-06}}],
    },
    # Per request, no `match` (the name itself, escaped by re.escape): 2.5 USD per 1k requests.
    "acme-ears": {
        "modelName": "acme-ears",
        "matchPattern": r"(?i)^(simulated/)?(acme\-ears)$",
        "unit": "REQUESTS",
        "pricingTiers": [{**STANDARD, "prices": {"requests": 0.0025}}],
    },
    # Self-hosted: an explicit $0.
    "kokoro-local": {
        "modelName": "kokoro-local",
        "matchPattern": r"(?i)^(simulated/)?((kokoro/)?KokoroTTSService)$",
        "unit": "CHARACTERS",
        "pricingTiers": [{**STANDARD, "prices": {"input_characters": 0.0}}],
    },
}

# (model name as a generation reports it, usage_details as the tracer sends it)
GENERATIONS: list[tuple[str, dict[str, int]]] = [
    ("gpt-4.1-mini", {"input": 1180, "input_cached_tokens": 1024, "output": 57}),
    ("simulated/gpt-4.1-mini", {"input": 311, "input_cached_tokens": 0, "output": 23}),
    ("nova-3", {"input_audio_ms": 4360}),
    ("simulated/nova-3", {"input_audio_ms": 12345}),
    ("tts-1", {"input_characters": 87}),
    ("acme-voice-v2", {"output_audio_ms": 5230}),
    ("acme-ears", {"requests": 3}),
    ("KokoroTTSService", {"input_characters": 140}),
]


@pytest.fixture
def server(local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return local_langfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY)


@pytest.fixture
def pricing_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICING_FILE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def registered(
    module_local_langfuse: StartLocalLangfuse, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LocalLangfuse, PriceTable]:
    """A server with the definitions of the built-in table + PRICING_FILE registered, and that table."""
    server = module_local_langfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY)
    path = tmp_path_factory.mktemp("prices") / "prices.toml"
    path.write_text(PRICING_FILE, encoding="utf-8")
    assert register(env_for(server, path)).exit_code is ExitCode.OK
    return server, PriceTable.load(path)


def env_for(server: LocalLangfuse, pricing_file: Path | None = None, secret: str = SECRET_KEY) -> dict[str, str]:
    env = {"LANGFUSE_PUBLIC_KEY": PUBLIC_KEY, "LANGFUSE_SECRET_KEY": secret, "LANGFUSE_BASE_URL": server.url}
    if pricing_file is not None:
        env["PRICING_FILE"] = str(pricing_file)
    return env


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_command([*REGISTER, *args], cwd=cwd, env=env, secrets=[SECRET_KEY, WRONG_SECRET])


def writes(requests: list[ReceivedRequest]) -> list[ReceivedRequest]:
    return [r for r in requests if r.method != "GET"]


def seed_user_models(server: LocalLangfuse, count: int) -> list[dict[str, Any]]:
    """Definitions the user made by hand: never touched. One has the name of a price entry."""
    names = [f"user-model-{i:02d}" for i in range(count - 1)] + ["tts-1-hd"]
    return [
        server.models.create(
            {"modelName": name, "matchPattern": f"(?i)^{name}$", "unit": "TOKENS", "inputPrice": 1e-06}
        )
        for name in names
    ]


def test_first_run_creates_one_definition_per_priced_entry(
    server: LocalLangfuse, pricing_file: Path, tmp_path: Path
) -> None:
    user_models = seed_user_models(server, 100)  # with 2 built-in ones: two pages of 100
    table = PriceTable.load(pricing_file)

    done = run(tmp_path, env_for(server, pricing_file))

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    requests = server.model_requests()
    basic = "Basic " + base64.b64encode(f"{PUBLIC_KEY}:{SECRET_KEY}".encode()).decode()
    assert {r.headers["authorization"] for r in requests} == {basic}
    lists = [r for r in requests if r.method == "GET"]
    assert [(r.path, r.query) for r in lists] == [(MODELS_PATH, "page=1&limit=100"), (MODELS_PATH, "page=2&limit=100")]
    assert requests[:2] == lists  # everything is listed before anything is written
    posts = writes(requests)
    assert {(r.method, r.path) for r in posts} == {("POST", MODELS_PATH)}
    expected_names = [e.name for e in table.entries if e.name not in SERVICE_CLASS_ENTRIES and e.name != "tts-1-hd"]
    assert [r.body["modelName"] for r in posts] == expected_names
    bodies = {r.body["modelName"]: r.body for r in posts}
    for name, body in EXPECTED_BODIES.items():
        assert bodies[name] == body, name
    for body in bodies.values():
        assert set(body) == {"modelName", "matchPattern", "unit", "pricingTiers"}  # no tokenizer, no flat prices
    # The price table's own unit prices, sent as they are (no float noise such as 4.0000000000000003e-07).
    for entry in table.entries:
        if entry.name in bodies:
            assert bodies[entry.name]["pricingTiers"][0]["prices"] == dict(entry.unit_prices)

    # Langfuse's own definitions and the user's are untouched.
    assert [m["id"] for m in server.project_models()[:100]] == [m["id"] for m in user_models]
    assert len(server.project_models()) == 100 + len(expected_names)
    lines = done.stdout.splitlines()
    assert (
        lines[0]
        == f"Langfuse at {server.url}: 102 model definitions listed; price table: built-in table + {pricing_file}."
    )
    assert "create     acme-ears: (?i)^(simulated/)?(acme\\-ears)$ REQUESTS requests=0.0025 USD/unit" in lines
    assert any(line.startswith("skip       tts-1-hd: the project already has a definition") for line in lines)
    assert any(
        line.startswith("skip       sagemaker-endpoint-stt: it prices '<service class>/<model>'") for line in lines
    )
    assert lines[-1] == (
        f"OK: Langfuse's model definitions match the price table (created {len(expected_names)}, updated 0, "
        "unchanged 0, skipped 3, stale kept 0)."
    )


def test_second_run_changes_nothing_and_a_changed_price_updates_only_that_model(
    server: LocalLangfuse, pricing_file: Path
) -> None:
    assert register(env_for(server, pricing_file)).exit_code is ExitCode.OK
    before = {m["modelName"]: m for m in server.project_models()}
    sent = len(server.model_requests())
    lists = listing(server)

    again = register(env_for(server, pricing_file))

    assert again.exit_code is ExitCode.OK, again.lines
    assert [(r.method, r.query) for r in server.model_requests()[sent:]] == lists
    assert again.lines[-1].startswith("OK: Langfuse's model definitions match the price table (created 0, updated 0,")

    pricing_file.write_text(
        PRICING_FILE + '\n[[model]]\nname = "nova-3"\nkind = "stt"\nmatch = "(?i)^(deepgram/)?nova-3(-general)?$"\n'
        'usd_per_minute = 0.0059\nsource = "https://deepgram.com/pricing"\ndate = "2026-11-20"\n',
        encoding="utf-8",
    )
    sent = len(server.model_requests())

    changed = register(env_for(server, pricing_file))

    assert changed.exit_code is ExitCode.OK, changed.lines
    new = server.model_requests()[sent:]
    assert [(r.method, r.query) for r in new[: len(lists)]] == lists  # everything listed before any write
    new = new[len(lists) :]
    assert [(r.method, r.path) for r in new] == [
        ("DELETE", f"{MODELS_PATH}/{before['nova-3']['id']}"),
        ("POST", MODELS_PATH),
    ]
    assert new[1].body == {
        **EXPECTED_BODIES["nova-3"],
        "pricingTiers": [{**STANDARD, "prices": {"input_audio_ms": 9.833333333333333e-08}}],
    }
    assert "update     nova-3: input_audio_ms 8e-08 -> 9.833333333333333e-08" in changed.lines
    after = {m["modelName"]: m for m in server.project_models()}
    assert {name for name in after if after[name] != before[name]} == {"nova-3"}


def test_dry_run_prints_the_plan_and_sends_no_write(server: LocalLangfuse, pricing_file: Path, tmp_path: Path) -> None:
    assert register(env_for(server)).exit_code is ExitCode.OK  # built-in table only
    sent = len(server.model_requests())
    lists = listing(server)
    pricing_file.write_text(
        PRICING_FILE + '\n[[model]]\nname = "tts-1"\nkind = "tts"\nusd_per_million_characters = 16\n'
        'match = "(?i)^(openai/)?tts-1(-\\\\d{4})?$"\nsource = "https://openai.com"\ndate = "2026-11-20"\n',
        encoding="utf-8",
    )

    done = run(tmp_path, env_for(server, pricing_file), "--dry-run")

    assert done.returncode == 0, done.stdout + done.stderr
    assert [(r.method, r.query) for r in server.model_requests()[sent:]] == lists
    lines = done.stdout.splitlines()
    assert "update     tts-1: input_characters 1.5e-05 -> 1.6e-05" in lines
    assert any(
        line.startswith("create     acme-voice: (?i)^(simulated/)?((acme/)?acme-voice-v[12])$ MILLISECONDS")
        for line in lines
    )
    assert sum(line.startswith("unchanged  ") for line in lines) == len(PriceTable.load().entries) - 3
    wanted, skipped = desired(PriceTable.load())  # the built-in table: all registered by the first run
    assert lines[-1] == (
        f"DRY RUN: would create 2, update 1; {len(wanted) - 1} unchanged, {len(skipped)} skipped, 0 stale kept. "
        "Nothing was sent."
    )


@pytest.mark.parametrize(("model", "usage"), GENERATIONS, ids=[name for name, _ in GENERATIONS])
def test_server_side_cost_equals_client_side_cost(
    registered: tuple[LocalLangfuse, PriceTable], model: str, usage: dict[str, int]
) -> None:
    server, table = registered

    client = table.cost(model, usage)
    charged = server.server_cost(model, usage)

    entry = table.find(model)
    assert client is not None
    assert entry is not None
    assert charged is not None
    assert charged.model_name == entry.name
    assert charged.model_id not in {m["id"] for m in LANGFUSE_MANAGED_MODELS}  # ours win over Langfuse's own
    # Every cost Langfuse keeps (12 decimals) is exactly the tracer's (10 decimals), total included.
    assert charged.stored == {key: Decimal(repr(cost)) for key, cost in client.items()}
    assert list(charged.stored) == list(client)


def test_server_and_client_agree_on_many_entries_for_realistic_names(
    registered: tuple[LocalLangfuse, PriceTable],
) -> None:
    server, table = registered
    names = [
        "gpt-4o",
        "gpt-4o-2024-05-13",
        "GPT-4o-2024-08-06",
        "openai/gpt-4.1-nano",
        "claude-haiku-4-5-20251001",
        "claude-sonnet-4-5",
        "nova-3-general",
        "nova-2-phonecall",
        "flux-general-en",
        "aura-2-helena-en",
        "aura-asteria-en",
        "sonic-3-2025-10-27",
        "sonic-3.5-latest",
        "eleven_flash_v2_5",
        "scribe_v2_realtime",
        "whisper-1",
        "gpt-4o-mini-transcribe",
        "gpt-4o-mini-tts",
        "simulated/ink-whisper",
        "AzureSTTService",
        "cartesia/sonic-turbo",
        "large-v3",
        "KokoroTTSService",
        "simba-3.5",
        "speech-2.8-hd",
        "rime/mistv3",
    ]
    rng = random.Random(7)
    for name in names:
        entry = table.find(name)
        assert entry is not None, name
        usage = {key: rng.randrange(0, 200_000) for key in entry.unit_prices}
        charged = server.server_cost(name, usage)
        client = table.cost(name, usage)
        assert charged is not None, name
        assert client is not None, name
        assert charged.model_name == entry.name, name
        # Langfuse keeps 12 decimals, the tracer rounds to 10: equal at the tracer's precision.
        assert charged.total_stored.quantize(Decimal("1e-10")) == Decimal(repr(client["total"])).quantize(
            Decimal("1e-10")
        ), name


def test_wrong_keys_exit_3_with_one_clear_line(server: LocalLangfuse, tmp_path: Path) -> None:
    done = run(tmp_path, env_for(server, secret=WRONG_SECRET))

    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        f"WRONG KEYS: Langfuse at {server.url} rejected the key pair: HTTP 401 "
        '"Invalid credentials. Confirm that you\'ve configured the correct host.".'
    )
    assert all(line.startswith("  ") for line in lines[1:])
    assert writes(server.model_requests()) == []


def test_unreachable_exit_4(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    env = {"LANGFUSE_PUBLIC_KEY": PUBLIC_KEY, "LANGFUSE_SECRET_KEY": SECRET_KEY, "LANGFUSE_BASE_URL": url}

    done = run(tmp_path, env)

    assert done.returncode == 4, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == (
        f"UNREACHABLE: GET {url}/api/public/models: cannot connect (connection refused, DNS or TLS error)."
    )


def test_missing_secret_exit_2_names_the_variable(server: LocalLangfuse) -> None:
    result = register({"LANGFUSE_PUBLIC_KEY": PUBLIC_KEY, "LANGFUSE_BASE_URL": server.url})

    assert result.exit_code is ExitCode.CONFIG
    assert result.lines[0] == "MISSING VARIABLES: LANGFUSE_SECRET_KEY is not set."
    assert server.model_requests() == []


def test_refused_definitions_exit_5_and_the_stand_in_answers_like_langfuse(server: LocalLangfuse) -> None:
    server.models_status = 400
    result = register(env_for(server))
    assert result.exit_code is ExitCode.REFUSED
    [verdict] = [line for line in result.lines if not line.startswith(("create ", "skip ", "  ", "Langfuse at"))]
    wanted, skipped = desired(PriceTable.load())
    assert verdict == (
        f"REFUSED: Langfuse refused {len(wanted)} definitions; created 0, updated 0, unchanged 0, "
        f"skipped {len(skipped)}, stale kept 0."
    )
    assert '  nova-3: HTTP 400 "rejected model change"' in result.lines
    server.models_status = None

    # Built-in definitions cannot be deleted; a project name is unique; limit is 1..100.
    auth = (PUBLIC_KEY, SECRET_KEY)
    gone = httpx.delete(f"{server.url}{MODELS_PATH}/cm7zzrs1327124dhjtb95w8p96", auth=auth)
    assert gone.status_code == 404
    body = {"modelName": "x", "matchPattern": "(?i)^x$", "unit": "TOKENS", "inputPrice": 1e-06}
    assert httpx.post(f"{server.url}{MODELS_PATH}", json=body, auth=auth).status_code == 200
    assert httpx.post(f"{server.url}{MODELS_PATH}", json=body, auth=auth).json()["message"] == (
        "Model name 'x' already exists in project"
    )
    assert httpx.get(f"{server.url}{MODELS_PATH}?limit=101", auth=auth).status_code == 400
    page = httpx.get(f"{server.url}{MODELS_PATH}?page=2&limit=2", auth=auth).json()
    assert page["meta"] == {"page": 2, "limit": 2, "totalItems": 3, "totalPages": 2}
    assert httpx.put(f"{server.url}{MODELS_PATH}/any", json=body, auth=auth).status_code == 405


def test_definitions_whose_entry_left_the_table_are_kept_unless_pruned(
    server: LocalLangfuse, pricing_file: Path
) -> None:
    assert register(env_for(server, pricing_file)).exit_code is ExitCode.OK
    ours = {m["modelName"]: m["id"] for m in server.project_models()}
    sent = len(server.model_requests())

    kept = register(env_for(server))

    assert kept.exit_code is ExitCode.OK, kept.lines
    assert writes(server.model_requests()[sent:]) == []
    assert (
        "stale      acme-ears: created by register_models, no longer in the price table (delete it with --prune)"
        in (kept.lines)
    )
    sent = len(server.model_requests())

    pruned = register(env_for(server), prune=True)

    assert pruned.exit_code is ExitCode.OK, pruned.lines
    assert [(r.method, r.path) for r in writes(server.model_requests()[sent:])] == [
        ("DELETE", f"{MODELS_PATH}/{ours['acme-ears']}"),  # in the order Langfuse lists them: by name
        ("DELETE", f"{MODELS_PATH}/{ours['acme-voice']}"),
    ]
    assert pruned.lines[-1].endswith("skipped 2, deleted 2).")
    assert {m["modelName"] for m in server.project_models()} == set(ours) - {"acme-voice", "acme-ears"}
