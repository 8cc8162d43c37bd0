"""Event-loop lag of a real-time offline call while Langfuse misbehaves, mode by mode.

For each mode (tracing off as the baseline, a healthy Langfuse, one that refuses connections, one
that hangs, answers HTTP 503, 429 with ``Retry-After``, 401, or takes 2 s per request) a fresh
process plays the offline bot's call in real time (``app.offline`` services through
``app.bot.run_offline_call``, the quick script) with tracing to a local Langfuse stand-in on
127.0.0.1 in that mode. The stand-in runs in this (parent) process, so its work does not load the
call's process. Inside the call's process a sampler task sleeps 5 ms in a loop and records how
late each wake-up is: the event loop's lag. The child also reports the call's summary (compared
with the healthy call's: turns, bot texts, interruptions, usage and cost per model), what happened
to the spans (sent, spooled, dropped, pending), the time from the end of ``runner.run()`` to the
end of ``tracer.conversation()`` (the final flush), and the time from there to the process exit.
With ``--attribute`` a watchdog thread also samples the event loop's stack whenever it is more
than 5 ms late, to name the longest blocking section.

Every (mode, repetition) is its own process: the SDK's client singleton, the global tracer
provider and the exporter's pause after a failure start clean. Repetitions are interleaved
across modes, with a rotating order. Each run gets its own spool folder, ``LANGFUSE_TIMEOUT=2``
(5 for *slow*, so that a 2 s answer is slow rather than a timeout) and ``LANGFUSE_FLUSH_TIMEOUT=5``.

``python -m bench`` also runs this child for Pipecat's native tracing alone (``NATIVE``: no
tracer of ours, Pipecat's spans over OTLP/HTTP to the stand-in) and reads each turn's
voice-to-voice latency from the child's result.

Run: ``uv run python -m bench.fault_modes`` (3 repetitions, about 6 minutes on 2 cores);
``--quick`` plays one repetition of a one-turn call (a smoke test, under a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

SECRET_KEY = "sk-lf-bench-fault-modes"
PUBLIC_KEY = "pk-lf-bench-fault-modes"
TICK_S = 0.005
"""The sampler's sleep: lag is how much later than this each wake-up comes."""
RESULT_PREFIX = "FAULT-MODES-RESULT "
TIMEOUT_S = 2
SLOW_TIMEOUT_S = 5
FLUSH_TIMEOUT_S = 5
TARGET_P99_MS = 5.0

MODES: dict[str, dict[str, Any]] = {
    "tracing off (baseline)": {},
    "healthy": {},
    "refuses connections": {},
    "hangs": {"hang_s": 30},
    "HTTP 503": {"otlp_status": 503},
    "HTTP 429 (Retry-After 30)": {"otlp_status": 429, "retry_after": "30"},
    "HTTP 401": {"otlp_status": 401},
    "slow (2 s per request)": {"hang_s": 2},
}
NATIVE = "Pipecat native tracing"
"""Not a fault mode: Pipecat's own tracing alone (``python -m bench`` compares its loop lag), no tracer of ours."""
OFF, HEALTHY, REFUSES, SLOW = (
    "tracing off (baseline)",
    "healthy",
    "refuses connections",
    "slow (2 s per request)",
)


# --------------------------------------------------------------------------------------------
# The child: one call in real time, with a lag sampler.
# --------------------------------------------------------------------------------------------


class _Watchdog(threading.Thread):
    """Samples the event loop thread's stack whenever the loop is more than ``threshold_s`` late."""

    def __init__(self, loop_thread_id: int, threshold_s: float = 0.005) -> None:
        super().__init__(name="bench-watchdog", daemon=True)
        self.loop_thread_id = loop_thread_id
        self.threshold_s = threshold_s
        self.expected_wake = 0.0  # perf_counter time the sampler should wake at; 0: not waiting
        self.episodes: dict[float, list[tuple[str, ...]]] = {}  # late wake-up -> stacks sampled meanwhile
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.001):
            expected = self.expected_wake
            if expected and time.perf_counter() - expected > self.threshold_s:
                frame = sys._current_frames().get(self.loop_thread_id)
                if frame is None:
                    continue
                frames = [f for f in traceback.extract_stack(frame) if not f.filename.startswith("<frozen")]
                stack = tuple(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in frames[-6:])
                self.episodes.setdefault(expected, []).append(stack)


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            return path.split(marker)[-1] if marker == "site-packages/" else "python3." + path.split(marker)[-1]
    return os.path.relpath(path)


