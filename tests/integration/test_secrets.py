"""The Langfuse secret key never shows: at any log level, with the SDK's debug logging, in any fault mode.

Each fault mode the local stand-in supports (healthy, hanging past ``LANGFUSE_TIMEOUT``, HTTP 503 on
every request, 401 for the key pair, OTLP 429 and 503, connection refused) runs ``bot --quick`` and
``test_langfuse --verbose`` once, at the most verbose level: ``LOG_LEVEL=TRACE`` (Pipecat's DEBUG and
TRACE lines included) with ``LANGFUSE_DEBUG=true`` (the SDK's debug logging, which prints span and
exporter details). One run per mode covers the lower levels: loguru and the standard-library
logging filter records by level only, so what INFO, DEBUG or WARNING print is a subset of what
TRACE prints (and ``test_langfuse`` without ``--verbose`` prints a subset of what it prints with
it: its verdict, no SDK logs, no traceback). Stdout, stderr and the spool folder are searched for
the secret key raw, URL-encoded, and base64-encoded as in the Basic auth header (``pk:sk``, ``:sk``
and the secret at any byte alignment).

The runs are real time (about 14 s for the bot), so they run a few at a time, ``nice``d, with
``LANGFUSE_TIMEOUT=1`` and ``LANGFUSE_FLUSH_TIMEOUT=2``; each test then reads its own run.

The library logs tracing failures' tracebacks as plain text (``FailureLog``) and the bot's log
sink has ``diagnose=False``, so loguru's diagnose mode cannot print a local variable that holds the
key; the last tests check both in-process.
"""

from __future__ import annotations

import base64
import io
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from loguru import logger

from pipecat_langfuse._failures import FailureLog
from tests.support.langfuse_server import LocalLangfuse, StartLocalLangfuse
from tests.support.processes import BOT, CHECK, PROJECT_ROOT, assert_no_secret, run_command

PUBLIC_KEY = "pk-lf-secrets-public"
# Characters that URL-encoding and base64 both change, so every encoded form differs from the raw key.
SECRET_KEY = "sk-lf-S3cret+/=&%key-0123456789abcdef"
SUBPROCESS_TIMEOUT_S = 90
PARALLEL_RUNS = 7  # real-time runs that mostly sleep: several at a time even on 2 cores

FAULT_MODES: dict[str, dict[str, Any] | None] = {
    "healthy": {},
    "hanging": {"hang_s": 3.0},  # longer than LANGFUSE_TIMEOUT=1
    "http-503": {"status_override": 503},
    "wrong-keys-401": {"secret_key": "sk-lf-the-project-has-another-key"},
    "otlp-429": {"otlp_status": 429},
    "otlp-503": {"otlp_status": 503},
    "refused": None,  # nothing listens on the port
}
COMMANDS = {"bot": (*BOT, "--quick"), "test_langfuse": (*CHECK, "--verbose")}


def secret_forms(public_key: str, secret: str) -> list[str]:
    """The secret as it could leak: raw, URL-encoded, and in base64 (Basic auth) at any alignment."""
    forms = [secret, quote(secret, safe=""), quote_plus(secret)]
    forms += [
        base64.b64encode(f"{public_key}:{secret}".encode()).decode(),
        base64.b64encode(f":{secret}".encode()).decode(),
    ]
    for offset in range(3):
        # Preceded by ``offset`` bytes of anything: the first 4 characters depend on those bytes, and
        # the last 4 on what follows, so the characters in between are in any base64 text of it.
        encoded = base64.b64encode(b"\0" * offset + secret.encode()).decode().rstrip("=")
        forms.append(encoded[4 if offset else 0 : -4])
    return forms


SECRETS = secret_forms(PUBLIC_KEY, SECRET_KEY)
BASIC_AUTH = "Basic " + base64.b64encode(f"{PUBLIC_KEY}:{SECRET_KEY}".encode()).decode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def environment(url: str, spool: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": str(PROJECT_ROOT),
        "ENABLE_TRACING": "true",
        "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY,
        "LANGFUSE_SECRET_KEY": SECRET_KEY,
        "LANGFUSE_BASE_URL": url,
        "LANGFUSE_TIMEOUT": "1",
        "LANGFUSE_FLUSH_TIMEOUT": "2",
        "LANGFUSE_SPOOL_DIR": str(spool),
        "LANGFUSE_DEBUG": "true",
        "LOG_LEVEL": "TRACE",
    }


class Run:
    """One subprocess run: its server (None when refused), spool folder and result (or the assertion it raised)."""

    def __init__(self, server: LocalLangfuse | None, spool: Path, future: Future[subprocess.CompletedProcess[str]]):
        self.server, self.spool, self.future = server, spool, future

    def result(self) -> subprocess.CompletedProcess[str]:
        """The finished process; raises the AssertionError of ``run_command`` if a secret showed."""
        return self.future.result()


