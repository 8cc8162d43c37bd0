"""Every STT and TTS service Pipecat ships is priced, and a Pipecat upgrade that adds one is noticed.

``pipecat_services.toml`` lists each concrete service class of the installed Pipecat with the
model it reports by default. The classes are found in Pipecat's source (``ast``: most service
modules need their vendor's SDK to import), so a new, renamed or removed service fails the first
test until the list (and the price table) are updated.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pipecat.services
import pytest

from pipecat_langfuse import PriceTable

SERVICES_FILE = Path(__file__).with_name("pipecat_services.toml")
SERVICES_DIR = Path(pipecat.services.__file__).parent
BASES = {"STTService": "stt", "TTSService": "tts"}
ABSTRACT = {
    "STTService",
    "SegmentedSTTService",
    "WebsocketSTTService",
    "BaseWhisperSTTService",
    "DeepgramFluxSTTBase",
    "TTSService",
    "WordTTSService",
    "WebsocketTTSService",
    "WebsocketWordTTSService",
    "InterruptibleTTSService",
    "InterruptibleWordTTSService",
    "AudioContextTTSService",
    "AudioContextWordTTSService",
    "DeepgramFluxTTSBase",
    "ElevenLabsTTSBase",
    "GoogleBaseTTSService",
}
"""Base classes that no bot instantiates, so they are not priced."""


@dataclass(frozen=True)
class Service:
    cls: str
    module: str
    kind: str
    model: str
    hosted: bool
    unpriced: str | None
    model_required: bool

    @property
    def reported_model(self) -> str:
        """The model name the tracer gives this service's generations by default."""
        return self.model or self.cls


@cache
def listed() -> tuple[Service, ...]:
    document = tomllib.loads(SERVICES_FILE.read_text(encoding="utf-8"))
    return tuple(
        Service(
            cls=s["class"],
            module=s["module"],
            kind=s["kind"],
            model=s["model"],
            hosted=s["hosted"],
            unpriced=s.get("unpriced"),
            model_required=s.get("model_required", False),
        )
        for s in document["service"]
    )


def installed() -> dict[tuple[str, str], str]:
    """``(module, class) -> kind`` of every STT/TTS service class in the installed Pipecat's source."""
    bases: dict[str, set[str]] = {}
    modules: dict[str, list[str]] = {}
    for path in sorted(SERVICES_DIR.rglob("*.py")):
        module = ".".join(("pipecat", *path.relative_to(SERVICES_DIR.parent).with_suffix("").parts))
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                names = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                bases.setdefault(node.name, set()).update(names)
                modules.setdefault(node.name, []).append(module)

    @cache
    def kind_of(name: str) -> str | None:
        if name in BASES:
            return BASES[name]
        return next((k for base in sorted(bases.get(name, ())) if (k := kind_of(base))), None)

    return {
        (module, name): kind
        for name in bases
        if name not in ABSTRACT and (kind := kind_of(name)) is not None
        for module in modules[name]
    }


def test_the_list_is_every_stt_and_tts_service_of_the_installed_pipecat() -> None:
    found = installed()
    known = {(s.module, s.cls): s.kind for s in listed()}
    new = sorted(set(found) - set(known))
    gone = sorted(set(known) - set(found))
    assert new == [], f"Pipecat ships new STT/TTS services: add them to {SERVICES_FILE.name} and price them"
    assert gone == [], f"Pipecat no longer ships these services: remove them from {SERVICES_FILE.name}"
    assert found == known
    assert len(found) == 91


def test_the_listed_default_models_are_the_ones_in_pipecats_source() -> None:
    # A default model that changes in a Pipecat upgrade no longer appears in its module's source.
    for service in listed():
        if service.model:
            path = SERVICES_DIR.parent.joinpath(*service.module.split(".")[1:]).with_suffix(".py")
            source = "".join(p.read_text(encoding="utf-8") for p in path.parent.glob("*.py"))
            assert f'"{service.model}"' in source, (service.cls, service.model)


@pytest.mark.parametrize("service", [s for s in listed() if not s.unpriced and not s.model_required], ids=str)
def test_every_service_is_priced_by_default(service: Service) -> None:
    # Looked up as the tracer does: by kind, "<class>/<model>" first.
    entry = PriceTable.load().find(service.reported_model, service.kind, service=service.cls)
    assert entry is not None, f"{service.cls} reports {service.reported_model!r}, which has no price"
    if not service.hosted:
        assert entry.self_hosted, f"{service.cls} runs on the user's hardware: it must be priced self_hosted"


def test_services_without_a_public_price_stay_unpriced_and_say_why() -> None:
    # Never a made-up price: these vendors publish none in USD. An entry added for one of them
    # must drop its `unpriced` line, so the list stays true.
    table = PriceTable.load()
    unpriced = [s for s in listed() if s.unpriced]
    assert all(s.hosted for s in unpriced)
    assert [s.cls for s in unpriced if table.find(s.reported_model, s.kind, service=s.cls) is not None] == []
    assert len(unpriced) == 20
    hosted = [s for s in listed() if s.hosted and not s.model_required]
    assert (len(hosted), len(hosted) - len(unpriced)) == (74, 54)