async def _sample_lag(lags: list[tuple[float, float]], stop: asyncio.Event, watchdog: _Watchdog | None) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        if watchdog is not None:
            watchdog.expected_wake = before + TICK_S
        await asyncio.sleep(TICK_S)
        woke = time.perf_counter()
        if watchdog is not None:
            watchdog.expected_wake = 0.0
        lags.append((woke, (woke - before - TICK_S) * 1000))


def _child(mode: str, quick: bool, attribute: bool) -> int:
    from loguru import logger

    import app.bot
    from app.offline import QUICK_SCRIPT, CallerScript, Utterance, create_offline_services
    from pipecat_langfuse import PriceTable, TracingSettings, VoiceTracer

    warnings: list[str] = []
    logger.remove()
    logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING", diagnose=False)

    marks: dict[str, float] = {}

    class TimedRunner(app.bot.WorkerRunner):  # type: ignore[misc, name-defined]
        """Records when ``run()`` returns: the end of the call, before ``conversation()`` exits."""

        async def run(self) -> None:
            try:
                await super().run()
            finally:
                marks["run_returned"] = time.perf_counter()

    app.bot.WorkerRunner = TimedRunner  # type: ignore[attr-defined]  # bench-only instrumentation

    script = QUICK_SCRIPT
    if os.environ.get("BENCH_SCRIPT") == "default":
        from app.offline import DEFAULT_SCRIPT

        script = DEFAULT_SCRIPT
    if quick:
        script = CallerScript(utterances=(Utterance("Hi?", delay_secs=0.2),), replies=("Yes.",), hangup_delay_secs=0.2)
    settings = TracingSettings.from_env()
    tracer = VoiceTracer(settings, prices=PriceTable.load(settings.pricing_file), conversation_id="bench-fault-modes")

    watchdog = _Watchdog(threading.get_ident()) if attribute else None
    services = create_offline_services(script)  # before the sampler: it imports the LLM adapter (~0.5 s)

    async def main() -> Any:
        lags: list[tuple[float, float]] = []
        stop = asyncio.Event()
        if watchdog is not None:
            watchdog.start()
        sampler = asyncio.create_task(_sample_lag(lags, stop, watchdog))
        await asyncio.sleep(0.1)  # let the sampler settle
        marks["call_started"] = time.perf_counter()
        if mode == NATIVE:
            summary = await _native_call(services, marks)
        else:
            summary = await app.bot.run_offline_call(services, tracer)
        marks["conversation_exited"] = time.perf_counter()
        await asyncio.sleep(0.1)
        stop.set()
        await sampler
        if watchdog is not None:
            watchdog.stop.set()
        return summary, lags

    summary, lags = asyncio.run(main())
    call = [lag for at, lag in lags if marks["call_started"] <= at <= marks["run_returned"]]
    exit_ = [lag for at, lag in lags if at > marks["run_returned"]]
    blocking = None
    if watchdog is not None and watchdog.episodes:
        # The longest section, named by the stack seen most often while it lasted.
        stacks = max(watchdog.episodes.values(), key=len)
        top = max(set(stacks), key=stacks.count)
        blocking = {
            "sections_over_5ms": len(watchdog.episodes),
            "longest_ms": 5 + len(stacks),  # ~1 ms per sample after the first 5 ms
            "stack": list(top),
        }
    result = {
        "mode": mode,
        "lag_ms": [lag for _, lag in lags],
        "v2v_s": None if summary is None else [t.voice_to_voice_s for t in summary.turns],
        "lag_call_max_ms": max(call) if call else None,
        "lag_exit_max_ms": max(exit_) if exit_ else None,
        "call_s": marks["run_returned"] - marks["call_started"],
        "conversation_exit_s": marks["conversation_exited"] - marks["run_returned"],
        "flushed": tracer.flushed if summary is not None else marks.get("flushed"),
        "spans": None if summary is None or summary.spans is None else vars(summary.spans),
        "conversation": None
        if summary is None
        else {
            "turns": [[t.number, t.user_text, t.bot_text, t.interrupted] for t in summary.turns],
            "models": [[m.kind, m.model, dict(m.usage), m.cost_usd, m.calls] for m in summary.models],
        },
        "warnings": [w.split("\n")[0][:160] for w in warnings],
        "blocking": blocking,
        "done_at": time.time(),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


async def _native_call(services: Any, marks: dict[str, Any]) -> None:
    """The offline call as ``app.bot.run_conversation`` builds it, traced by Pipecat alone to the stand-in."""
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair

    import app.bot
    from bench._fast import Endpoint, otlp_provider

    endpoint = Endpoint(os.environ["LANGFUSE_BASE_URL"], os.environ["LANGFUSE_PUBLIC_KEY"], SECRET_KEY)
    provider = otlp_provider(endpoint, install_global=True)
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(LLMContext(), user_params=services.user_params)
    transport, stt, llm, tts = services.transport, services.stt, services.llm, services.tts
    pipeline = Pipeline([transport.input(), stt, user_aggregator, llm, tts, transport.output(), assistant_aggregator])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True, send_initial_empty_metrics=False),
        enable_tracing=True,
        conversation_id="bench-native",
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    runner = app.bot.WorkerRunner(handle_sigint=False)  # type: ignore[attr-defined]
    await runner.add_workers(worker)
    await runner.run()
    marks["flushed"] = await asyncio.to_thread(provider.force_flush)  # off the loop, as our tracer flushes


