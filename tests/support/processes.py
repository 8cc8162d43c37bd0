"""Run the project's commands as subprocesses, and check that no secret ever shows in their output."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.support.env import clean_environment

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BOT = (sys.executable, "-m", "app.bot")
CHECK = (sys.executable, "-m", "app.check")
SECRET_VARIABLE = "LANGFUSE_SECRET_KEY"


def run_command(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    secrets: Iterable[str] = (),
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``cwd`` with a clean environment (``tests.support.env``) plus ``env``; no secret may show.

    The secrets checked are ``secrets`` and the ``LANGFUSE_SECRET_KEY`` of ``env``; there must be one.
    """
    done = subprocess.run(
        list(command),
        cwd=cwd,
        env=clean_environment(**env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert_no_secret(done.stdout, done.stderr, secrets=[*secrets, *_secret_of(env)])
    return done


def assert_no_secret(*outputs: str, secrets: Iterable[str]) -> None:
    """Assert that no secret is in any of ``outputs`` (a test that checks no secret checks nothing)."""
    checked = [s for s in secrets if s]
    assert checked, "no secret to look for: give the command a secret key"
    for secret in checked:
        for output in outputs:
            at = output.find(secret)
            # Show where, never the secret itself (a failing test's message ends up in CI logs).
            around = output[max(0, at - 200) : at + len(secret) + 200].replace(secret, "<SECRET>")
            assert at < 0, f"secret key printed at offset {at}:\n…{around}…"


def _secret_of(env: Mapping[str, str]) -> list[str]:
    secret = env.get(SECRET_VARIABLE)
    return [secret] if secret else []
