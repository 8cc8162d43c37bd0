"""Static checks of server/docker-compose.yml and server/README.md.

No Docker engine is available to the tests, so they read the files: the compose file must
parse, hold Langfuse's six services, start out of the box with the keys and URL of
.env.example, publish nothing beyond 127.0.0.1, keep its data in named volumes, and mark
every default secret with "# CHANGEME". Values are taken as `docker compose` would resolve
them with no .env and an empty environment: "${VAR:-default}" -> "default".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "server" / "docker-compose.yml"
README_FILE = ROOT / "server" / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"

WEB = "langfuse-web"
WORKER = "langfuse-worker"

# Service name -> pattern its image must match (names as in Langfuse's own compose file).
EXPECTED_IMAGES = {
    WEB: r"(^|/)langfuse/langfuse:(?P<tag>[\w.\-]+)$",
    WORKER: r"(^|/)langfuse/langfuse-worker:(?P<tag>[\w.\-]+)$",
    "postgres": r"(^|/)postgres:(?P<tag>[\w.\-]+)$",
    "clickhouse": r"(^|/)clickhouse/clickhouse-server:(?P<tag>[\w.\-]+)$",
    "redis": r"(^|/)redis:(?P<tag>[\w.\-]+)$",
    "minio": r"(^|/)minio(:[\w.\-]+)?$",
}

# Where each stateful service keeps its data.
DATA_DIRS = {
    "postgres": "/var/lib/postgresql/data",
    "clickhouse": "/var/lib/clickhouse",
    "minio": "/data",
    "redis": "/data",
}

# Langfuse's headless-initialization variables (self-hosting docs, "Headless Initialization").
KNOWN_INIT_VARS = {
    "LANGFUSE_INIT_ORG_ID",
    "LANGFUSE_INIT_ORG_NAME",
    "LANGFUSE_INIT_PROJECT_ID",
    "LANGFUSE_INIT_PROJECT_NAME",
    "LANGFUSE_INIT_PROJECT_RETENTION",
    "LANGFUSE_INIT_PROJECT_PUBLIC_KEY",
    "LANGFUSE_INIT_PROJECT_SECRET_KEY",
    "LANGFUSE_INIT_USER_EMAIL",
    "LANGFUSE_INIT_USER_NAME",
    "LANGFUSE_INIT_USER_PASSWORD",
}
# Without any of these Langfuse skips creating the org, project, keys or user.
REQUIRED_INIT_VARS = {
    "LANGFUSE_INIT_ORG_ID",
    "LANGFUSE_INIT_PROJECT_ID",
    "LANGFUSE_INIT_PROJECT_PUBLIC_KEY",
    "LANGFUSE_INIT_PROJECT_SECRET_KEY",
    "LANGFUSE_INIT_USER_EMAIL",
    "LANGFUSE_INIT_USER_PASSWORD",
}

# Names of settings that hold a secret (NEXTAUTH_URL is not one; REDIS_AUTH is).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|SALT|ENCRYPTION_KEY|_AUTH$|DATABASE_URL")
# Secrets that must exist and be marked, at the least.
CORE_SECRETS = {
    "SALT",
    "ENCRYPTION_KEY",
    "NEXTAUTH_SECRET",
    "POSTGRES_PASSWORD",
    "CLICKHOUSE_PASSWORD",
    "REDIS_AUTH",
    "MINIO_ROOT_PASSWORD",
    "LANGFUSE_INIT_USER_PASSWORD",
    "LANGFUSE_INIT_PROJECT_SECRET_KEY",
}
CHANGEME = "# CHANGEME"

_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")


def resolve(value: Any, *, strict: bool = True) -> str:
    """The value `docker compose` would use with no .env and an empty environment.

    "${VAR:?message}" makes compose refuse to start: an error when strict, else "".
    """

    def substitute(match: re.Match[str]) -> str:
        op, arg = match.group("op"), match.group("arg")
        if op in ("-", ":-"):
            return arg
        if op in ("?", ":?") and strict:
            raise AssertionError(f"{match.group(0)} has no default: the stack would not start out of the box")
        return ""  # ${VAR}, ${VAR:+x} with VAR unset, or ${VAR:?x} when not strict

    text = str(value).replace("$$", "\0")
    return _INTERPOLATION.sub(substitute, text).replace("\0", "$")


def interpolated_names(value: str) -> set[str]:
    return {m.group("name") for m in _INTERPOLATION.finditer(value)}


@pytest.fixture(scope="module")
def compose_text() -> str:
    assert COMPOSE_FILE.is_file(), f"missing {COMPOSE_FILE}"
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict), "the compose file must be a YAML mapping"
    assert isinstance(data.get("services"), dict), "no services mapping"
    assert data["services"], "no services"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = dotenv_values(ENV_EXAMPLE)
    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL"):
        assert values.get(key), f"{key} is missing or empty in .env.example"
    return {k: v or "" for k, v in values.items()}


@pytest.fixture(scope="module")
def readme() -> str:
    assert README_FILE.is_file(), f"missing {README_FILE}"
    return README_FILE.read_text(encoding="utf-8")


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or KEY=VALUE list), values resolved."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        env = dict(pairs)
    return {str(k): resolve(v) for k, v in env.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    """(host ip or None, host port, container port) of each published port."""
    result: list[tuple[str | None, str, str]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):  # long syntax
            host_ip = entry.get("host_ip")
            result.append(
                (
                    resolve(host_ip) if host_ip is not None else None,
                    resolve(entry.get("published", "")),
                    resolve(entry.get("target", "")),
                )
            )
            continue
        spec = resolve(entry).split("/", 1)[0]  # drop /tcp, /udp
        ip: str | None = None
        if spec.startswith("["):  # [::1]:8080:80
            ip, spec = spec[1:].split("]:", 1)
            host, _, container = spec.partition(":")
        else:
            parts = spec.split(":")
            if len(parts) == 3:
                ip, host, container = parts
            elif len(parts) == 2:
                host, container = parts
            else:
                host, container = "", parts[0]  # "3000": random host port on all interfaces
        result.append((ip, host, container))
    return result


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry; source is '' for anonymous volumes."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((resolve(entry.get("source", "")), resolve(entry.get("target", ""))))
        else:
            parts = resolve(entry).split(":")
            mounts.append(("", parts[0]) if len(parts) == 1 else (parts[0], parts[1]))
    return mounts


def changeme_entries(compose_text: str) -> list[tuple[int, str, str]]:
    """(line number, setting name, raw value) of every secret setting in the file.

    Walks YAML nodes, not the loaded data, to know the line each value is on. A setting is
    secret when its key looks like a secret, or when its value interpolates a variable whose
    name looks like one (DATABASE_URL's ${POSTGRES_PASSWORD}, redis's --requirepass argument).
    """
    entries: list[tuple[int, str, str]] = []
    seen: set[int] = set()

    def walk(node: yaml.Node, key: str | None = None) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                walk(value_node, str(key_node.value))
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, key)
        elif isinstance(node, yaml.ScalarNode):
            value = str(node.value)
            names = interpolated_names(value)
            if key is not None and (SECRET_NAME.search(key) or any(SECRET_NAME.search(n) for n in names)):
                entries.append((node.start_mark.line, key, value))

    root = yaml.compose(compose_text)
    assert root is not None
    walk(root)
    return entries


# --- the file parses and holds Langfuse's stack -------------------------------------------


def test_compose_has_langfuse_services_with_images(services: dict[str, dict[str, Any]]) -> None:
    missing = set(EXPECTED_IMAGES) - set(services)
    assert not missing, f"services missing from the compose file: {sorted(missing)}"
    for name, pattern in EXPECTED_IMAGES.items():
        image = resolve(services[name].get("image", ""))
        assert re.search(pattern, image), f"{name}: image {image!r} does not match {pattern}"


def _tag(services: dict[str, dict[str, Any]], name: str) -> str:
    match = re.search(EXPECTED_IMAGES[name], resolve(services[name]["image"]))
    assert match, f"{name}: unexpected image"
    assert match.groupdict().get("tag"), f"{name}: image has no tag"
    return match.group("tag")


def _version(tag: str) -> tuple[int, ...]:
    match = re.match(r"\d+(\.\d+)*", tag)
    assert match, f"tag {tag!r} does not start with a version"
    return tuple(int(p) for p in match.group(0).split("."))


def test_web_and_worker_run_the_same_langfuse_major(services: dict[str, dict[str, Any]]) -> None:
    web, worker = _tag(services, WEB), _tag(services, WORKER)
    assert _version(web)[0] == _version(worker)[0], f"web {web} and worker {worker} differ"
    # The project's Python SDK (langfuse 5.x) needs a Langfuse server >= 4.59: v3 is not supported.
    assert _version(web)[0] == 4, f"langfuse image tag {web}: expected major version 4"


def test_infrastructure_versions_meet_langfuse_v4_minimums(services: dict[str, dict[str, Any]]) -> None:
    assert _version(_tag(services, "clickhouse")) >= (25, 12), "Langfuse v4 needs ClickHouse >= 25.12"
    assert _version(_tag(services, "postgres")) >= (15,), "Langfuse v4 needs PostgreSQL >= 15"
    assert _version(_tag(services, "redis")) >= (7,), "Langfuse needs Redis >= 7"


def test_redis_never_evicts_queue_keys(services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"].get("command")
    args = command if isinstance(command, list) else str(command).split()
    args = [resolve(a) for a in args]
    assert "--maxmemory-policy" in args, "redis must set --maxmemory-policy"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"


def test_langfuse_waits_for_healthy_infrastructure(services: dict[str, dict[str, Any]]) -> None:
    infra = {"postgres", "clickhouse", "redis", "minio"}
    for name in infra:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in (WEB, WORKER):
        depends = services[name].get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions"
        for dep in infra:
            assert depends.get(dep, {}).get("condition") == "service_healthy", f"{name} must wait for {dep}"


# --- out of the box it matches .env.example ----------------------------------------------


def test_init_variables_create_the_env_example_project(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    web_env = environment(services[WEB])
    present = {k for k in web_env if k.startswith("LANGFUSE_INIT_")}
    missing = REQUIRED_INIT_VARS - present
    assert not missing, f"{WEB} lacks {sorted(missing)}: Langfuse would skip initialization"
    for key in REQUIRED_INIT_VARS:
        assert web_env[key], f"{key} has an empty default"
    assert web_env["LANGFUSE_INIT_PROJECT_PUBLIC_KEY"] == env_example["LANGFUSE_PUBLIC_KEY"]
    assert web_env["LANGFUSE_INIT_PROJECT_SECRET_KEY"] == env_example["LANGFUSE_SECRET_KEY"]


def test_init_variables_are_spelled_right_and_valid(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in environment(service).items():
            if key.startswith("LANGFUSE_INIT_"):
                assert key in KNOWN_INIT_VARS, f"{name}: unknown variable {key}"
                assert not re.match(r"""^\s*["']|["']\s*$""", value), f"{name}: {key} has literal quotes"
    web_env = environment(services[WEB])
    # Langfuse validates the email (zod .email()) and wants passwords of at least 8 characters.
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}", web_env["LANGFUSE_INIT_USER_EMAIL"])
    assert len(web_env["LANGFUSE_INIT_USER_PASSWORD"]) >= 8