# --------------------------------------------------------------------------------------------
# The parent: the stand-in servers, the processes, the report.
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str
    rep: int
    result: dict[str, Any]
    process_s: float
    exit_after_conversation_s: float
    same_conversation: bool | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def lags(self) -> list[float]:
        return sorted(self.result["lag_ms"])

    def pct(self, q: float) -> float:
        lags = self.lags
        return lags[min(int(len(lags) * q), len(lags) - 1)]


def _run_one(
    mode: str,
    rep: int,
    quick: bool,
    attribute: bool,
    *,
    timeouts: tuple[int, int] | None = (TIMEOUT_S, FLUSH_TIMEOUT_S),
    script: str = "quick",
) -> Run:
    """One call in a child process; ``timeouts``: LANGFUSE_TIMEOUT and LANGFUSE_FLUSH_TIMEOUT (None: the defaults)."""
    from tests.support.langfuse_server import LocalLangfuse

    server = None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OTEL_"))}
    env.pop("ENABLE_TRACING", None)
    spool = tempfile.mkdtemp(prefix="bench-fault-spool-")
    if mode == OFF:
        env["ENABLE_TRACING"] = "false"
    else:
        server = LocalLangfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY, **MODES.get(mode, {})).start()
        # A client that gave up (timeout, process exit) makes the stand-in's answer a broken pipe: not news.
        server._server.handle_error = lambda *_: None  # type: ignore[method-assign, union-attr]
        url = server.url
        if mode == REFUSES:
            server.go_down()
        env.update(
            ENABLE_TRACING="true",
            LANGFUSE_PUBLIC_KEY=PUBLIC_KEY,
            LANGFUSE_SECRET_KEY=SECRET_KEY,
            LANGFUSE_BASE_URL=url,
            LANGFUSE_SPOOL_DIR=spool,
        )
        if timeouts is not None:
            env["LANGFUSE_TIMEOUT"] = str(SLOW_TIMEOUT_S if mode == SLOW else timeouts[0])
            env["LANGFUSE_FLUSH_TIMEOUT"] = str(timeouts[1])
    if mode == NATIVE:
        env["ENABLE_TRACING"] = "false"  # no tracer of ours; the child installs Pipecat's exporter itself
    env["BENCH_SCRIPT"] = script
    command = [sys.executable, "-m", "bench.fault_modes", "--child", mode]
    if quick:
        command.append("--quick")
    if attribute:
        command.append("--attribute")
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    finally:
        ended_wall = time.time()
        received = None
        if server is not None:
            with server._lock:
                received = len(server.spans)
            server.stop()
        shutil.rmtree(spool, ignore_errors=True)
    process_s = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{mode}: child exited {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    if SECRET_KEY in done.stdout + done.stderr:
        raise RuntimeError(f"{mode}: the secret key appeared in the child's output")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["received_spans"] = received
    return Run(mode, rep, result, process_s, ended_wall - result["done_at"])


def _fmt(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def _spans(runs: Sequence[Run]) -> str:
    counts = {json.dumps(r.result["spans"], sort_keys=True) for r in runs}
    if counts == {"null"}:
        return "—"
    parts = []
    for text in sorted(counts):
        spans = json.loads(text)
        parts.append("/".join(str(spans[k]) for k in ("sent", "spooled", "dropped", "pending")))
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=3, help="repetitions per mode, interleaved (3)")
    parser.add_argument("--quick", action="store_true", help="one repetition of a one-turn call (smoke test)")
    parser.add_argument("--attribute", action="store_true", help="sample the loop's stack when it is > 5 ms late")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), help="only these modes (and healthy)")
    parser.add_argument("--child", choices=[*MODES, NATIVE], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.quick, args.attribute)

    reps = 1 if args.quick else args.reps
    modes = list(MODES) if not args.modes else [m for m in MODES if m in args.modes or m == HEALTHY]
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}, pipecat-ai {version('pipecat-ai')}, langfuse {version('langfuse')}; "
        f"reps {reps}{' (quick: one-turn call)' if args.quick else ''}",
        flush=True,
    )
    runs: list[Run] = []
    errors = 0
    for rep in range(reps):
        order = modes[rep % len(modes) :] + modes[: rep % len(modes)]
        for mode in order:
            run = _run_one(mode, rep, args.quick, args.attribute)
            runs.append(run)
            r = run.result
            print(
                f"rep {rep} {mode:<26} call {r['call_s']:5.1f}s lag p50 {run.pct(0.5):5.2f} p99 {run.pct(0.99):5.2f} "
                f"max {run.lags[-1]:6.2f} ms (call {r['lag_call_max_ms']:.1f}, exit {r['lag_exit_max_ms']:.1f}); "
                f"conversation exit {r['conversation_exit_s']:.2f}s, "
                f"process exit {run.exit_after_conversation_s:.2f}s; "
                f"spans {r['spans']}; flushed {r['flushed']}; warnings {len(r['warnings'])}",
                flush=True,
            )
            if r["blocking"]:
                print(f"    blocking: {r['blocking']}", flush=True)
    # The conversation must be the healthy one (of the same repetition).
    for run in runs:
        healthy = next(h for h in runs if h.mode == HEALTHY and h.rep == run.rep)
        if run.result["conversation"] is None:
            continue  # Pipecat's native tracing keeps no summary
        run.same_conversation = run.result["conversation"] == healthy.result["conversation"]
        if not run.same_conversation:
            errors += 1
            print(f"ERROR: {run.mode} rep {run.rep}: conversation differs from the healthy one", flush=True)
            print(f"    got      {run.result['conversation']}\n    expected {healthy.result['conversation']}")
    print()
    print(
        "| Mode | Same conversation as healthy | Loop lag p50 (ms) | p99 (ms) | max (ms) "
        "| Spans sent/spooled/dropped/pending | End of call → end of `conversation()` (s) "
        "| → process exit (s) | Warnings |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        mine = [r for r in runs if r.mode == mode]
        same = sum(1 for r in mine if r.same_conversation)
        print(
            f"| {mode} | {same}/{len(mine)} | {_fmt([r.pct(0.5) for r in mine], 2)} "
            f"| {_fmt([r.pct(0.99) for r in mine], 2)} | {_fmt([r.lags[-1] for r in mine])} | {_spans(mine)} "
            f"| {_fmt([r.result['conversation_exit_s'] for r in mine], 2)} "
            f"| {_fmt([r.exit_after_conversation_s for r in mine], 2)} "
            f"| {statistics.median([len(r.result['warnings']) for r in mine]):g} |"
        )
    print()
    for mode in modes:
        first = next(r for r in runs if r.mode == mode)
        for warning in dict.fromkeys(first.result["warnings"]):
            print(f"{mode}: {warning}")
    traced = [r for r in runs if r.mode != OFF]
    worst = max(traced, key=lambda r: r.pct(0.99)) if traced else None
    if worst is not None:
        met = worst.pct(0.99) < TARGET_P99_MS
        print(
            f"\nTarget loop lag p99 < {TARGET_P99_MS:g} ms with tracing on: {'MET' if met else 'NOT MET'} "
            f"(worst p99 {worst.pct(0.99):.2f} ms: {worst.mode}, rep {worst.rep})"
        )
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