@pytest.fixture(scope="module")
def runs(
    module_local_langfuse: StartLocalLangfuse, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[tuple[str, str], Run]]:
    started: dict[tuple[str, str], Run] = {}
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        for command_name, command in COMMANDS.items():
            for mode, server_kwargs in FAULT_MODES.items():
                server = None
                if server_kwargs is not None:
                    server = module_local_langfuse(public_key=PUBLIC_KEY, **{"secret_key": SECRET_KEY, **server_kwargs})
                url = server.url if server is not None else f"http://127.0.0.1:{closed_port()}"
                cwd = tmp_path_factory.mktemp(f"{command_name}-{mode}")
                spool = cwd / "spool"
                future = pool.submit(
                    run_command,
                    ["nice", "-n", "15", *command],
                    cwd=cwd,
                    env=environment(url, spool),
                    secrets=SECRETS,
                    timeout_s=SUBPROCESS_TIMEOUT_S,
                )
                started[command_name, mode] = Run(server, spool, future)
        yield started


@pytest.mark.parametrize("mode", list(FAULT_MODES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_output_and_no_spool_file_contains_the_secret_key(
    runs: dict[tuple[str, str], Run], command: str, mode: str
) -> None:
    run = runs[command, mode]
    done = run.result()  # run_command asserted that no form of the secret is in stdout or stderr

    # The run was as verbose as it gets, so the check searched the most output there is.
    if command == "bot":
        assert done.returncode == 0, done.stderr[-3000:]
        assert "| TRACE    |" in done.stderr or "| DEBUG    | pipecat" in done.stderr
        assert "| DEBUG    | langfuse" in done.stderr  # LANGFUSE_DEBUG reached the log
    else:
        assert done.returncode in (0, 3, 4, 5), done.stdout + done.stderr
        assert "DEBUG langfuse:" in done.stderr  # the SDK's debug logging, shown by --verbose
    assert PUBLIC_KEY in done.stdout + done.stderr  # the key pair was in play

    # Whatever was spooled for later is spans, not credentials.
    for path in run.spool.rglob("*") if run.spool.exists() else ():
        if path.is_file():
            data = path.read_bytes()
            for form in SECRETS:
                assert form.encode() not in data, path

    # The server saw the key pair exactly in the form the checks search for.
    if run.server is not None and mode != "hanging":
        authorizations = {r.headers.get("authorization") for r in run.server.requests}
        assert BASIC_AUTH in authorizations, authorizations


def test_every_encoded_form_of_the_secret_is_searched() -> None:
    header = f"Authorization: {BASIC_AUTH}"
    for prefix in ("", "x", "xy"):  # the secret at each base64 alignment, after any public key
        leaked = base64.b64encode(f"{prefix}pk-other:{SECRET_KEY}!".encode()).decode()
        with pytest.raises(AssertionError):
            assert_no_secret(f"log line {leaked} end", secrets=SECRETS)
    for leaked in (header, f"sk={quote_plus(SECRET_KEY)}", f"url={quote(SECRET_KEY, safe='')}"):
        with pytest.raises(AssertionError):
            assert_no_secret(leaked, secrets=SECRETS)
    assert_no_secret(f"keys: {PUBLIC_KEY} / secret set ({len(SECRET_KEY)} characters, not shown)", secrets=SECRETS)


# -- Tracebacks ------------------------------------------------------------------------------


def fail_with_the_secret_in_a_local_variable() -> None:
    secret_key = SECRET_KEY  # what loguru's diagnose mode would print next to the failing line
    raise ConnectionError("export failed", len(secret_key))  # not an f-string: diagnose annotates names


def caught_failure() -> BaseException:
    try:
        fail_with_the_secret_in_a_local_variable()
    except ConnectionError as exc:
        return exc
    raise AssertionError("no failure")


def logged_with_diagnose(log: Any) -> str:
    """What a loguru sink in diagnose mode (loguru's default) prints while ``log()`` runs."""
    lines: list[str] = []
    sink = logger.add(lines.append, level="TRACE", format="{message}", diagnose=True, backtrace=True)
    try:
        log()
    finally:
        logger.remove(sink)
    return "".join(lines)


def test_a_failure_traceback_does_not_show_local_variables_even_in_diagnose_mode() -> None:
    exc = caught_failure()

    output = logged_with_diagnose(lambda: FailureLog().report("exporting spans", exc))

    assert "fail_with_the_secret_in_a_local_variable" in output  # the traceback is there, at DEBUG
    assert_no_secret(output, secrets=SECRETS)
    # The same exception logged the usual loguru way would show the key: the check above is real.
    leaked = logged_with_diagnose(lambda: logger.opt(exception=exc).error("exporting spans failed"))
    assert SECRET_KEY in leaked


def test_the_bot_log_sink_shows_tracebacks_without_variable_values() -> None:
    from app.bot import _setup_logging

    stderr = io.StringIO()
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", stderr)  # the bot's sink writes to sys.stderr as it is when added
        try:
            _setup_logging("TRACE")
            logger.opt(exception=caught_failure()).error("exporting spans failed")
        finally:
            logger.remove()
            logging.root.handlers[:] = root_handlers
            logging.root.setLevel(root_level)
    logger.add(sys.stderr)  # loguru's default sink again, for the tests that follow

    assert "fail_with_the_secret_in_a_local_variable" in stderr.getvalue()
    assert_no_secret(stderr.getvalue(), secrets=SECRETS)