def test_web_port_and_url_agree_with_env_example(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    base_url = env_example["LANGFUSE_BASE_URL"].rstrip("/")
    parts = urlsplit(base_url)
    assert parts.hostname in ("localhost", "127.0.0.1"), f"LANGFUSE_BASE_URL {base_url} is not local"
    port = str(parts.port or (443 if parts.scheme == "https" else 80))

    web = services[WEB]
    container_port = environment(web).get("PORT", "3000")
    assert (
        "127.0.0.1",
        port,
        container_port,
    ) in published_ports(web), f"{WEB} must publish 127.0.0.1:{port}:{container_port}"
    for name in (WEB, WORKER):
        nextauth_url = environment(services[name]).get("NEXTAUTH_URL", "").rstrip("/")
        assert nextauth_url == base_url, f"{name}: NEXTAUTH_URL {nextauth_url!r} != {base_url!r}"


# --- localhost only ----------------------------------------------------------------------


def test_every_published_port_is_bound_to_localhost(services: dict[str, dict[str, Any]]) -> None:
    count = 0
    for name, service in services.items():
        assert service.get("network_mode") != "host", f"{name} uses the host network"
        for ip, host, container in published_ports(service):
            count += 1
            assert ip == "127.0.0.1", f"{name}: port {host}:{container} is bound to {ip or 'every interface'}"
            assert host, f"{name}: port {container} gets a random host port"
    assert count, "no published ports: the UI would be unreachable"


# --- named volumes -----------------------------------------------------------------------


def test_data_lives_in_declared_named_volumes(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    assert declared, "no named volumes declared"
    used: set[str] = set()
    for name, service in services.items():
        for source, target in volume_mounts(service):
            assert source, f"{name}: anonymous volume at {target}"
            assert not source.startswith((".", "/", "~")), f"{name}: bind mount {source}, not a named volume"
            assert source in declared, f"{name}: volume {source} is not declared"
            used.add(source)
    for name, data_dir in DATA_DIRS.items():
        targets = {target for _, target in volume_mounts(services[name])}
        assert data_dir in targets, f"{name}: {data_dir} is not on a named volume"
    assert declared == used, f"declared but unused volumes: {sorted(declared - used)}"


# --- secrets -----------------------------------------------------------------------------


def test_default_secrets_are_marked_changeme(compose_text: str) -> None:
    lines = compose_text.splitlines()
    entries = changeme_entries(compose_text)
    assert entries, "found no secret settings at all"
    unmarked = [
        f"line {line + 1}: {key}"
        for line, key, value in entries
        if resolve(value, strict=False) and CHANGEME not in lines[line]
    ]
    assert not unmarked, "default secrets without '# CHANGEME': " + ", ".join(unmarked)


def _marked_secret_names(compose_text: str) -> set[str]:
    names: set[str] = set()
    for _, key, value in changeme_entries(compose_text):
        secret_vars = {n for n in interpolated_names(value) if SECRET_NAME.search(n)}
        names |= secret_vars or {key}
    return names


def test_core_secrets_are_all_present_and_marked(compose_text: str) -> None:
    missing = CORE_SECRETS - _marked_secret_names(compose_text)
    assert not missing, f"secrets not found as marked settings: {sorted(missing)}"


def test_each_secret_is_consistent_across_services(services: dict[str, dict[str, Any]]) -> None:
    web, worker = environment(services[WEB]), environment(services[WORKER])
    for key in ("DATABASE_URL", "SALT", "ENCRYPTION_KEY", "CLICKHOUSE_PASSWORD", "REDIS_AUTH"):
        assert web.get(key), f"{key} is missing or empty"
        assert web[key] == worker.get(key), f"{key} differs between web and worker"
    assert re.fullmatch(r"[0-9a-f]{64}", web["ENCRYPTION_KEY"]), "ENCRYPTION_KEY must be 64 hex characters"

    postgres = environment(services["postgres"])
    db = urlsplit(web["DATABASE_URL"])
    assert (db.hostname, db.port) == ("postgres", 5432)
    assert db.username == postgres.get("POSTGRES_USER", "postgres")
    assert db.password == postgres["POSTGRES_PASSWORD"], "DATABASE_URL password != POSTGRES_PASSWORD"
    assert db.path.lstrip("/") == postgres.get("POSTGRES_DB", db.username)

    clickhouse = environment(services["clickhouse"])
    assert web["CLICKHOUSE_USER"] == clickhouse["CLICKHOUSE_USER"]
    assert web["CLICKHOUSE_PASSWORD"] == clickhouse["CLICKHOUSE_PASSWORD"]

    command = services["redis"].get("command")
    args = [resolve(a) for a in (command if isinstance(command, list) else str(command).split())]
    assert "--requirepass" in args, "redis has no password"
    assert args[args.index("--requirepass") + 1] == web["REDIS_AUTH"], "REDIS_AUTH != redis --requirepass"

    minio = environment(services["minio"])
    s3_keys = [k for k in web if k.startswith("LANGFUSE_S3_") and k.endswith("_SECRET_ACCESS_KEY")]
    assert s3_keys, "no S3 credentials for MinIO"
    for key in s3_keys:
        assert web[key] == minio["MINIO_ROOT_PASSWORD"], f"{key} != MINIO_ROOT_PASSWORD"
        assert web[key.replace("_SECRET_ACCESS_KEY", "_ACCESS_KEY_ID")] == minio["MINIO_ROOT_USER"]


# --- the README documents it -------------------------------------------------------------


def test_readme_documents_login_health_check_and_smoke_test(
    services: dict[str, dict[str, Any]], env_example: dict[str, str], readme: str
) -> None:
    web_env = environment(services[WEB])
    for needle in (
        "docker compose -f server/docker-compose.yml up -d",
        "down -v",
        "curl -fsS http://localhost:3000/api/public/health",
        "uv run test_langfuse",
        env_example["LANGFUSE_BASE_URL"],
        web_env["LANGFUSE_INIT_USER_EMAIL"],
        web_env["LANGFUSE_INIT_USER_PASSWORD"],
        env_example["LANGFUSE_PUBLIC_KEY"],
        env_example["LANGFUSE_SECRET_KEY"],
    ):
        assert needle in readme, f"server/README.md does not mention {needle!r}"


def test_readme_lists_every_secret_to_change(compose_text: str, readme: str) -> None:
    missing = sorted(name for name in _marked_secret_names(compose_text) if name not in readme)
    assert not missing, f"server/README.md does not list {missing}"


def test_readme_documents_langfuse_cloud_regions(readme: str) -> None:
    heading = re.search(r"^#+ .*Langfuse Cloud.*$", readme, re.MULTILINE)
    assert heading, "server/README.md has no Langfuse Cloud section"
    section = readme[heading.end() :]
    for url in ("https://cloud.langfuse.com", "https://us.cloud.langfuse.com"):
        assert url in section, f"the Langfuse Cloud section does not mention {url}"
    assert "401" in section, "the Langfuse Cloud section must say a key from another region gets 401"
