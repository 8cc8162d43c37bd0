"""`test_langfuse` run as a real subprocess against a local Langfuse stand-in on 127.0.0.1.

Every run but those that test a missing secret key has one in its environment (or its .env),
and no run may print any of the secrets.
"""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.langfuse_server import OTLP_PATH, PROJECTS_PATH, LocalLangfuse, StartLocalLangfuse
from tests.support.processes import CHECK, run_command

PUBLIC_KEY = "pk-lf-check-public"
SECRET_KEY = "sk-lf-check-secret-0123456789"
WRONG_SECRET = "sk-lf-wrong-secret-9876543210"
SECRETS = (SECRET_KEY, WRONG_SECRET)
SUBPROCESS_TIMEOUT_S = 60


@pytest.fixture
def server(local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return local_langfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY, project_name="voice-tests")


def keys(url: str, secret: str = SECRET_KEY, public: str = PUBLIC_KEY) -> dict[str, str]:
    return {"LANGFUSE_PUBLIC_KEY": public, "LANGFUSE_SECRET_KEY": secret, "LANGFUSE_BASE_URL": url}


def run(cwd: Path, env: dict[str, str], *args: str, command: Sequence[str] = CHECK) -> subprocess.CompletedProcess[str]:
    """Run the check in ``cwd`` with a clean environment plus ``env`` (no .env unless the test wrote one).

    No secret may show in its output.
    """
    return run_command([*command, *args], cwd=cwd, env=env, secrets=SECRETS, timeout_s=SUBPROCESS_TIMEOUT_S)


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def basic(public: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{public}:{secret}".encode()).decode()


def test_ok_names_project_and_host_and_the_server_receives_the_test_span(server: LocalLangfuse, tmp_path: Path) -> None:
    done = run(tmp_path, keys(server.url))

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK: the keys belong to project 'voice-tests'")
    assert f"host:    {server.url} (from LANGFUSE_BASE_URL)" in done.stdout
    assert f"keys:    {PUBLIC_KEY} / secret set ({len(SECRET_KEY)} characters, not shown)" in done.stdout
    assert "ENABLE_TRACING is not true" in done.stdout
    assert done.stderr == ""
    match = re.search(r"trace:\s+([0-9a-f]{32}) ", done.stdout)
    assert match, done.stdout
    trace_id = match.group(1)
    assert f"{server.url}/project/project-local/traces/{trace_id}" in done.stdout

    [span] = server.spans_of_trace(trace_id)
    assert span.name == "test_langfuse"
    assert span.scope == "langfuse-sdk"
    assert span.attributes["langfuse.trace.name"] == "test_langfuse"
    [export] = [r for r in server.requests if r.path == OTLP_PATH]
    assert export.method == "POST"
    assert export.headers["authorization"] == basic(PUBLIC_KEY, SECRET_KEY)
    [projects] = [r for r in server.requests if r.path == PROJECTS_PATH]
    assert projects.headers["authorization"] == basic(PUBLIC_KEY, SECRET_KEY)


def test_the_release_comes_from_the_deploy_platform_and_is_on_the_test_trace(
    server: LocalLangfuse, tmp_path: Path
) -> None:
    done = run(tmp_path, {**keys(server.url), "RENDER_GIT_COMMIT": "9f8e7d6", "LANGFUSE_RELEASE": ""})

    assert done.returncode == 0, done.stdout + done.stderr
    assert "release: 9f8e7d6 (from RENDER_GIT_COMMIT)" in done.stdout
    [span] = server.spans
    assert span.attributes["langfuse.release"] == "9f8e7d6"


def test_ok_with_tracing_enabled_has_no_enable_tracing_note(server: LocalLangfuse, tmp_path: Path) -> None:
    done = run(tmp_path, {**keys(server.url), "ENABLE_TRACING": "true"})

    assert done.returncode == 0, done.stdout + done.stderr
    assert "ENABLE_TRACING" not in done.stdout


def test_installed_console_script_runs_the_same_check(server: LocalLangfuse, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "test_langfuse"
    if not script.exists():
        pytest.skip("the project is not installed in this environment")

    done = run(tmp_path, keys(server.url), command=[str(script)])

    assert done.returncode == 0, done.stdout + done.stderr
    assert "voice-tests" in done.stdout


def test_wrong_secret_exits_3_and_points_at_the_key_pair_and_region(server: LocalLangfuse, tmp_path: Path) -> None:
    done = run(tmp_path, keys(server.url, secret=WRONG_SECRET))

    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.startswith(
        f"WRONG KEYS: Langfuse at {server.url} (from LANGFUSE_BASE_URL) rejected the key pair"
    )
    assert 'HTTP 401 "Invalid credentials.' in done.stdout
    assert "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are one pair of the same project" in done.stdout
    assert "region" in done.stdout
    assert "https://us.cloud.langfuse.com" in done.stdout
    assert "Basic base64(pk:sk)" in done.stdout
    assert "'Bearer'" in done.stdout
    assert not [r for r in server.requests if r.path == OTLP_PATH], "no trace is sent with wrong keys"
    assert "Traceback" not in done.stderr


def test_unknown_public_key_exits_3(server: LocalLangfuse, tmp_path: Path) -> None:
    done = run(tmp_path, keys(server.url, public="pk-lf-someone-else"))

    assert done.returncode == 3, done.stdout + done.stderr
    assert 'HTTP 401 "Invalid public key.' in done.stdout
    assert "pk-lf-someone-else" in done.stdout


def test_closed_port_exits_4_naming_url_and_variable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"

    done = run(tmp_path, keys(url))

    assert done.returncode == 4, done.stdout + done.stderr
    assert done.stdout.startswith(f"UNREACHABLE: cannot reach Langfuse at {url} (from LANGFUSE_BASE_URL)")
    assert "connection refused" in done.stdout
    assert "docker compose -f server/docker-compose.yml up -d" in done.stdout  # a local host: point at server/


def test_slow_server_times_out_with_exit_4(local_langfuse: StartLocalLangfuse, tmp_path: Path) -> None:
    slow = local_langfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY, hang_s=8)

    done = run(tmp_path, {**keys(slow.url), "LANGFUSE_TIMEOUT": "1"})

    assert done.returncode == 4, done.stdout + done.stderr
    assert "no answer within 1 s (LANGFUSE_TIMEOUT=1)" in done.stdout


def test_server_that_is_not_langfuse_exits_4(local_langfuse: StartLocalLangfuse, tmp_path: Path) -> None:
    other = local_langfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY, status_override=404)

    done = run(tmp_path, keys(other.url))

    assert done.returncode == 4, done.stdout + done.stderr
    assert "NOT A LANGFUSE SERVER" in done.stdout
    assert "does not look like a Langfuse server" in done.stdout


