"""Every benchmark in one run: ``uv run --group bench python -m bench`` writes docs/benchmarks.md.

Sections (``--only`` takes their names): throughput, lag, latency, usage, memory, shutdown.
Every measurement runs in child processes (fresh global OpenTelemetry state per variant and
repetition), interleaved across variants with a rotating order. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import fault_modes
from bench._fast import EXPORTS, LABELS, OTLP_PATH, RESULT_PREFIX, THROUGHPUT_VARIANTS
from bench._server import RUN_ATTRIBUTE, RemoteLangfuse

SECTIONS = ("throughput", "lag", "latency", "usage", "memory", "shutdown")
ROOT = Path(__file__).resolve().parent.parent

OFF, HEALTHY, NATIVE, HANGS, DOWN = (
    fault_modes.OFF,
    fault_modes.HEALTHY,
    fault_modes.NATIVE,
    "hangs",
    fault_modes.REFUSES,
)
REALTIME_LABELS = {
    OFF: "tracing off (`ENABLE_TRACING=false`: the tracer records the summary only)",
    HEALTHY: "ours, README full configuration, healthy endpoint",
    NATIVE: "Pipecat native tracing alone (OTLP/HTTP), healthy endpoint",
    HANGS: "ours, README full configuration, endpoint hanging (30 s per request)",
    DOWN: "ours, README full configuration, endpoint down (port closed)",
}
LAG_MODES = (OFF, HEALTHY, NATIVE, HANGS)
SHUTDOWN_MODES = (HEALTHY, DOWN, HANGS)
COST_NOTES = "docs/design/tracing-cost.md"
"""Where the report sends a reader for the causes of a missed throughput target."""
LATENCY_PAIRS = 2
"""Pairs of calls (tracing off, on) the latency section adds to each repetition, beside the loop lag's pair."""
README_TIMEOUTS = (5, 10)  # LANGFUSE_TIMEOUT, LANGFUSE_FLUSH_TIMEOUT: the README's documented defaults
SMOKE_TIMEOUTS = (1, 2)

TARGET_SLOWDOWN_FULL = 1.10
TARGET_SLOWDOWN_OBSERVER = 1.03
TARGET_V2V_MS = 1.0
TARGET_LAG_P99_MS = 5.0
TARGET_USAGE_US = 200.0
TARGET_MEMORY_MB = 3.0


@dataclass
class Sizes:
    throughput_turns: int
    throughput_calls: int
    usage_turns: tuple[int, ...]
    memory_checkpoints: tuple[int, ...]
    memory_turns: int
    jobs: int  # child processes at once
    timeouts: tuple[int, int]
    quick_call: bool
    latency_pairs: int


FULL = Sizes(20, 2, (10, 100, 1000), (10, 100, 1000), 2, 1, README_TIMEOUTS, False, LATENCY_PAIRS)
SMOKE = Sizes(2, 1, (2, 5, 10), (2, 5), 1, 3, SMOKE_TIMEOUTS, True, 1)
USAGE_SHAPE = {"user_s": 0.4, "bot_s": 0.6, "gap_s": 0.2, "words": 8}
MEMORY_SHAPE = {"user_s": 0.4, "bot_s": 0.6, "gap_s": 0.2, "words": 8}


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- Child processes ----------------------------------------------------------------------------


