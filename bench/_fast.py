"""Child processes of ``python -m bench`` that run observer_overhead's scripted call as fast as the loop allows.

Each child is a fresh process: Pipecat's tracing uses the global tracer provider, the Langfuse SDK
installs its provider as the global one on its first client, and OpenInference's instrumentor
patches ``PipelineWorker.__init__``, so variants must not share a process. A child reads its job
(JSON) from the command line and prints one ``BENCH-RESULT {json}`` line.

- ``throughput``: one warm-up call, then timed calls of one variant; frames/s per call.
- ``usage``: records calls of 10, 100 and 1000 turns, then replays their ``FramePushed`` events
  into fresh exporting observers, timing ``on_push_frame`` of each MetricsFrame that carries usage.
- ``memory``: sequential calls under the README's full configuration; RSS after given call counts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import importlib.util
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "
OTLP_PATH = "/api/public/otel/v1/traces"

THROUGHPUT_VARIANTS = ("baseline", "noop", "turns", "sdk", "recording", "exporting", "full", "native", "openinference")
LABELS = {
    "baseline": "no observer (baseline)",
    "noop": "no-op observer",
    "turns": "Pipecat's default worker: its turn tracking, no observer of ours",
    "sdk": "Langfuse SDK alone: the same tree from a no-op observer",
    "recording": "our observer, recording only",
    "exporting": "our observer, exporting (Pipecat tracing off)",
    "full": "README full configuration",
    "native": "Pipecat native tracing (OTLP/HTTP)",
    "openinference": "openinference-instrumentation-pipecat (OTLP/HTTP)",
}
EXPORTS = ("sdk", "exporting", "full", "native", "openinference")
"""Variants that must have delivered spans to the stand-in."""


@dataclass
class Endpoint:
    """The Langfuse stand-in the child exports to."""

    url: str
    public_key: str
    secret_key: str

    @property
    def basic_auth(self) -> str:
        return "Basic " + base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()


def rss_mb() -> float:
    """Resident set size of this process, MB (``VmRSS`` of /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def otlp_provider(endpoint: Endpoint, *, install_global: bool) -> Any:
    """An OpenTelemetry SDK provider exporting over OTLP/HTTP to the stand-in, as Pipecat's docs set one up."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    exporter = OTLPSpanExporter(endpoint=endpoint.url + OTLP_PATH, headers={"Authorization": endpoint.basic_auth})
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if install_global:
        trace.set_tracer_provider(provider)
    return provider


def sdk_tree_observer(client: Any, conversation_id: str) -> Any:
    """A no-op observer that writes the tracer's tree with the plain Langfuse SDK: the floor of any Langfuse tracer.

    At each ``LLMFullResponseEndFrame`` (one per turn) it starts and ends a ``turn N`` span with
    an STT, an LLM and a TTS generation under it (model, input, output, integer usage, cost), all
    under one conversation span: the observations our tracer writes for a turn, with none of its
    logic. Written on the loop, as ``start_observation`` is used in the SDK's documentation.
    """
    from langfuse import propagate_attributes
    from pipecat.frames.frames import LLMFullResponseEndFrame

    from bench.observer_overhead import NoOpObserver

    class SdkTreeObserver(NoOpObserver):
        def __init__(self) -> None:
            super().__init__()
            self.turns = 0
            self.root: Any = None

        def open(self) -> None:
            with propagate_attributes(session_id=conversation_id, trace_name="conversation"):
                self.root = client.start_observation(as_type="span", name="conversation")

        def close(self) -> None:
            self.root.end()

        async def on_push_frame(self, data: Any) -> None:
            self.frames += 1
            if not isinstance(data.frame, LLMFullResponseEndFrame):
                return
            self.turns += 1
            turn = self.root.start_observation(as_type="span", name=f"turn {self.turns}", input="hello", output="hi")
            for name, model, usage, cost in (
                ("stt", "nova-3", {"input_audio_seconds": 2}, {"input": 0.0002}),
                ("llm", "gpt-4o-mini", {"input": 120, "output": 24}, {"input": 0.000018, "output": 0.0000144}),
                ("tts", "sonic-2", {"input_characters": 110}, {"input": 0.0033}),
            ):
                turn.start_observation(
                    as_type="generation",
                    name=name,
                    model=model,
                    input="what the caller said",
                    output="what the bot said",
                    usage_details=usage,
                    cost_details=cost,
                    metadata={"turn": self.turns},
                ).end()
            turn.end()

    return SdkTreeObserver()


class Harness:
    """Runs observer_overhead's scripted call under one variant, in this process."""

    def __init__(self, variant: str, endpoint: Endpoint) -> None:
        from opentelemetry import trace

        from pipecat_langfuse import TracingSettings

        if type(trace.get_tracer_provider()).__name__ != "ProxyTracerProvider":
            raise RuntimeError("a tracer provider was installed before the variant set up its own")
        self.variant = variant
        self.endpoint = endpoint
        self.settings = TracingSettings(
            enabled=True, public_key=endpoint.public_key, secret_key=endpoint.secret_key, base_url=endpoint.url
        )
        self.provider: Any = None
        self.client: Any = None
        if variant == "sdk":  # the plain SDK, as its documentation builds it
            from langfuse import Langfuse

            self.client = Langfuse(
                public_key=endpoint.public_key, secret_key=endpoint.secret_key, base_url=endpoint.url
            )
        elif variant == "native":
            self.provider = otlp_provider(endpoint, install_global=True)
        elif variant == "openinference":
            from openinference.instrumentation.pipecat import PipecatInstrumentor

            self.provider = otlp_provider(endpoint, install_global=False)
            PipecatInstrumentor().instrument(tracer_provider=self.provider)

    def worker_and_tracer(self, pipeline: Any, clock: Any, conversation_id: str, observers: list[Any]) -> Any:
        from pipecat.pipeline.worker import PipelineWorker

        from pipecat_langfuse import TracingSettings, VoiceTracer

        v = self.variant
        common: dict[str, Any] = {"clock": clock, "enable_rtvi": False, "idle_timeout_secs": None}
        tracer = None
        if v in ("recording", "exporting", "full"):
            tracer = VoiceTracer(
                TracingSettings(enabled=False) if v == "recording" else self.settings, conversation_id=conversation_id
            )
        if v == "full":  # the README: Pipecat's tracing (and its turn tracking) on, the tracer attached
            worker = PipelineWorker(
                pipeline,
                observers=observers,
                enable_tracing=tracer.enabled,  # type: ignore[union-attr]
                conversation_id=tracer.conversation_id,  # type: ignore[union-attr]
                **common,
            )
        elif v == "turns":  # PipelineWorker's defaults: its TurnTrackingObserver, no tracing
            worker = PipelineWorker(pipeline, observers=observers, conversation_id=conversation_id, **common)
        elif v == "native":  # Pipecat's own spans to the global provider, no tracer of ours
            worker = PipelineWorker(
                pipeline, observers=observers, enable_tracing=True, conversation_id=conversation_id, **common
            )
        else:  # no Pipecat tracing, no turn tracking: only the observer under test
            worker = PipelineWorker(
                pipeline,
                observers=observers,
                enable_turn_tracking=False,
                conversation_id=conversation_id,
                **common,
            )
        if tracer is not None:
            tracer.attach(worker)
        return worker, tracer

    def flush(self) -> None:
        if self.provider is not None:
            self.provider.force_flush()
        if self.client is not None:
            self.client.flush()

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
        if self.client is not None:
            self.client.shutdown()


async def run_call(
    harness: Harness, workload: Any, conversation_id: str, *, recorder: Any = None, noop: Any = None
) -> dict[str, Any]:
    """One scripted call: wall time of ``runner.run()`` (inside the conversation), then the flush, timed apart."""
    from pipecat.workers.runner import WorkerRunner

    from bench.observer_overhead import NoOpObserver, ScriptClock, Tally, build_pipeline

    tally = Tally()
    clock = ScriptClock()
    if harness.variant == "noop" and noop is None:
        noop = NoOpObserver()
    if harness.variant == "sdk":
        noop = sdk_tree_observer(harness.client, conversation_id)
        noop.open()
    observers = [o for o in (noop, recorder) if o is not None]
    worker, tracer = harness.worker_and_tracer(
        build_pipeline(workload, tally, clock), clock, conversation_id, observers
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    conversation = tracer.conversation() if tracer is not None else contextlib.nullcontext()
    gc.collect()
    start = time.perf_counter()
    async with conversation:
        await runner.run()
        run_end = time.perf_counter()
    if harness.variant == "sdk":
        noop.close()
    harness.flush()  # native, OpenInference and the SDK: their BatchSpanProcessor; ours flushed on conversation exit
    result: dict[str, Any] = {
        "wall_s": run_end - start,
        "flush_s": time.perf_counter() - run_end,
        "frames": tally.frames,
    }
    if tracer is not None:
        summary = tracer.summary()
        result["turns"] = len(summary.turns)
        result["units"] = {m.kind: m.calls for m in summary.models}
        result["flushed"] = tracer.flushed
    return result


def _workload(spec: dict[str, Any]) -> Any:
    from bench.observer_overhead import Workload

    return Workload(
        spec["turns"], spec.get("user_s", 2.0), spec.get("bot_s", 3.0), spec.get("gap_s", 0.5), spec.get("words", 24), 2
    )


def _check(result: dict[str, Any], workload: Any, name: str) -> list[str]:
    problems = []
    if "turns" in result and (
        result["turns"] != workload.turns or result["units"] != dict.fromkeys(("stt", "llm", "tts"), workload.turns)
    ):
        problems.append(f"{name}: recorded {result['turns']} turns and units {result['units']}")
    if result.get("flushed") is False:
        problems.append(f"{name}: the final flush did not complete")
    return problems


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


async def throughput(spec: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    if spec["variant"] == "openinference" and not installed("openinference.instrumentation.pipecat"):
        return {"skipped": "not installed (`uv sync --group bench`)", "problems": []}
    harness = Harness(spec["variant"], endpoint)
    workload = _workload(spec)
    tag = spec["run_id"]
    problems: list[str] = []
    warmup = await run_call(harness, workload, f"{tag}-warmup")
    problems += _check(warmup, workload, f"{tag}-warmup")
    calls = []
    for i in range(spec["calls"]):
        call = await run_call(harness, workload, f"{tag}-{i}")
        problems += _check(call, workload, f"{tag}-{i}")
        calls.append(call)
    harness.shutdown()
    return {
        "frames": calls[0]["frames"],
        "wall_s": statistics.median(c["wall_s"] for c in calls),
        "flush_s": statistics.median(c["flush_s"] for c in calls),
        "calls": spec["calls"] + 1,
        "problems": problems,
    }


async def memory(spec: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    harness = Harness("full", endpoint)
    workload = _workload(spec)
    checkpoints = sorted(spec["checkpoints"])
    rss: dict[int, float] = {}
    problems: list[str] = []
    started = time.perf_counter()
    for i in range(1, checkpoints[-1] + 1):
        call = await run_call(harness, workload, f"{spec['run_id']}-{i}")
        problems += _check(call, workload, f"memory call {i}")[:1]
        if i in checkpoints:
            gc.collect()
            rss[i] = rss_mb()
    return {"rss_mb": rss, "per_call_s": (time.perf_counter() - started) / checkpoints[-1], "problems": problems[:5]}


def _is_usage(frame: Any) -> bool:
    from pipecat.frames.frames import MetricsFrame
    from pipecat.metrics.metrics import LLMUsageMetricsData, STTUsageMetricsData, TTSUsageMetricsData

    return isinstance(frame, MetricsFrame) and any(
        isinstance(d, (LLMUsageMetricsData, STTUsageMetricsData, TTSUsageMetricsData)) for d in frame.data
    )


@contextlib.asynccontextmanager
async def _exporting_observer(settings: Any, conversation_id: str) -> AsyncIterator[Any]:
    from pipecat_langfuse import VoiceTracer

    tracer = VoiceTracer(settings, conversation_id=conversation_id)
    async with tracer.conversation():
        yield tracer.observer


async def usage(spec: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    from bench.observer_overhead import Recorder

    harness = Harness("baseline", endpoint)
    out: dict[str, Any] = {}
    for turns in spec["turns"]:
        workload = _workload({**spec["shape"], "turns": turns})
        recorder = Recorder()
        await run_call(harness, workload, f"{spec['run_id']}-record-{turns}", recorder=recorder)
        events = recorder.events
        usage_events = sum(1 for e in events if _is_usage(e.frame))
        reps = []
        pooled: list[int] = []  # every usage report of every replay of this size
        is_usage = [_is_usage(e.frame) for e in events]
        for rep in range(spec["reps"]):
            times: list[int] = []
            others: list[int] = []
            gc.collect()
            gc.freeze()  # the recording is the benchmark's, not the observer's: keep it out of the collector's walks
            try:
                async with _exporting_observer(harness.settings, f"{spec['run_id']}-{turns}-{rep}") as observer:
                    clock = time.perf_counter_ns
                    for event, usage_report in zip(events, is_usage, strict=True):
                        start = clock()
                        await observer.on_push_frame(event)
                        (times if usage_report else others).append(clock() - start)
            finally:
                gc.unfreeze()
            pooled += times
            times.sort()
            others.sort()
            reps.append(
                {
                    "mean_us": statistics.fmean(times) / 1e3,
                    "p99_us": times[min(int(len(times) * 0.99), len(times) - 1)] / 1e3,
                    "max_us": times[-1] / 1e3,
                    "other_p99_us": others[min(int(len(others) * 0.99), len(others) - 1)] / 1e3,
                    "other_max_us": others[-1] / 1e3,
                }
            )
        pooled.sort()
        out[str(turns)] = {
            "events": len(events),
            "usage_events": usage_events,
            "reps": reps,
            "pooled_p99_us": pooled[min(int(len(pooled) * 0.99), len(pooled) - 1)] / 1e3,
        }
        del recorder, events
    return {"sizes": out, "problems": []}


JOBS = {"throughput": throughput, "memory": memory, "usage": usage}


def child(spec_json: str) -> int:
    """Entry point of a child process: run the job and print its result."""
    import sys

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    spec = json.loads(spec_json)
    endpoint = Endpoint(**spec.pop("endpoint"))
    result = asyncio.run(JOBS[spec["job"]](spec, endpoint))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0
