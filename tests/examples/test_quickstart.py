"""examples/quickstart.py builds its traced pipeline without keys, network or `app`."""

from __future__ import annotations

import ast
import importlib.util
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from langfuse import Langfuse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pipecat.pipeline.pipeline import Pipeline, PipelineSink, PipelineSource
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator, LLMUserAggregator
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.processors.frameworks.rtvi.processor import RTVIProcessor
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.utils import deprecation

from pipecat_langfuse import TracingSettings, VoiceTracer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"
DUMMY_KEYS = {"DEEPGRAM_API_KEY": "dg-dummy", "OPENAI_API_KEY": "sk-dummy", "CARTESIA_API_KEY": "sk_car_dummy"}
# Python 3.11/3.12 deprecate importlib.resources.path, which Pipecat's Silero VAD and Smart Turn
# loaders call; that is the standard library's deprecation, not one of Pipecat's APIs.
STDLIB_RESOURCES_PATH = "path is deprecated. Use files() instead."


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("examples_quickstart", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quickstart() -> ModuleType:
    return load_example()


class LoopbackTransport(BaseTransport):
    """A transport with plain input/output processors: no device, no network."""

    def __init__(self) -> None:
        super().__init__()
        self._input = BaseInputTransport(TransportParams(audio_in_enabled=True))
        self._output = BaseOutputTransport(TransportParams(audio_out_enabled=True))
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every attempt to resolve a name or open a connection."""
    attempts: list[str] = []

    def refuse(name: str) -> Any:
        def refused(*args: object, **kwargs: object) -> Any:
            attempts.append(f"{name}{args[1:] if name.startswith('socket.connect') else args}")
            raise OSError(f"network access in a test: {name}")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


@pytest.fixture
def fresh_deprecations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipecat warns once per call site per process; start from none warned."""
    monkeypatch.setattr(deprecation, "_warned_sites", set())


def leaf_processors(processor: FrameProcessor) -> list[FrameProcessor]:
    children = processor.processors
    if not children:
        return [processor]
    return [leaf for child in children for leaf in leaf_processors(child)]


def deprecation_messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, DeprecationWarning) and not str(w.message).startswith(STDLIB_RESOURCES_PATH)
    ]


def build(quickstart: ModuleType, tracer: VoiceTracer) -> tuple[PipelineWorker, LoopbackTransport, tuple[Any, ...]]:
    services = quickstart.create_services(DUMMY_KEYS)
    transport = LoopbackTransport()
    worker = quickstart.build_worker(transport, *services, tracer)
    return worker, transport, services


@pytest.mark.usefixtures("fresh_deprecations")
def test_the_pipeline_is_stt_user_llm_tts_output_assistant_and_traced_by_the_tracer(
    quickstart: ModuleType, no_network: list[str]
) -> None:
    tracer = VoiceTracer(TracingSettings(), conversation_id="example-conversation")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        worker, transport, (stt, llm, tts) = build(quickstart, tracer)

    assert deprecation_messages(caught) == []
    assert no_network == []
    assert isinstance(worker, PipelineWorker)
    (rtvi, user_pipeline) = [p for p in worker.pipeline.processors if not isinstance(p, PipelineSource | PipelineSink)]
    assert isinstance(rtvi, RTVIProcessor)
    assert isinstance(user_pipeline, Pipeline)
    leaves = [p for p in leaf_processors(user_pipeline) if not isinstance(p, PipelineSource | PipelineSink)]
    assert [type(p) for p in leaves] == [
        BaseInputTransport,
        DeepgramSTTService,
        LLMUserAggregator,
        OpenAILLMService,
        CartesiaTTSService,
        BaseOutputTransport,
        LLMAssistantAggregator,
    ]
    assert leaves[0] is transport.input()
    assert leaves[1] is stt
    assert leaves[3] is llm
    assert leaves[4] is tts
    assert leaves[5] is transport.output()
    user_aggregator, assistant_aggregator = leaves[2], leaves[6]
    assert isinstance(user_aggregator, LLMUserAggregator)
    assert isinstance(assistant_aggregator, LLMAssistantAggregator)
    assert user_aggregator.context is assistant_aggregator.context
    assert user_aggregator.context.get_messages() == []

    observers = worker._observer._observers  # Pipecat has no public getter for them
    assert observers.count(tracer.observer) == 1  # tracer.attach(worker) added it once
    assert worker.params.enable_metrics is True
    assert worker.params.enable_usage_metrics is True
    assert worker._conversation_id == "example-conversation"
    # Tracing off in the settings: Pipecat's tracing is off too.
    assert tracer.enabled is False
    assert worker._enable_tracing is False
    assert worker.turn_trace_observer is None


