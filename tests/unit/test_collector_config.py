"""Static checks of the optional OpenTelemetry Collector: server/otel-collector.yaml and its service.

No Docker engine and no Collector binary are available to the tests, so they read the files:
the Collector config must receive OTLP on the Langfuse SDK's own path, queue on disk in a
named volume, and forward to Langfuse with the key taken from the environment; the compose
service must be optional (profile "collector"), pinned, bound to 127.0.0.1 and given exactly
the variables the config reads. Compose values are taken as `docker compose` would resolve them
with no .env and an empty environment: "${VAR:-default}" -> "default".
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values
from langfuse._client import span_processor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"
COMPOSE_FILE = SERVER / "docker-compose.yml"
CONFIG_FILE = SERVER / "otel-collector.yaml"
SERVER_README = SERVER / "README.md"
README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"

COLLECTOR = "otel-collector"
INIT = "otel-collector-init"
PROFILE = "collector"
IMAGE = "otel/opentelemetry-collector-contrib:0.159.0"
INIT_IMAGE = "docker.io/busybox:1.37.0"
CONFIG_TARGET = "/etc/otelcol-contrib/config.yaml"
QUEUE_VOLUME = "otel_collector_queue"
QUEUE_DIR = "/var/lib/otelcol/file_storage"
COLLECTOR_USER = "10001:10001"  # the user of the contrib image (its Dockerfile)

SDK_TRACES_PATH = "/api/public/otel/v1/traces"  # the Langfuse SDK's default OTLP path
RECEIVER = "otlp"
EXPORTER = "otlp_http/langfuse"
STORAGE = "file_storage/queue"
PROCESSORS = ["memory_limiter", "batch"]
LOCAL_KEYS = ("pk-lf-local", "sk-lf-local-secret-key")

_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")
_COLLECTOR_REFERENCE = re.compile(r"\$\{(?P<provider>[a-z]+):(?P<name>[^}]*)\}|\$\{(?P<bare>[^}:]*)\}")


def resolve(value: Any) -> str:
    """The value `docker compose` would use with no .env and an empty environment."""

    def substitute(match: re.Match[str]) -> str:
        op, arg = match.group("op"), match.group("arg")
        if op in ("-", ":-"):
            return arg
        if op in ("?", ":?"):
            raise AssertionError(f"{match.group(0)} has no default: compose would refuse to start")
        return ""

    text = str(value).replace("$$", "\0")
    return _INTERPOLATION.sub(substitute, text).replace("\0", "$")


def interpolated(value: Any) -> list[tuple[str, str]]:
    """(variable, default) of each ${VAR:-default} in a compose value."""
    return [(m.group("name"), m.group("arg")) for m in _INTERPOLATION.finditer(str(value))]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): resolve(v) for k, v in env.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) of each short-syntax port entry."""
    result = []
    for entry in service.get("ports") or []:
        assert isinstance(entry, str), f"use the short port syntax: {entry!r}"
        parts = resolve(entry).split("/", 1)[0].split(":")
        assert len(parts) == 3, f"{entry!r}: give host ip, host port and container port"
        result.append((parts[0], parts[1], parts[2]))
    return result


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for entry in service.get("volumes") or []:
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        source, target = resolve(entry).split(":")[:2]
        mounts.append((source, target))
    return mounts


