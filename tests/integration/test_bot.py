"""The real `bot` entrypoint, run as a subprocess on a fresh working directory with no .env.

Every run has a Langfuse secret key in its environment, and none may print it.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from app.offline import QUICK_SCRIPT
from pipecat_langfuse._scores import SCORES_PATH
from tests.support.env import clean_environment
from tests.support.langfuse_rules import MODEL, SESSION_ID, TRACE_TAGS, counts_in_model_usage, json_attribute
from tests.support.langfuse_server import OTLP_PATH, LocalLangfuse, StartLocalLangfuse
from tests.support.processes import BOT, PROJECT_ROOT, assert_no_secret, run_command

PUBLIC_KEY = "pk-lf-bot-public"
SECRET_KEY = "sk-lf-bot-secret-0123456789"


@pytest.fixture
def server(local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return local_langfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY)


def run_bot(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``bot`` from this checkout with ``env``, over a secret key that is always set; no secret shows."""
    env = {"PYTHONPATH": str(PROJECT_ROOT), "LANGFUSE_SECRET_KEY": SECRET_KEY, **env}
    return run_command([*BOT, *args], cwd=cwd, env=env, secrets=[SECRET_KEY])


def total_line(stdout: str) -> list[str]:
    return next(line.split() for line in stdout.splitlines() if line.startswith("Total"))


def langfuse_env(server: LocalLangfuse, enabled: str) -> dict[str, str]:
    return {
        "ENABLE_TRACING": enabled,
        "LANGFUSE_PUBLIC_KEY": server.public_key,
        "LANGFUSE_SECRET_KEY": server.secret_key,
        "LANGFUSE_BASE_URL": server.url,
    }


def test_tracing_disabled_sends_nothing_and_still_prints_the_summary(server: LocalLangfuse, tmp_path: Path) -> None:
    result = run_bot(tmp_path, {**langfuse_env(server, "false"), "OPENAI_API_KEY": "sk-not-used"}, "--quick")
    assert result.returncode == 0, result.stderr
    assert server.requests == []
    assert "DEEPGRAM_API_KEY, CARTESIA_API_KEY not set: running the scripted offline conversation." in result.stderr
    assert "Langfuse tracing is off" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Conversation ")
    assert "Langfuse trace" not in lines[0]
    for utterance in QUICK_SCRIPT.utterances:
        assert utterance.text in result.stdout
    assert any(line.startswith("simulated/gpt-4.1-mini") and "llm" in line for line in lines)
    assert total_line(result.stdout) == ["Total", "0.003534"]
    assert lines[-1] == "Offline run: simulated services, priced as the live models they stand in for."


def test_tracing_disabled_builds_no_client_and_installs_no_provider(tmp_path: Path) -> None:
    script = (
        "import asyncio\n"
        "from opentelemetry import trace\n"
        "from app.bot import _config, run_offline\n"
        "asyncio.run(run_offline(_config(), quick=True))\n"
        "from langfuse._client.resource_manager import LangfuseResourceManager\n"
        "print(type(trace.get_tracer_provider()).__name__, len(LangfuseResourceManager._instances))\n"
    )
    env = {
        "PYTHONPATH": str(PROJECT_ROOT),
        "ENABLE_TRACING": "no",
        "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY,
        "LANGFUSE_SECRET_KEY": SECRET_KEY,
    }
    result = run_command([sys.executable, "-c", script], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["ProxyTracerProvider", "0"]


def test_offline_run_is_traced_as_simulated(server: LocalLangfuse, tmp_path: Path) -> None:
    env = {**langfuse_env(server, "TRUE"), "CONVERSATION_ID": "conv-bot-1", "LANGFUSE_TAGS": "demo"}
    result = run_bot(tmp_path, env, "--offline", "--quick")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("Conversation conv-bot-1  (Langfuse trace ")
    spans = server.spans
    assert {s.attributes[SESSION_ID] for s in spans} == {"conv-bot-1"}
    assert {tuple(s.attributes[TRACE_TAGS]) for s in spans} == {("demo", "simulated")}
    assert len({s.trace_id for s in spans}) == 1
    counted = [s for s in spans if counts_in_model_usage(s)]
    assert sorted({s.attributes[MODEL] for s in counted}) == [
        "simulated/gpt-4.1-mini",
        "simulated/nova-3-general",
        "simulated/sonic-3.6",
    ]
    (root,) = [s for s in spans if s.name == "voice-conversation"]
    assert json_attribute(root, "langfuse.observation.metadata.mode") == "offline"
    assert json_attribute(root, "langfuse.observation.metadata.total_cost_usd") == 0.003534


def test_unreachable_langfuse_does_not_break_the_call(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "ENABLE_TRACING": "1",
        "LANGFUSE_PUBLIC_KEY": "pk-lf-down",
        "LANGFUSE_SECRET_KEY": "sk-lf-down-secret",
        "LANGFUSE_BASE_URL": f"http://127.0.0.1:{port}",
        "LANGFUSE_TIMEOUT": "1",
        "LANGFUSE_FLUSH_TIMEOUT": "3",
    }
    result = run_bot(tmp_path, env, "--quick")
    assert result.returncode == 0, result.stderr
    assert total_line(result.stdout) == ["Total", "0.003534"]
    assert result.stderr.count("Sending traces to Langfuse failed") == 1
    assert "uv run test_langfuse" in result.stderr


def test_a_hanging_langfuse_does_not_hold_the_call(local_langfuse: StartLocalLangfuse, tmp_path: Path) -> None:
    server = local_langfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY, hang_s=60)  # never answers
    env = {**langfuse_env(server, "true"), "LANGFUSE_FLUSH_TIMEOUT": "2"}
    result = run_bot(tmp_path, env, "--quick")
    assert result.returncode == 0, result.stderr
    assert total_line(result.stdout) == ["Total", "0.003534"]
    # Each warning explains the hang once, with its setting: a batch that timed out during the call
    # (and went to the spool), and/or the final flush that gave up waiting for one still in flight,
    # depending on when the SDK's first export fell in the 11 s call.
    explanations = (
        "did not answer within 5 s (LANGFUSE_TIMEOUT). The call goes on; its spans are kept in the spool",
        "within 2 s (LANGFUSE_FLUSH_TIMEOUT); they may arrive late or be lost",
    )
    warnings = [line for line in result.stderr.splitlines() if "| WARNING  |" in line]
    explained = [next(i for i, text in enumerate(explanations) if text in line) for line in warnings]
    assert 1 <= len(explained) == len(set(explained)), warnings
    # 1 conversation, 3 turns (Pipecat's), 9 generations: one tree; none sent, none dropped.
    counts = re.search(r"Langfuse: 0 spans sent, (\d+) spooled, 0 dropped(?:, (\d+) pending)?", result.stdout)
    assert counts is not None, result.stdout
    assert int(counts[1]) + int(counts[2] or 0) == 13
    progress = [line.split(" - ", 1)[1] for line in result.stderr.splitlines() if " ended: voice-to-voice " in line]
    assert [p.split(":")[0] for p in progress] == ["Turn 1 ended", "Turn 2 ended", "Turn 3 ended"]
    assert [p.endswith(", interrupted.") for p in progress] == [True, False, False]