def child_env(run_id: str) -> dict[str, str]:
    """This environment without a developer's Langfuse or OpenTelemetry settings, tagged with the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OTEL_"))}
    env.pop("ENABLE_TRACING", None)
    env["OTEL_RESOURCE_ATTRIBUTES"] = f"{RUN_ATTRIBUTE}={run_id}"
    return env


def run_child(spec: dict[str, Any], server: RemoteLangfuse) -> dict[str, Any]:
    run_id = f"{spec['job']}-{spec.get('variant', '')}-{uuid.uuid4().hex[:8]}"
    spec = {
        **spec,
        "run_id": run_id,
        "endpoint": {"url": server.url, "public_key": server.public_key, "secret_key": server.secret_key},
    }
    command = [sys.executable, "-m", "bench", "--child", json.dumps(spec)]
    done = subprocess.run(
        command, env=child_env(run_id), cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{run_id}: child exited {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["received_spans"] = sum(server.run_span_names(run_id).values())
    return result


@dataclass
class Results:
    throughput: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {v: [] for v in THROUGHPUT_VARIANTS})
    realtime: dict[str, list[fault_modes.Run]] = field(default_factory=dict)
    latency: dict[str, list[fault_modes.Run]] = field(default_factory=lambda: {OFF: [], HEALTHY: []})
    skipped: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def rotate(items: Sequence[str], rep: int) -> list[str]:
    k = rep % len(items) if items else 0
    return [*items[k:], *items[:k]]


def plan(args: argparse.Namespace, sizes: Sizes, server: RemoteLangfuse, results: Results) -> list[Callable[[], None]]:
    """The jobs of the run, in order: each repetition interleaves the variants and the modes."""
    jobs: list[Callable[[], None]] = []
    modes: list[str] = []
    for section, wanted in (("lag", LAG_MODES), ("latency", (OFF, HEALTHY)), ("shutdown", SHUTDOWN_MODES)):
        if section in args.only:
            modes += [m for m in wanted if m not in modes]
    results.realtime = {m: [] for m in modes}

    def throughput(variant: str, rep: int) -> Callable[[], None]:
        def job() -> None:
            spec = {
                "job": "throughput",
                "variant": variant,
                "turns": sizes.throughput_turns,
                "calls": sizes.throughput_calls,
            }
            result = run_child(spec, server)
            if "skipped" in result:
                results.skipped[variant] = result["skipped"]
                progress(f"throughput {variant}: skipped, {result['skipped']}")
                return
            results.throughput[variant].append(result)
            results.problems += [f"throughput {variant} rep {rep}: {p}" for p in result["problems"]]
            if variant in EXPORTS and not result["received_spans"]:
                results.problems.append(f"throughput {variant} rep {rep}: the stand-in received no span")
            progress(
                f"throughput rep {rep + 1}/{args.reps} {variant}: "
                f"{result['frames'] / result['wall_s']:,.0f} frames/s, spans {result['received_spans']}"
            )

        return job

    def realtime(mode: str, rep: int) -> Callable[[], None]:
        def job() -> None:
            run = fault_modes._run_one(
                mode, rep, sizes.quick_call, False, timeouts=sizes.timeouts, script="quick"
            )  # a real subprocess: process exit includes the SDK's atexit shutdown
            results.realtime[mode].append(run)
            r = run.result
            if mode in (HEALTHY, NATIVE) and not r["received_spans"]:
                results.problems.append(f"{mode} rep {rep}: the stand-in received no span")
            progress(
                f"real-time rep {rep + 1}/{args.reps} {mode}: call {r['call_s']:.1f} s, "
                f"lag p99 {run.pct(0.99):.2f} ms, conversation exit {r['conversation_exit_s']:.2f} s, "
                f"process exit {run.exit_after_conversation_s:.2f} s, spans received {r['received_spans']}"
            )

        return job

    def latency(mode: str, rep: int) -> Callable[[], None]:
        def job() -> None:
            run = fault_modes._run_one(mode, rep, sizes.quick_call, False, timeouts=sizes.timeouts, script="quick")
            results.latency[mode].append(run)
            progress(
                f"latency rep {rep + 1}/{args.reps} {mode}: call {run.result['call_s']:.1f} s, "
                f"{len(run.result['v2v_s'] or [])} turns"
            )

        return job

    def usage() -> None:
        spec = {"job": "usage", "turns": list(sizes.usage_turns), "reps": args.reps, "shape": USAGE_SHAPE}
        results.usage = run_child(spec, server)
        progress(f"usage replay done: {', '.join(f'{k} turns' for k in results.usage['sizes'])}")

    def memory() -> None:
        spec = {
            "job": "memory",
            "turns": sizes.memory_turns,
            **MEMORY_SHAPE,
            "checkpoints": list(sizes.memory_checkpoints),
        }
        results.memory = run_child(spec, server)
        results.problems += [f"memory: {p}" for p in results.memory["problems"]]
        progress(f"memory done: RSS {results.memory['rss_mb']} MB")

    for rep in range(args.reps):
        if "throughput" in args.only:
            jobs += [throughput(v, rep) for v in rotate(THROUGHPUT_VARIANTS, rep)]
        jobs += [realtime(m, rep) for m in rotate(modes, rep)]
        if "latency" in args.only:
            jobs += [latency(m, rep) for _ in range(sizes.latency_pairs) for m in rotate((OFF, HEALTHY), rep)]
    if "usage" in args.only:
        jobs.append(usage)
    if "memory" in args.only:
        jobs.append(memory)
    return jobs


def measure(args: argparse.Namespace, sizes: Sizes) -> Results:
    results = Results()
    with RemoteLangfuse() as server:
        jobs = plan(args, sizes, server, results)
        progress(f"{len(jobs)} child processes, {sizes.jobs} at a time")
        if sizes.jobs == 1:
            for job in jobs:
                job()
        else:
            with ThreadPoolExecutor(sizes.jobs) as pool:
                for future in [pool.submit(job) for job in jobs]:
                    future.result()
    return results


# -- Report ---------------------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "—"
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


def package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def git(*command: str) -> str:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(["git", *command], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    except OSError:
        return ""
    return done.stdout if done.returncode == 0 else ""


def machine() -> str:
    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = sorted({line[3:].split("/")[0] for line in git("status", "--porcelain").splitlines() if line})
    dirty = f"dirty: uncommitted changes in {', '.join(changed)}" if changed else "clean"
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {len(os.sched_getaffinity(0))} CPUs, {platform.machine()}, "
        f"load average {load} at the end; Python {platform.python_version()}, pipecat-ai {package('pipecat-ai')}, "
        f"langfuse {package('langfuse')}, openinference-instrumentation-pipecat "
        f"{package('openinference-instrumentation-pipecat')}, opentelemetry-sdk {package('opentelemetry-sdk')}; "
        f"git commit {head} ({dirty})"
    )


def paired(results: Results, variant: str, reference: str) -> list[float]:
    """Wall-time ratios of ``variant`` to ``reference`` within each repetition (> 1: slower)."""
    a, b = results.throughput[variant], results.throughput[reference]
    return [x["wall_s"] / y["wall_s"] for x, y in zip(a, b, strict=False)]


def verdict(met: bool) -> str:
    return "**MET**" if met else "**NOT MET**"


class Report:
    def __init__(self, args: argparse.Namespace, sizes: Sizes, results: Results, command: str) -> None:
        self.args, self.sizes, self.results, self.command = args, sizes, results, command
        self.reading: list[str] = []

    def throughput(self) -> list[str]:
        r, s = self.results, self.sizes
        runs = r.throughput
        if not runs["baseline"]:
            return []
        frames = runs["baseline"][0]["frames"]
        lines = [
            "## Throughput",
            "",
            f"observer_overhead's scripted call ({s.throughput_turns} turns, {frames:,} frames pushed per call, "
            "`ScriptClock`: pipeline time moves 20 ms per microphone chunk), as fast as the loop allows. Each "
            f"repetition runs every variant in a fresh process, in a rotating order: one warm-up call, then "
            f"{s.throughput_calls} timed call(s) (wall time of `runner.run()` inside `conversation()`; the "
            "median is the repetition's value). Ratios are wall-time ratios within each repetition "
            "(> 1: slower), then `median [min–max]` over the repetitions. The flush after the call is timed "
            "apart (ours: the exit of `tracer.conversation()`; native and OpenInference: "
            "`provider.force_flush()`). Spans received: what the stand-in got from that process, all calls.",
            "",
            "| Variant | Frames/s | × no observer | × no-op observer | Flush after the call (ms) | Spans received |",
            "|---|---|---|---|---|---|",
        ]
        for v in THROUGHPUT_VARIANTS:
            if not runs[v]:
                why = self.results.skipped.get(v, "—")
                lines.append(f"| {LABELS[v]} | {why} | — | — | — | — |")
                continue
            fps = [x["frames"] / x["wall_s"] for x in runs[v]]
            flush = [x["flush_s"] * 1e3 for x in runs[v]]
            spans = [x["received_spans"] for x in runs[v]]
            lines.append(
                f"| {LABELS[v]} | {spread(fps, '{:,.0f}')} | {spread(paired(r, v, 'baseline'), '{:.3f}')} "
                f"| {spread(paired(r, v, 'noop'), '{:.3f}') if v != 'baseline' else '—'} "
                f"| {spread(flush, '{:.1f}') if v not in ('baseline', 'noop') else '—'} "
                f"| {spread(spans, '{:.0f}') if v in EXPORTS else '—'} |"
            )
        lines += [
            "",
            "Variants (every one: `enable_rtvi=False`, `idle_timeout_secs=None`, default `PipelineParams`, the "
            "script pushing the services' metrics itself):",
            "",
            "- no observer: `enable_turn_tracking=False`, no observer at all.",
            "- no-op observer: a `BaseObserver(observe_every_push=False)` that counts frames; no turn tracking.",
            "- Pipecat's default worker: `PipelineWorker` with its defaults (`enable_turn_tracking=True`: Pipecat's "
            "`TurnTrackingObserver`, the one observer a stock bot already runs), no tracing, no observer of ours.",
            "- Langfuse SDK alone: the no-op observer, which writes the tracer's tree with the plain SDK "
            "(`Langfuse(...)` as its documentation builds it): at each `LLMFullResponseEndFrame`, `start_observation` "
            "of a `turn N` span with an STT, an LLM and a TTS generation (model, input, output, integer usage, cost) "
            "under one conversation span, exported to the stand-in. The same number of observations as the tracer, "
            "with none of its logic: the floor of any tracer that writes this tree to Langfuse.",
            "- our observer, recording only: `VoiceTracer(TracingSettings(enabled=False))`, `tracer.attach(worker)`, "
            "inside `tracer.conversation()`; no turn tracking.",
            "- our observer, exporting: `VoiceTracer(TracingSettings(enabled=True, …))` to the stand-in, "
            "`PipelineWorker(enable_tracing=False, enable_turn_tracking=False)`, attached, inside `conversation()`.",
            "- README full configuration: `VoiceTracer` exporting, `PipelineWorker(enable_tracing=tracer.enabled, "
            "conversation_id=tracer.conversation_id)` (Pipecat's turn tracking on), `tracer.attach(worker)`, "
            "`async with tracer.conversation()`.",
            "- Pipecat native tracing: `TracerProvider` + `BatchSpanProcessor(OTLPSpanExporter(endpoint=<stand-in>"
            f"{OTLP_PATH}, headers=Basic auth))` set as the global provider, "
            "`PipelineWorker(enable_tracing=True, conversation_id=...)`, no tracer of ours.",
            "- openinference-instrumentation-pipecat: `PipecatInstrumentor().instrument(tracer_provider=...)` with its "
            "own `TracerProvider` + `BatchSpanProcessor` + OTLP exporter to the same endpoint; it wraps "
            "`PipelineWorker.__init__` and adds its `OpenInferenceObserver` (a `TurnTrackingObserver` that sees "
            "every push, `observe_every_push=True`); `enable_tracing=False`, no Pipecat turn tracking.",
        ]
        full_native = paired(r, "full", "native")
        full_noop = paired(r, "full", "noop")
        alone = paired(r, "exporting", "noop")
        recording = paired(r, "recording", "noop")
        if full_native and full_noop:
            met = statistics.median(full_native) <= 1.0 and statistics.median(full_noop) <= TARGET_SLOWDOWN_FULL
            self.reading.append(
                f"- Full configuration at least as fast as Pipecat's native tracing, and ≤ ×{TARGET_SLOWDOWN_FULL:.2f} "
                f"the no-op observer: {verdict(met)}. Full ÷ native wall time {spread(full_native, '{:.3f}')}; "
                f"full ÷ no-op {spread(full_noop, '{:.3f}')} (paired repetitions). For scale: native ÷ no-op "
                f"{spread(paired(r, 'native', 'noop'), '{:.3f}')}, OpenInference ÷ no-op "
                f"{spread(paired(r, 'openinference', 'noop'), '{:.3f}')}." + ("" if met else f" Why: {COST_NOTES}.")
            )
        if alone and recording:
            met = statistics.median(alone) <= TARGET_SLOWDOWN_OBSERVER
            floors = [
                f"{LABELS[v].split(':')[0]} {spread(paired(r, v, 'noop'), '{:.3f}')}"
                for v in ("turns", "sdk")
                if paired(r, v, "noop")
            ]
            self.reading.append(
                f"- Our observer alone ≤ ×{TARGET_SLOWDOWN_OBSERVER:.2f} the no-op observer: {verdict(met)}. "
                f"Exporting (Pipecat tracing off) {spread(alone, '{:.3f}')}; recording only "
                f"{spread(recording, '{:.3f}')} (the verdict uses the exporting one)."
                + (f" Floors, ÷ no-op: {'; '.join(floors)}." if floors else "")
                + ("" if met else f" Where the rest goes: {COST_NOTES}.")
            )
        return lines

    def realtime_runs(self, mode: str) -> list[fault_modes.Run]:
        return self.results.realtime.get(mode, [])

    def lag(self) -> list[str]:
        if "lag" not in self.args.only:
            return []
        lines = [
            "## Event-loop lag during a real-time call",
            "",
            "The offline bot's call in real time (`app.bot.run_offline_call` with "
            f"`create_offline_services({'a one-turn script' if self.sizes.quick_call else 'QUICK_SCRIPT'})`, "
            "as `bench/fault_modes.py` plays it), one fresh process per mode and repetition. A sampler task "
            f"sleeps {fault_modes.TICK_S * 1e3:g} ms in a loop; the lag is how late each wake-up comes, over the "
            "whole call and its shutdown. Percentiles per process, then `median [min–max]` over repetitions. "
            "Pipecat native: the same pipeline as `app.bot.run_conversation`, `enable_tracing=True`, "
            "a global `TracerProvider` with `BatchSpanProcessor(OTLPSpanExporter(...))` to the stand-in.",
            "",
            "| Mode | Lag p50 (ms) | p99 (ms) | max (ms) | Spans received |",
            "|---|---|---|---|---|",
        ]
        for mode in LAG_MODES:
            runs = self.realtime_runs(mode)
            received = [r.result["received_spans"] for r in runs if r.result["received_spans"] is not None]
            lines.append(
                f"| {REALTIME_LABELS[mode]} | {spread([r.pct(0.5) for r in runs])} "
                f"| {spread([r.pct(0.99) for r in runs])} | {spread([r.lags[-1] for r in runs], '{:.1f}')} "
                f"| {spread(received, '{:.0f}')} |"
            )
        traced = [(m, r) for m in (HEALTHY, HANGS) for r in self.realtime_runs(m)]
        if traced:
            worst_mode, worst = max(traced, key=lambda mr: mr[1].pct(0.99))
            self.reading.append(
                f"- Loop lag p99 < {TARGET_LAG_P99_MS:g} ms with tracing on, even with a hanging endpoint: "
                f"{verdict(worst.pct(0.99) < TARGET_LAG_P99_MS)}. Worst p99 of any repetition "
                f"{worst.pct(0.99):.2f} ms ({worst_mode}); medians: healthy "
                f"{statistics.median(r.pct(0.99) for r in self.realtime_runs(HEALTHY)):.2f} ms, hanging "
                f"{statistics.median(r.pct(0.99) for r in self.realtime_runs(HANGS)):.2f} ms, tracing off "
                f"{statistics.median(r.pct(0.99) for r in self.realtime_runs(OFF)):.2f} ms."
            )
        return lines

    def latency(self) -> list[str]:
        if "latency" not in self.args.only:
            return []
        s = self.sizes
        pairs = [
            *zip(self.realtime_runs(HEALTHY), self.realtime_runs(OFF), strict=False),
            *zip(self.results.latency[HEALTHY], self.results.latency[OFF], strict=False),
        ]
        diffs: list[float] = []
        on_all: list[float] = []
        off_all: list[float] = []
        for a, b in pairs:  # the same script and repetition
            for x, y in zip(a.result["v2v_s"] or [], b.result["v2v_s"] or [], strict=False):
                if x is not None and y is not None:
                    diffs.append((x - y) * 1e3)
                    on_all.append(x * 1e3)
                    off_all.append(y * 1e3)
        lines = [
            "## Voice-to-voice latency added",
            "",
            "Real-time calls with tracing on (README full configuration, healthy endpoint) and off, "
            f"interleaved: the loop lag's pair of each repetition and {s.latency_pairs} more pair(s) of the same "
            "call, in fresh processes. The difference is taken per turn (`summary.turns[i].voice_to_voice_s`, "
            "on minus off, the same turn of the same pair).",
            "",
            "| Pairs (turns × pairs of calls) | Off: median (ms) | On: median (ms) | Difference p50 (ms) "
            "| Difference p95 (ms) |",
            "|---|---|---|---|---|",
        ]
        if diffs:
            lines.append(
                f"| {len(diffs)} | {statistics.median(off_all):.1f} | {statistics.median(on_all):.1f} "
                f"| {statistics.median(diffs):+.2f} | {pct(diffs, 0.95):+.2f} |"
            )
            self.reading.append(
                f"- Added voice-to-voice latency < {TARGET_V2V_MS:g} ms at p50: "
                f"{verdict(statistics.median(diffs) < TARGET_V2V_MS)}. Difference p50 "
                f"{statistics.median(diffs):+.2f} ms, p95 {pct(diffs, 0.95):+.2f} ms over {len(diffs)} pairs."
            )
        else:
            lines.append("| 0 | — | — | — | — |")
        return lines

    def usage(self) -> list[str]:
        u = self.results.usage
        if u is None:
            return []
        shape = USAGE_SHAPE
        lines = [
            "## Cost per usage report on the loop",
            "",
            f"Calls of each size (the scripted call with {shape['user_s']:g} s of user speech, "
            f"{shape['bot_s']:g} s of bot speech and {shape['words']}-word replies per turn) are recorded once "
            "(the `FramePushed` events a once-per-frame observer gets), then replayed into a fresh exporting "
            "observer (`VoiceTracer` to the stand-in, inside `conversation()`), "
            f"{self.args.reps} time(s). Timed: each `on_push_frame` call whose frame is a `MetricsFrame` carrying "
            "LLM, TTS or STT usage (3 per turn); every other event is timed too (a unit is exported once its "
            "late metrics have had 500 ms of pipeline time, so on a later frame). The recording itself is "
            "kept out of the garbage collector's walks (`gc.freeze()`): a live call does not hold its frames. "
            "Values: `median [min–max]` over the replays; *p99, all replays*: over every usage report of every "
            "replay of that size.",
            "",
            "| Turns per call | Events | Usage reports | Mean (µs) | p99, all replays (µs) | p99 per replay (µs) "
            "| max (µs) | Other events: p99 (µs) | Other events: max (µs) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        worst = 0.0
        for turns, size in u["sizes"].items():
            reps = size["reps"]
            worst = max(worst, *(r["p99_us"] for r in reps))
            lines.append(
                f"| {turns} | {size['events']:,} | {size['usage_events']:,} "
                f"| {spread([r['mean_us'] for r in reps], '{:.1f}')} | {size['pooled_p99_us']:.1f} "
                f"| {spread([r['p99_us'] for r in reps], '{:.1f}')} "
                f"| {spread([r['max_us'] for r in reps], '{:.0f}')} "
                f"| {spread([r['other_p99_us'] for r in reps], '{:.1f}')} "
                f"| {spread([r['other_max_us'] for r in reps], '{:.0f}')} |"
            )
        means = ", ".join(
            f"{t} turns {statistics.median(r['mean_us'] for r in s['reps']):.0f} µs" for t, s in u["sizes"].items()
        )
        pooled = {t: s["pooled_p99_us"] for t, s in u["sizes"].items()}
        per_size = ", ".join(f"{t} turns {p99:.0f} µs" for t, p99 in pooled.items())
        self.reading.append(
            f"- ≤ {TARGET_USAGE_US:g} µs per usage report at p99: {verdict(max(pooled.values()) <= TARGET_USAGE_US)}. "
            f"p99 of every usage report of the {self.args.reps} replay(s), by call size: {per_size}; the worst "
            f"single replay's p99 {worst:.0f} µs (a 100-turn replay's p99 is its third-slowest report, which one "
            f"wait for the GIL behind a writing or exporting thread decides: up to Python's switch interval, "
            f"{sys.getswitchinterval() * 1e3:g} ms). Mean: {means}."
        )
        return lines

    def memory(self) -> list[str]:
        m = self.results.memory
        if m is None:
            return []
        rss = {int(k): v for k, v in m["rss_mb"].items()}
        first, last = min(rss), max(rss)
        growth = rss[last] - rss[first]
        per_call_kb = growth * 1024 / (last - first)
        lines = [
            "## Memory across calls",
            "",
            f"One process runs {last:,} sequential scripted calls ({self.sizes.memory_turns} turns each, the usage "
            "section's shape) under the README's full configuration, exporting to the stand-in; after the "
            "calls listed, `gc.collect()` then `VmRSS` of /proc/self/status. "
            f"{m['per_call_s'] * 1e3:.0f} ms per call on average.",
            "",
            "| After calls | " + " | ".join(f"{n:,}" for n in sorted(rss)) + " |",
            "|---|" + "---|" * len(rss),
            "| RSS (MB) | " + " | ".join(f"{rss[n]:.1f}" for n in sorted(rss)) + " |",
            "",
            f"Growth from call {first:,} to call {last:,}: {growth:+.1f} MB ({per_call_kb:+.1f} KB per call).",
        ]
        self.reading.append(
            f"- Flat memory across calls (≤ {TARGET_MEMORY_MB:g} MB of growth): {verdict(growth <= TARGET_MEMORY_MB)}. "
            f"RSS {rss[first]:.1f} MB after {first:,} calls, {rss[last]:.1f} MB after {last:,} "
            f"({growth:+.1f} MB, {per_call_kb:+.1f} KB per call)."
        )
        return lines

    def shutdown(self) -> list[str]:
        if "shutdown" not in self.args.only:
            return []
        timeout, flush = self.sizes.timeouts
        lines = [
            "## Shutdown",
            "",
            "The same real-time processes (`bench/fault_modes.py`'s child): from `runner.run()` returning to the "
            "end of `tracer.conversation()` (the final flush), and from there to the process's exit as the parent "
            f"sees it (the SDK's exit handlers included). `LANGFUSE_TIMEOUT={timeout:g}`, "
            f"`LANGFUSE_FLUSH_TIMEOUT={flush:g}`"
            + (" (the README's defaults)." if self.sizes.timeouts == README_TIMEOUTS else " (shortened for --smoke).")
            + " Spans: the summary's sent/spooled/dropped/pending.",
            "",
            "| Endpoint | End of call → end of `conversation()` (s) | → process exit (s) "
            "| Spans sent/spooled/dropped/pending |",
            "|---|---|---|---|",
        ]
        parts = []
        for mode, label in ((HEALTHY, "healthy"), (DOWN, "down (port closed)"), (HANGS, "hanging")):
            runs = self.realtime_runs(mode)
            if runs:
                parts.append(
                    f"{label} {statistics.median(r.result['conversation_exit_s'] for r in runs):.2f} s to the end "
                    f"of `conversation()`, {statistics.median(r.exit_after_conversation_s for r in runs):.2f} s more "
                    "to exit"
                )
            lines.append(
                f"| {label} | {spread([r.result['conversation_exit_s'] for r in runs])} "
                f"| {spread([r.exit_after_conversation_s for r in runs])} | {fault_modes._spans(runs)} |"
            )
        if parts:
            self.reading.append(
                f"- Shutdown (no target; `LANGFUSE_TIMEOUT={timeout:g}`, `LANGFUSE_FLUSH_TIMEOUT={flush:g}`): "
                + "; ".join(parts)
                + " (medians). A hanging endpoint costs one `LANGFUSE_TIMEOUT`, paid in the background when the "
                "call is longer than that (the exporter then pauses and spools: README, *Langfuse down or slow*), "
                "so the final flush does not wait for it again; a refused connection is retried by the SDK "
                "within `LANGFUSE_TIMEOUT` before its batch is spooled."
            )
        return lines

    def render(self) -> str:
        body: list[str] = []
        for section in (self.throughput, self.lag, self.latency, self.usage, self.memory, self.shutdown):
            if lines := section():
                body += [*lines, ""]
        head = [
            "# Benchmarks",
            "",
            "Generated by `python -m bench` (bench/__main__.py); do not edit by hand, run it again.",
            "",
            f"Machine: {machine()}.",
            "",
            f"Command: `{self.command}` (under `uv run --group bench`)"
            + (" (smoke sizes: not a measurement)." if self.args.smoke else f" ({self.args.reps} repetitions)."),
            "",
            "Every variant exports to the same local Langfuse stand-in (`tests/support/langfuse_server.py`, "
            "OTLP/HTTP on 127.0.0.1). Times are `median [min–max]` over repetitions.",
            "",
            "## Reading",
            "",
            *(self.reading or ["- No target measured."]),
        ]
        if self.results.problems:
            head += ["", "Problems seen during the run:", "", *(f"- {p}" for p in self.results.problems)]
        return "\n".join([*head, "", *body, *TAIL])


TAIL = [
    "## How to run",
    "",
    "```sh",
    "uv run --group bench python -m bench            # every section, 5 repetitions: about 18 minutes on 2 cores",
    "uv run --group bench python -m bench --smoke    # tiny sizes, 1 repetition, about 30 s (CI: tests/bench)",
    "uv run --group bench python -m bench --only throughput,lag --reps 3 --output /tmp/b.md",
    "```",
    "",
    "Sections: `throughput`, `lag`, `latency`, `usage`, `memory`, `shutdown` (`lag`, `latency` and `shutdown` "
    "share their real-time calls). `--group bench` installs openinference-instrumentation-pipecat; without it "
    "that row says *not installed*. Every child process runs without the developer's `LANGFUSE_*` and `OTEL_*` "
    "variables. The command exits with status 1 when a check failed (a tracer's summary with missing turns or "
    "units, an exporter that delivered no span, an incomplete final flush); the report then lists the problems.",
    "",
    "## Other commands",
    "",
    "- `uv run python -m bench.observer_overhead`: the scripted call in one process (no observer, no-op, "
    "recording, exporting), with tracemalloc peaks and a replay of every frame type.",
    "- `uv run python -m bench.fault_modes`: loop lag and shutdown under more endpoint failures "
    "(HTTP 503, 429, 401, slow), with `--attribute` to name the longest blocking section.",
    "- `uv run python -m bench.many_calls`: many concurrent offline calls in one process, tracing on vs off.",
    "- `uv run --group bench python -m bench.export_cost`: the throughput call with one part of the export "
    "path taken away at a time (writes, the writer thread, scores, the exporter); its findings are in "
    "docs/design/tracing-cost.md.",
    "",
    "## Limits",
    "",
    "- The scripted services push their metrics themselves and do not run Pipecat's traced service "
    "methods, so in the throughput section Pipecat's native tracing exports conversation and turn spans "
    "only; the real-time call (offline services) is where its service spans appear.",
    "- The stand-in decodes and keeps every span, but never is as slow as a real Langfuse over a network.",
    "- The memory section measures RSS, which the allocator may not give back: it bounds growth, it does "
    "not locate it.",
]


# -- Entry point ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition (CI; not a measurement)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md", help="report path")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5; 1 with --smoke)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return args
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(args.only) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    args.reps = args.reps or (1 if args.smoke else 5)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        from bench._fast import child

        return child(args.child)
    sizes = SMOKE if args.smoke else FULL
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    results = measure(args, sizes)
    text = Report(args, sizes, results, command.strip()).render()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    progress(f"wrote {args.output} in {time.perf_counter() - started:.0f} s")
    for problem in results.problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    return 1 if results.problems else 0


if __name__ == "__main__":
    sys.exit(main())
