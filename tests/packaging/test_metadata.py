"""The supported ranges are declared once in substance: pyproject, package.py and CI agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import Specifier
from packaging.version import Version

from pipecat_langfuse import package

REPO = Path(__file__).resolve().parents[2]


def declared() -> dict[str, Requirement]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {r.name: r for r in map(Requirement, pyproject["project"]["dependencies"])}


def lower_bound(requirement: Requirement) -> Version:
    (bound,) = [s for s in requirement.specifier if s.operator == ">="]
    return Version(bound.version)


def test_package_names_the_ranges_of_pyproject() -> None:
    dependencies = declared()
    assert sorted(dependencies) == ["langfuse", "loguru", "pipecat-ai"]
    (pipecat,) = map(Requirement, package._instruments)
    (langfuse,) = map(Requirement, package._supports_langfuse)
    assert (pipecat.name, pipecat.specifier) == ("pipecat-ai", dependencies["pipecat-ai"].specifier)
    assert (langfuse.name, langfuse.specifier) == ("langfuse", dependencies["langfuse"].specifier)
    assert dependencies["pipecat-ai"].extras == {"tracing"}
    assert set(dependencies["pipecat-ai"].specifier) == {Specifier(">=1.12"), Specifier("<2")}
    assert set(dependencies["langfuse"].specifier) == {Specifier(">=5"), Specifier("<6")}


def test_ci_tests_the_lowest_declared_pipecat() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert re.findall(r"^LOWEST_PIPECAT=(\S+)$", ci, flags=re.MULTILINE) == ["1.12.0"]
    assert Version("1.12.0") == lower_bound(declared()["pipecat-ai"])
    assert ci.count('--with "pipecat-ai[tracing]==$LOWEST_PIPECAT"') == 1