@pytest.mark.usefixtures("fresh_deprecations")
def test_tracing_enabled_in_the_settings_turns_on_pipecat_tracing(
    quickstart: ModuleType, no_network: list[str]
) -> None:
    # An isolated client (own provider, in-memory exporter): nothing global, nothing sent.
    client = Langfuse(
        public_key="pk-lf-examples-quickstart",
        secret_key="sk-lf-examples-quickstart",
        base_url="http://127.0.0.1:9",
        tracer_provider=TracerProvider(),
        span_exporter=InMemorySpanExporter(),
    )
    settings = TracingSettings(
        enabled=True,
        public_key="pk-lf-examples-quickstart",
        secret_key="sk-lf-examples-quickstart",
        base_url="http://127.0.0.1:9",
    )
    tracer = VoiceTracer(settings, conversation_id="example-traced", client=client)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            worker, _, _ = build(quickstart, tracer)
    finally:
        client.shutdown()

    assert deprecation_messages(caught) == []
    assert no_network == []
    assert tracer.enabled is True
    assert tracer.client is client
    assert worker._enable_tracing is True
    assert worker.turn_trace_observer is not None
    assert worker._conversation_id == "example-traced"
    observers = worker._observer._observers
    assert observers.count(tracer.observer) == 1  # tracer.attach(worker) added it once


@pytest.mark.usefixtures("fresh_deprecations")
async def test_the_system_prompt_is_the_llm_setting_so_no_context_system_message_is_deprecated(
    quickstart: ModuleType, no_network: list[str]
) -> None:
    worker, _, (_, llm, _) = build(quickstart, VoiceTracer(TracingSettings()))
    (user_aggregator,) = [p for p in leaf_processors(worker.pipeline) if isinstance(p, LLMUserAggregator)]
    context = user_aggregator.context
    context.add_message({"role": "user", "content": "Hello?"})
    adapter = llm.get_llm_adapter()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params = await adapter.get_llm_invocation_params(
            context, system_instruction=llm.settings.system_instruction, convert_developer_to_user=False
        )

    assert deprecation_messages(caught) == []
    assert params["messages"] == [
        {"role": "system", "content": quickstart.SYSTEM_INSTRUCTION},
        {"role": "user", "content": "Hello?"},
    ]
    assert llm.settings.model == "gpt-4.1-mini"
    assert no_network == []


@pytest.mark.usefixtures("fresh_deprecations")
async def test_a_system_message_in_the_context_would_have_been_caught() -> None:
    # The check above can fail: Pipecat 1.14 deprecates the old way of giving a system prompt.
    llm = OpenAILLMService(api_key="sk-dummy")
    context = LLMContext(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await llm.get_llm_adapter().get_llm_invocation_params(context, convert_developer_to_user=False)

    assert deprecation_messages(caught) == [
        '`LLMContext(messages=[{"role": "system", ...}, ...])` is deprecated since 1.9.0 and will be removed in '
        "2.0.0. Use `system_instruction` on the LLM service instead."
    ]


def test_missing_provider_keys_are_named(quickstart: ModuleType) -> None:
    with pytest.raises(KeyError) as raised:
        quickstart.create_services({"OPENAI_API_KEY": "sk-dummy"})
    assert raised.value.args == ("Set DEEPGRAM_API_KEY, CARTESIA_API_KEY in the environment or in .env.",)


def test_the_example_imports_only_pipecat_the_public_api_and_the_standard_library() -> None:
    tree = ast.parse(EXAMPLE.read_text(encoding="utf-8"))
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m.split(".")[0] for m in modules} == {"__future__", "collections", "dotenv", "loguru", "os", "pipecat"} | {
        "pipecat_langfuse"
    }
    (ours,) = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "pipecat_langfuse"]
    assert sorted(alias.name for alias in ours.names) == ["TracingSettings", "VoiceTracer"]


def test_importing_the_example_loads_pipecat_langfuse_and_not_app() -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('quickstart', {str(EXAMPLE)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(sorted(m for m in sys.modules if m == 'app' or m.startswith('app.')))\n"
        "print('pipecat_langfuse' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "True"]