def test_api_path_in_base_url_is_a_configuration_error(server: LocalLangfuse, tmp_path: Path) -> None:
    done = run(tmp_path, keys(f"{server.url}/api/public/otel"))

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("INVALID CONFIGURATION: LANGFUSE_BASE_URL=")
    assert "contains an API path" in done.stdout
    assert not server.requests


def test_swapped_keys_are_a_configuration_error(server: LocalLangfuse, tmp_path: Path) -> None:
    done = run(tmp_path, keys(server.url, public=SECRET_KEY, secret=PUBLIC_KEY))

    assert done.returncode == 2, done.stdout + done.stderr
    assert "swapped" in done.stdout


@pytest.mark.parametrize(
    ("variables", "missing"),
    [
        ({}, "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are not set"),
        ({"LANGFUSE_PUBLIC_KEY": PUBLIC_KEY}, "LANGFUSE_SECRET_KEY is not set"),
        ({"LANGFUSE_SECRET_KEY": SECRET_KEY, "ENABLE_TRACING": "true"}, "LANGFUSE_PUBLIC_KEY is not set"),
    ],
)
def test_missing_variables_exit_2_naming_them(tmp_path: Path, variables: dict[str, str], missing: str) -> None:
    done = run(tmp_path, variables)

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith(f"MISSING VARIABLES: {missing}.")
    assert "Settings > API Keys" in done.stdout
    assert f"no .env file in {tmp_path}" in done.stdout


def test_langfuse_host_is_accepted_as_the_old_name(server: LocalLangfuse, tmp_path: Path) -> None:
    env = {"LANGFUSE_PUBLIC_KEY": PUBLIC_KEY, "LANGFUSE_SECRET_KEY": SECRET_KEY, "LANGFUSE_HOST": server.url}

    done = run(tmp_path, env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"host:    {server.url} (from LANGFUSE_HOST)" in done.stdout
    assert [s.name for s in server.spans] == ["test_langfuse"]


def test_dotenv_in_the_current_directory_is_loaded(server: LocalLangfuse, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("\n".join(f"{k}={v}" for k, v in keys(server.url).items()) + "\n")

    done = run(tmp_path, {})

    assert done.returncode == 0, done.stdout + done.stderr
    assert "voice-tests" in done.stdout


def test_environment_wins_over_dotenv(server: LocalLangfuse, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("\n".join(f"{k}={v}" for k, v in keys(server.url, secret=WRONG_SECRET).items()))

    done = run(tmp_path, {"LANGFUSE_SECRET_KEY": SECRET_KEY})

    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("otlp_status", [403, 500])
def test_auth_ok_but_otlp_rejected_exits_5(
    local_langfuse: StartLocalLangfuse, tmp_path: Path, otlp_status: int
) -> None:
    picky = local_langfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY, otlp_status=otlp_status)

    done = run(tmp_path, {**keys(picky.url), "LANGFUSE_TIMEOUT": "2"})

    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stdout.startswith("TRACE NOT DELIVERED: the keys work (project 'voice-tests')")
    assert f"POST {picky.url}/api/public/otel/v1/traces failed" in done.stdout
    assert f"code: {otlp_status}" in done.stdout
    assert ("Basic base64(pk:sk)" in done.stdout) is (otlp_status == 403)
    assert [r.path for r in picky.requests if r.method == "POST"] == [OTLP_PATH]
    assert not picky.spans


def test_sdk_tracing_disabled_means_no_trace_and_exits_5(server: LocalLangfuse, tmp_path: Path) -> None:
    done = run(tmp_path, {**keys(server.url), "LANGFUSE_TRACING_ENABLED": "false"})

    assert done.returncode == 5, done.stdout + done.stderr
    assert "The SDK flushed without exporting the test span" in done.stdout
    assert "set here: LANGFUSE_TRACING_ENABLED=false" in done.stdout
    assert not [r for r in server.requests if r.path == OTLP_PATH]


def test_verbose_shows_the_traceback_without_the_secret(server: LocalLangfuse, tmp_path: Path) -> None:
    done = run(tmp_path, keys(server.url, secret=WRONG_SECRET), "--verbose")

    assert done.returncode == 3
    assert "Traceback" in done.stderr
    assert "UnauthorizedError" in done.stderr
    assert f"config: environment (no .env in {tmp_path})" in done.stdout


def test_help_documents_the_exit_codes(tmp_path: Path) -> None:
    done = run(tmp_path, {"LANGFUSE_SECRET_KEY": SECRET_KEY}, "--help")

    assert done.returncode == 0
    for line in ("0  OK", "2  missing or invalid configuration", "3  wrong keys", "4  host unreachable", "5  keys OK"):
        assert line in done.stdout