def test_rejected_keys_are_reported_once(server: LocalLangfuse, tmp_path: Path) -> None:
    env = {**langfuse_env(server, "yes"), "LANGFUSE_SECRET_KEY": "sk-lf-wrong-secret-9876543210"}
    result = run_bot(tmp_path, env, "--quick")
    assert result.returncode == 0, result.stderr
    # One try each for spans and scores, then both pause: 5 minutes after a 401.
    assert Counter(r.path for r in server.requests) == {OTLP_PATH: 1, SCORES_PATH: 1}
    assert server.spans == []
    assert server.scores == []
    assert result.stderr.count("Sending traces to Langfuse failed") == 1
    assert len([line for line in result.stderr.splitlines() if "| WARNING  |" in line]) == 1
    assert "401" in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ENABLE_TRACING": "maybe"},
            "ENABLE_TRACING='maybe' is not a boolean. Use one of: true, false, 1, 0, yes, no.",
        ),
        (
            {"ENABLE_TRACING": "true"},  # the secret key is set (see run_bot), the public key is not
            "ENABLE_TRACING is true but LANGFUSE_PUBLIC_KEY is not set.",
        ),
        ({"PRICING_FILE": "missing.toml"}, "Cannot read the pricing file missing.toml"),
        (
            {"LLM_PROVIDER": "gemini"},
            "LLM_PROVIDER='gemini' is not supported. Set LLM_PROVIDER to one of: openai, anthropic.",
        ),
    ],
)
def test_configuration_errors_stop_before_the_call(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = run_bot(tmp_path, env, "--quick")
    assert result.returncode == 2
    assert f"Configuration error: {message}" in result.stderr
    assert result.stdout == ""


def test_dotenv_in_the_working_directory_is_loaded(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ENABLE_TRACING=maybe-from-dotenv\n")
    result = run_bot(tmp_path, {}, "--quick")
    assert result.returncode == 2
    assert "ENABLE_TRACING='maybe-from-dotenv' is not a boolean" in result.stderr


def test_with_all_provider_keys_it_starts_the_live_runner(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = clean_environment(
        PYTHONPATH=str(PROJECT_ROOT),
        DEEPGRAM_API_KEY="dg-test",
        OPENAI_API_KEY="sk-test",
        CARTESIA_API_KEY="ca-test",
        LANGFUSE_PUBLIC_KEY=PUBLIC_KEY,
        LANGFUSE_SECRET_KEY=SECRET_KEY,
    )
    process = subprocess.Popen(
        [*BOT, "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status = wait_for_http(f"http://127.0.0.1:{port}/client/", process)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert status == 200, output
    assert "running the scripted offline conversation" not in output
    assert_no_secret(output, secrets=[SECRET_KEY])


def wait_for_http(url: str, process: subprocess.Popen[str], attempts: int = 600) -> int:
    """GET ``url`` until it answers (or the process exits); return the HTTP status."""
    import time
    import urllib.error
    import urllib.request

    for _ in range(attempts):
        if process.poll() is not None:
            return -1
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.status)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    return -2