def strings(node: Any) -> list[str]:
    """Every string value (not key, not comment) in a parsed YAML document."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def looks_like_basic_credentials(token: str) -> bool:
    """Whether ``token`` is base64 of "user:password" (a literal Basic auth value)."""
    try:
        decoded = base64.b64decode(token, validate=True).decode("ascii")
    except ValueError:
        return False
    return ":" in decoded and decoded.isprintable()


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    assert isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def collector(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert COLLECTOR in services, f"{COMPOSE_FILE} has no {COLLECTOR} service"
    return services[COLLECTOR]


@pytest.fixture(scope="module")
def config_text() -> str:
    assert CONFIG_FILE.is_file(), f"missing {CONFIG_FILE}"
    return CONFIG_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def config(config_text: str) -> dict[str, Any]:
    data = yaml.safe_load(config_text)
    assert isinstance(data, dict), "the Collector config must be a YAML mapping"
    return data


@pytest.fixture(scope="module")
def exporter(config: dict[str, Any]) -> dict[str, Any]:
    return config["exporters"][EXPORTER]


# --- the compose service: optional, pinned, local ------------------------------------------


def test_collector_services_are_optional_behind_one_profile(services: dict[str, dict[str, Any]]) -> None:
    profiled = {name: service["profiles"] for name, service in services.items() if "profiles" in service}
    # Only these two are profiled: `docker compose up` without the profile starts what it did before.
    assert profiled == {COLLECTOR: [PROFILE], INIT: [PROFILE]}
    for name, service in services.items():
        if name not in profiled:
            depends = service.get("depends_on") or {}
            assert not set(depends) & set(profiled), f"{name} depends on a profiled service"


def test_collector_image_is_the_pinned_contrib_release(services: dict[str, dict[str, Any]]) -> None:
    image = resolve(services[COLLECTOR]["image"])
    assert image == IMAGE
    assert re.fullmatch(r"otel/opentelemetry-collector-contrib:\d+\.\d+\.\d+", image), "pin a release, not latest"
    assert resolve(services[INIT]["image"]) == INIT_IMAGE


def test_collector_publishes_otlp_ports_on_localhost_by_default(
    collector: dict[str, Any], config: dict[str, Any]
) -> None:
    assert published_ports(collector) == [("127.0.0.1", "4318", "4318"), ("127.0.0.1", "4317", "4317")]
    for entry in collector["ports"]:
        assert interpolated(entry) == [("COLLECTOR_BIND_ADDRESS", "127.0.0.1")]
    protocols = config["receivers"][RECEIVER]["protocols"]
    container_ports = {port for _, _, port in published_ports(collector)}
    assert {protocols[p]["endpoint"].rsplit(":", 1)[1] for p in ("http", "grpc")} == container_ports


def test_config_file_is_mounted_where_the_command_reads_it(compose: dict[str, Any], collector: dict[str, Any]) -> None:
    assert collector["command"] == [f"--config={CONFIG_TARGET}"]
    assert collector["configs"] == [{"source": "otel_collector_config", "target": CONFIG_TARGET}]
    assert compose["configs"] == {"otel_collector_config": {"file": "./otel-collector.yaml"}}
    assert (COMPOSE_FILE.parent / compose["configs"]["otel_collector_config"]["file"]).resolve() == CONFIG_FILE


def test_queue_volume_is_a_declared_named_volume_writable_by_the_collector(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], collector: dict[str, Any], config: dict[str, Any]
) -> None:
    directory = config["extensions"][STORAGE]["directory"]
    assert directory == QUEUE_DIR
    assert volume_mounts(collector) == [(QUEUE_VOLUME, directory)]
    assert compose["volumes"][QUEUE_VOLUME] == {"driver": "local"}

    # A new named volume is owned by root; the init service hands it to the Collector's user.
    init = services[INIT]
    assert collector["user"] == COLLECTOR_USER
    assert volume_mounts(init) == [(QUEUE_VOLUME, directory)]
    assert init["command"] == ["chown", "-R", COLLECTOR_USER, directory]
    assert init["user"] == "0:0"
    assert init["restart"] == "no"
    assert collector["depends_on"] == {INIT: {"condition": "service_completed_successfully"}}


def test_collector_gets_exactly_the_variables_its_config_reads(
    collector: dict[str, Any], config: dict[str, Any]
) -> None:
    raw = collector["environment"]
    assert environment(collector) == {
        "LANGFUSE_BASE_URL": "http://langfuse-web:3000",
        "LANGFUSE_AUTH": base64.b64encode(":".join(LOCAL_KEYS).encode()).decode(),
        "GOMEMLIMIT": "400MiB",
    }
    assert [name for name, _ in interpolated(raw["LANGFUSE_BASE_URL"])] == ["COLLECTOR_LANGFUSE_BASE_URL"]
    assert [name for name, _ in interpolated(raw["LANGFUSE_AUTH"])] == ["COLLECTOR_LANGFUSE_AUTH"]

    references = [m.groupdict() for value in strings(config) for m in _COLLECTOR_REFERENCE.finditer(value)]
    assert references, "the config reads no variable"
    assert all(r["provider"] == "env" for r in references), f"use ${{env:NAME}} only: {references}"
    assert {r["name"] for r in references} == {"LANGFUSE_BASE_URL", "LANGFUSE_AUTH"}


def test_default_target_is_this_stacks_langfuse_with_its_local_keys(
    services: dict[str, dict[str, Any]], collector: dict[str, Any]
) -> None:
    web = services["langfuse-web"]
    assert any(container == "3000" for _, _, container in published_ports(web))
    assert environment(collector)["LANGFUSE_BASE_URL"] == "http://langfuse-web:3000"

    web_env = environment(web)
    pair = f"{web_env['LANGFUSE_INIT_PROJECT_PUBLIC_KEY']}:{web_env['LANGFUSE_INIT_PROJECT_SECRET_KEY']}"
    assert base64.b64decode(environment(collector)["LANGFUSE_AUTH"]).decode() == pair
    env_example = dotenv_values(ENV_EXAMPLE)
    assert pair == f"{env_example['LANGFUSE_PUBLIC_KEY']}:{env_example['LANGFUSE_SECRET_KEY']}"
    # A public default, like the other secrets of the file: marked for change.
    [line] = [line for line in COMPOSE_FILE.read_text(encoding="utf-8").splitlines() if "LANGFUSE_AUTH:" in line]
    assert "# CHANGEME" in line


# --- the Collector config: receiver, queue, exporter, pipeline ------------------------------


def test_receiver_takes_otlp_http_on_the_sdk_path_and_grpc(config: dict[str, Any]) -> None:
    assert config["receivers"] == {
        RECEIVER: {
            "protocols": {
                "http": {"endpoint": "0.0.0.0:4318", "traces_url_path": SDK_TRACES_PATH},
                "grpc": {"endpoint": "0.0.0.0:4317"},
            }
        }
    }


def _sdk_exporter(monkeypatch: pytest.MonkeyPatch, base_url: str) -> dict[str, Any]:
    """The arguments (endpoint, headers...) the Langfuse SDK's span processor gives its OTLP exporter.

    The SDK's OTLPSpanExporter is replaced by one that records them and sends nothing.
    """
    built: list[dict[str, Any]] = []

    class RecordingExporter(SpanExporter):
        def __init__(self, **kwargs: Any) -> None:
            built.append(kwargs)

        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    monkeypatch.setattr(span_processor, "OTLPSpanExporter", RecordingExporter)
    processor = span_processor.LangfuseSpanProcessor(
        public_key=LOCAL_KEYS[0], secret_key=LOCAL_KEYS[1], base_url=base_url
    )
    processor.shutdown()
    [arguments] = built
    return arguments


def test_sdk_posts_to_the_receivers_path_so_bots_change_only_the_base_url(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], exporter: dict[str, Any]
) -> None:
    built = _sdk_exporter(monkeypatch, "http://otel-collector:4318")
    path = config["receivers"][RECEIVER]["protocols"]["http"]["traces_url_path"]
    assert built["endpoint"] == "http://otel-collector:4318" + path
    # The SDK's own headers stop at the Collector: it must set the ingestion version itself,
    # and authenticate with the same scheme the SDK uses.
    headers = built["headers"]
    assert headers["x-langfuse-ingestion-version"] == exporter["headers"]["x-langfuse-ingestion-version"]
    assert headers["Authorization"] == "Basic " + base64.b64encode(":".join(LOCAL_KEYS).encode()).decode()


@pytest.mark.parametrize(
    ("export_path", "endpoint"),
    [
        ("v1/traces", "http://otel-collector:4318/v1/traces"),
        ("/v1/traces", "http://otel-collector:4318//v1/traces"),  # the SDK adds a slash of its own
    ],
)
def test_sdk_export_path_variable_is_joined_with_a_slash(
    monkeypatch: pytest.MonkeyPatch, export_path: str, endpoint: str
) -> None:
    """What server/README.md says of LANGFUSE_OTEL_TRACES_EXPORT_PATH (not needed by this setup)."""
    monkeypatch.setenv("LANGFUSE_OTEL_TRACES_EXPORT_PATH", export_path)
    assert _sdk_exporter(monkeypatch, "http://otel-collector:4318")["endpoint"] == endpoint


def test_file_storage_extension_keeps_the_queue_in_the_volume(config: dict[str, Any]) -> None:
    assert config["extensions"] == {
        STORAGE: {
            "directory": QUEUE_DIR,
            "fsync": True,
            "compaction": {"on_start": True, "on_rebound": True, "directory": QUEUE_DIR},
        }
    }


def test_exporter_queues_on_disk_and_retries_without_giving_up(exporter: dict[str, Any]) -> None:
    assert exporter["sending_queue"] == {"enabled": True, "storage": STORAGE, "queue_size": 1000}
    assert exporter["retry_on_failure"] == {
        "enabled": True,
        "initial_interval": "5s",
        "max_interval": "30s",
        "max_elapsed_time": 0,
    }


def test_exporter_sends_otlp_http_to_langfuse_with_the_key_from_the_environment(
    config: dict[str, Any], exporter: dict[str, Any]
) -> None:
    assert list(config["exporters"]) == [EXPORTER]
    assert EXPORTER.split("/")[0] == "otlp_http", "Langfuse takes OTLP over HTTP only, never gRPC"
    # traces_endpoint is used as is; `endpoint` would get /v1/traces appended.
    assert "endpoint" not in exporter
    assert exporter["traces_endpoint"] == "${env:LANGFUSE_BASE_URL}" + SDK_TRACES_PATH
    assert exporter["headers"] == {
        "Authorization": "Basic ${env:LANGFUSE_AUTH}",
        "x-langfuse-ingestion-version": "4",
    }
    assert exporter["compression"] == "gzip"


def test_config_holds_no_key(config_text: str, config: dict[str, Any]) -> None:
    assert not re.search(r"[ps]k-lf-", config_text), "a Langfuse key is written in the config"
    for match in re.finditer(r"Basic\s+(\S+)", config_text):
        assert match.group(1) == "${env:LANGFUSE_AUTH}", f"literal credentials: {match.group(0)}"
    tokens = [token for value in strings(config) for token in value.split()]
    assert tokens, "no values"
    assert not [t for t in tokens if looks_like_basic_credentials(t)], "base64 credentials in the config"


def test_processors_limit_memory_then_batch(config: dict[str, Any]) -> None:
    assert config["processors"] == {
        "memory_limiter": {"check_interval": "1s", "limit_mib": 512, "spike_limit_mib": 128},
        "batch": {"send_batch_size": 512, "send_batch_max_size": 1024},
    }


def test_pipeline_wires_receiver_processors_exporter_and_enables_every_extension(config: dict[str, Any]) -> None:
    service = config["service"]
    assert service["pipelines"] == {
        "traces": {"receivers": [RECEIVER], "processors": PROCESSORS, "exporters": [EXPORTER]}
    }
    assert service["extensions"] == [STORAGE]
    assert set(service["extensions"]) == set(config["extensions"]), "every defined extension must be enabled"
    for kind in ("receivers", "processors", "exporters"):
        used = {name for pipeline in service["pipelines"].values() for name in pipeline[kind]}
        assert used == set(config[kind]), f"{kind}: referenced {sorted(used)}, defined {sorted(config[kind])}"
    storage = {e["sending_queue"]["storage"] for e in config["exporters"].values() if "sending_queue" in e}
    assert storage <= set(service["extensions"])


# --- the documentation -------------------------------------------------------------------


def test_server_readme_documents_the_collector() -> None:
    readme = SERVER_README.read_text(encoding="utf-8")
    heading = "Fleets: an OpenTelemetry Collector in front of Langfuse"
    assert f"\n## {heading}\n" in readme
    section = readme[readme.index(f"## {heading}") :]
    for needle in (
        "docker compose -f server/docker-compose.yml --profile collector up -d",
        "printf '%s:%s' \"$LANGFUSE_PUBLIC_KEY\" \"$LANGFUSE_SECRET_KEY\" | base64 | tr -d '\\n'",
        "COLLECTOR_LANGFUSE_BASE_URL",
        "COLLECTOR_LANGFUSE_AUTH",
        "COLLECTOR_BIND_ADDRESS",
        "LANGFUSE_BASE_URL=http://collector-host:4318",
        SDK_TRACES_PATH,
        "traces_url_path",
        "LANGFUSE_OTEL_TRACES_EXPORT_PATH",
        "uv run test_langfuse",
        "gRPC",
        IMAGE,
    ):
        assert needle in section, f"server/README.md's Fleets section does not mention {needle!r}"


def test_project_readme_points_to_it_before_troubleshooting() -> None:
    readme = README.read_text(encoding="utf-8")
    heading = "## Fleets: one OpenTelemetry Collector in front of Langfuse"
    assert heading in readme
    assert readme.index(heading) < readme.index("## Troubleshooting")
    anchor = github_anchor("Fleets: an OpenTelemetry Collector in front of Langfuse")
    assert f"server/README.md#{anchor}" in readme
