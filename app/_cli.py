"""What the command-line tools of the example bot share: ``.env`` loading, exit-code help, redaction."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from pathlib import Path

from dotenv import load_dotenv

DOTENV = ".env"
"""The file each tool reads from the current directory (the environment wins over it)."""


def load_local_dotenv() -> bool:
    """Load ``./.env`` without overriding the environment; whether there was one to load."""
    dotenv = Path.cwd() / DOTENV
    return dotenv.is_file() and load_dotenv(dotenv, override=False)


def exit_codes(codes: Iterable[tuple[IntEnum, str]]) -> str:
    """The ``exit codes:`` lines of a tool's ``--help`` epilog."""
    return "exit codes:\n" + "\n".join(f"  {code.value}  {text}" for code, text in codes)


def redact(text: str, secret: str) -> str:
    """``text`` with the secret key replaced, for anything a tool prints."""
    return text.replace(secret, "<secret key>") if secret else text
