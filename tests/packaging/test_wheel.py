"""The sdist and wheel hold the library only, and the wheel works on its own.

``uv build`` builds both (the wheel from the sdist, as an installer would). The wheel is then
installed into fresh virtual environments, once with the newest releases its dependencies allow
and once with the lowest ones (``--resolution lowest-direct``), and ``standalone_call.py`` runs
one offline call with each, from a temporary directory and in isolated mode, tracing it to a
local Langfuse. Each environment pulls the wheel's declared dependencies from PyPI (the uv cache
makes it quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tomllib
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from langfuse import Langfuse
from packaging.requirements import Requirement

from pipecat_langfuse import __version__
from tests.support.langfuse_rules import json_attribute, observation_type
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipecat_langfuse"
SCRIPT = Path(__file__).with_name("standalone_call.py")
DIST_NAME = f"pipecat_langfuse-{__version__}"
TIMEOUT_S = 300


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


def uv() -> str:
    path = os.environ.get("UV") or shutil.which("uv")
    assert path, "uv is needed to build and install the wheel (see .ci/run)"
    return path


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert process.returncode == 0, f"{command} failed:\n{process.stdout}\n{process.stderr}"
    return process


def uv_environment() -> dict[str, str]:
    """The caller's environment (uv settings, cache, index) without the project's virtual environment."""
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}


def package_files() -> set[str]:
    """Every file of the source package that is not Python's bytecode cache, relative to the repository."""
    return {
        path.relative_to(REPO).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    run([uv(), "build", "--out-dir", str(out), str(REPO)], cwd=REPO, env=uv_environment())
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dist(sdist=sdist, wheel=wheel)


def wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        return Parser().parsestr(archive.read(f"{DIST_NAME}.dist-info/METADATA").decode())


def requires_dist(wheel: Path) -> list[str]:
    return [str(r) for r in wheel_metadata(wheel).get_all("Requires-Dist") or []]


# -- What the archives hold ----------------------------------------------------------------


def test_the_sdist_holds_the_package_and_the_project_files_only(dist: Dist) -> None:
    assert dist.sdist.name == f"{DIST_NAME}.tar.gz"
    with tarfile.open(dist.sdist) as archive:
        names = {member.name for member in archive.getmembers() if member.isfile()}
    project_files = {"pyproject.toml", "README.md", "PKG-INFO", ".gitignore"}  # hatchling always adds .gitignore
    if (REPO / "CHANGELOG.md").exists():
        project_files.add("CHANGELOG.md")
    assert names == {f"{DIST_NAME}/{name}" for name in package_files() | project_files}
    assert {name.split("/")[1] for name in names} == {"pipecat_langfuse"} | project_files


def test_the_wheel_holds_the_package_its_data_and_metadata_only(dist: Dist) -> None:
    assert dist.wheel.name == f"{DIST_NAME}-py3-none-any.whl"
    with zipfile.ZipFile(dist.wheel) as archive:
        names = set(archive.namelist())
        prices = archive.read("pipecat_langfuse/prices.toml")
        typed_marker = archive.read("pipecat_langfuse/py.typed")
    metadata = {f"{DIST_NAME}.dist-info/{name}" for name in ("METADATA", "WHEEL", "RECORD")}
    assert names == package_files() | metadata
    assert {name.split("/")[0] for name in names} == {"pipecat_langfuse", f"{DIST_NAME}.dist-info"}
    assert {"pipecat_langfuse/prices.toml", "pipecat_langfuse/py.typed", "pipecat_langfuse/package.py"} <= names
    assert prices == (PACKAGE / "prices.toml").read_bytes()
    assert typed_marker == b""


def test_the_wheel_declares_the_dependencies_of_pyproject(dist: Dist) -> None:
    metadata = wheel_metadata(dist.wheel)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert metadata["Name"] == "pipecat-langfuse"
    assert metadata["Version"] == __version__
    assert metadata["Requires-Python"] == ">=3.11"
    declared = sorted(str(Requirement(r)) for r in requires_dist(dist.wheel))
    extras = pyproject["project"]["optional-dependencies"]
    assert extras == {"tokenizer": ["bpe-openai>=0.1.4,<0.2"]}
    from_pyproject = [*pyproject["project"]["dependencies"], 'bpe-openai>=0.1.4,<0.2; extra == "tokenizer"']
    assert declared == sorted(str(Requirement(r)) for r in from_pyproject)
    assert declared == [
        'bpe-openai<0.2,>=0.1.4; extra == "tokenizer"',
        "langfuse<6,>=5",
        "loguru<1,>=0.7.3",
        "pipecat-ai[tracing]<2,>=1.12",
    ]
    assert metadata.get_all("Provides-Extra") == ["tokenizer"]


# -- The wheel on its own ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLangfuse]:
    server = LocalLangfuse(public_key="pk-lf-packaging").start()
    yield server
    server.stop()


@dataclass(frozen=True)
class StandaloneCall:
    resolution: str
    venv: Path
    report: dict[str, Any]
    spans: list[ReceivedSpan]


LOWEST = {"pipecat-ai": "1.12.0", "langfuse": "5.0.1", "loguru": "0.7.3"}
"""What ``--resolution lowest-direct`` installs for the declared ranges (there is no langfuse 5.0.0)."""


@pytest.fixture(scope="module", params=["highest", "lowest-direct"])
def standalone_call(
    request: pytest.FixtureRequest, dist: Dist, server: LocalLangfuse, tmp_path_factory: pytest.TempPathFactory
) -> StandaloneCall:
    resolution: str = request.param
    root = tmp_path_factory.mktemp(f"standalone-{resolution}")
    venv, workdir = root / "venv", root / "work"
    workdir.mkdir()
    python = venv / "bin" / "python"
    run([uv(), "venv", "--quiet", "--python", "3.11", str(venv)], cwd=root, env=uv_environment())
    # With lowest-direct, the wheel's own requirements are repeated as direct ones so their lowest
    # versions are taken; their dependencies still resolve to the newest that fit.
    requirements = [str(dist.wheel)]
    if resolution == "lowest-direct":
        requirements += requires_dist(dist.wheel)
    install = [uv(), "pip", "install", "--quiet", "--python", str(python), "--resolution", resolution]
    run([*install, *requirements], cwd=root, env=uv_environment())

    script = workdir / SCRIPT.name
    shutil.copyfile(SCRIPT, script)
    conversation_id = f"conv-packaging-{resolution}"
    env = {
        "PATH": os.defpath,
        "HOME": str(workdir),
        "ENABLE_TRACING": "true",
        "LANGFUSE_PUBLIC_KEY": server.public_key,
        "LANGFUSE_SECRET_KEY": server.secret_key,
        "LANGFUSE_BASE_URL": server.url,
        "CONVERSATION_ID": conversation_id,
    }
    process = run([str(python), "-I", str(script)], cwd=workdir, env=env)
    report = json.loads(process.stdout.strip().splitlines()[-1])
    # The tracer flushes before the call returns, so every span has arrived by now.
    spans = server.spans_of_trace(Langfuse.create_trace_id(seed=conversation_id))
    return StandaloneCall(resolution=resolution, venv=venv, report=report, spans=spans)


def by_name(call: StandaloneCall) -> dict[str, ReceivedSpan]:
    names = Counter(span.name for span in call.spans)
    assert all(count == 1 for count in names.values()), names
    return {span.name: span for span in call.spans}


def test_only_the_wheel_and_its_dependencies_are_importable(standalone_call: StandaloneCall) -> None:
    report = standalone_call.report
    site_packages = str(standalone_call.venv / "lib" / "python3.11" / "site-packages")
    assert report["importable_repository_modules"] == {}
    assert report["pipecat_langfuse_file"] == f"{site_packages}/pipecat_langfuse/__init__.py"
    assert [p for p in report["sys_path"] if p.startswith(str(REPO))] == []
    assert report["sys_path"][-1] == site_packages
    assert report["versions"]["pipecat-langfuse"] == __version__
    assert report["pipecat_version"] == report["versions"]["pipecat-ai"]


def test_the_resolution_installs_the_declared_bounds(standalone_call: StandaloneCall, dist: Dist) -> None:
    versions = standalone_call.report["versions"]
    requirements = {r.name: r for r in map(Requirement, requires_dist(dist.wheel))}
    for name in LOWEST:
        assert requirements[name].specifier.contains(versions[name]), (name, versions[name])
    lowest = {name: versions[name] for name in LOWEST}
    if standalone_call.resolution == "lowest-direct":
        assert lowest == LOWEST
    else:
        assert lowest != LOWEST  # the newest releases, whatever they are today


def test_the_call_arrives_as_one_trace_with_a_turn_and_three_generations(standalone_call: StandaloneCall) -> None:
    call = standalone_call.report["call"]
    spans = by_name(standalone_call)
    assert call["trace_id"] == Langfuse.create_trace_id(seed=call["conversation_id"])
    assert sorted((s.scope, s.name) for s in standalone_call.spans) == [
        ("langfuse-sdk", "llm-completion"),
        ("langfuse-sdk", "speech-to-text"),
        ("langfuse-sdk", "text-to-speech"),
        ("langfuse-sdk", "turn 1"),
        ("langfuse-sdk", "voice-conversation"),
        ("pipecat.turn", "conversation"),
        ("pipecat.turn", "turn"),
    ]
    root, turn = spans["voice-conversation"], spans["turn 1"]
    assert root.parent_span_id not in {s.span_id for s in standalone_call.spans}
    assert turn.parent_span_id == root.span_id
    assert spans["conversation"].parent_span_id == root.span_id
    assert spans["turn"].parent_span_id == spans["conversation"].span_id
    for name in ("speech-to-text", "llm-completion", "text-to-speech"):
        assert spans[name].parent_span_id == turn.span_id, name
        assert observation_type(spans[name]) == "GENERATION", name
    assert {observation_type(spans[name]) for name in ("conversation", "turn")} == {"SPAN"}
    for span in standalone_call.spans:
        assert span.attributes["session.id"] == call["conversation_id"], span.name
        assert span.attributes["langfuse.trace.name"] == "voice-conversation", span.name
        assert span.attributes["langfuse.trace.tags"] == ["packaging"], span.name
    assert json_attribute(root, "langfuse.observation.input") == "What time is it?"
    assert json_attribute(root, "langfuse.observation.output") == "It is noon."
    assert json_attribute(root, "langfuse.observation.metadata.turns") == 1
    assert json_attribute(root, "langfuse.observation.metadata.total_cost_usd") == 0.000296
    assert json_attribute(turn, "langfuse.observation.input") == "What time is it?"
    assert json_attribute(turn, "langfuse.observation.output") == "It is noon."
    assert json_attribute(turn, "langfuse.observation.metadata.interrupted") is False


def test_each_generation_has_its_model_usage_and_cost(standalone_call: StandaloneCall) -> None:
    spans = by_name(standalone_call)
    generations = {
        name: (
            spans[name].attributes["langfuse.observation.model.name"],
            json_attribute(spans[name], "langfuse.observation.usage_details"),
            json_attribute(spans[name], "langfuse.observation.cost_details"),
        )
        for name in ("speech-to-text", "llm-completion", "text-to-speech")
    }
    assert generations == {
        # nova-3: $0.0048 per minute of audio.
        "speech-to-text": ("nova-3", {"input_audio_ms": 1500}, {"input_audio_ms": 0.00012, "total": 0.00012}),
        # gpt-4.1-mini: $0.40 / $1.60 per million input / output tokens.
        "llm-completion": (
            "gpt-4.1-mini",
            {"input": 12, "output": 4, "total": 16},
            {"input": 4.8e-06, "output": 6.4e-06, "total": 1.12e-05},
        ),
        # tts-1: $15 per million characters.
        "text-to-speech": ("tts-1", {"input_characters": 11}, {"input_characters": 0.000165, "total": 0.000165}),
    }
    assert json_attribute(spans["speech-to-text"], "langfuse.observation.output") == "What time is it?"
    assert json_attribute(spans["llm-completion"], "langfuse.observation.output") == "It is noon."
    assert json_attribute(spans["text-to-speech"], "langfuse.observation.input") == "It is noon."


def test_the_summary_matches_what_langfuse_received(standalone_call: StandaloneCall) -> None:
    call = standalone_call.report["call"]
    assert call["turns"] == [[1, "What time is it?", "It is noon.", False]]
    assert call["models"] == [
        ["llm", "gpt-4.1-mini", 1, {"input": 12, "output": 4, "total": 16}, 1.12e-05],
        ["stt", "nova-3", 1, {"input_audio_ms": 1500}, 0.00012],
        ["tts", "tts-1", 1, {"input_characters": 11}, 0.000165],
    ]
