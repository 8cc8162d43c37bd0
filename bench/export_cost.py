"""Where the exporting tracer's cost goes: the throughput call with one part of the export path taken away at a time.

``python -m bench`` gives the ratios; this finds their causes. Each variant runs
observer_overhead's scripted call (20 turns, as fast as the loop allows) in fresh processes,
interleaved over repetitions, and reports the median wall time of ``runner.run()``, the time spent
in the observers' ``on_push_frame`` and in the garbage collector, and the process's CPU time per
call (every thread, the final flush included), and the spans the stand-in received from that
process (the warm-up call included). The parts are taken away by patching, in the child only:

- ``no observations written``: ``ObservationWriter._submit`` drops its job (no SDK span is built);
- ``written on the loop``: the writer without its thread (``background=False``);
- ``no scores``: ``ScoreSender.add`` drops the score;
- ``no export``: ``SpoolingSpanExporter.export`` returns success without encoding or sending.

Run: ``uv run --group bench python -m bench.export_cost`` (``--help`` for repetitions and calls).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._fast import RESULT_PREFIX, Endpoint, Harness, _workload, run_call

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("noop", "", "no-op observer"),
    ("sdk", "", "Langfuse SDK alone: the same tree from a no-op observer"),
    ("recording", "", "our observer, recording only"),
    ("exporting", "", "our observer, exporting"),
    ("exporting", "nowrite", "exporting, no observations written"),
    ("exporting", "foreground", "exporting, written on the loop"),
    ("exporting", "noscores", "exporting, no scores"),
    ("exporting", "noexport", "exporting, no export"),
    ("full", "", "README full configuration"),
)


def _take_away(part: str) -> None:
    """Patch this (child) process so that ``part`` of the export path does nothing."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    from pipecat_langfuse import _langfuse, _scores, _spool

    if part == "nowrite":
        _langfuse.ObservationWriter._submit = lambda self, job: None  # type: ignore[method-assign]
    elif part == "foreground":
        init = _langfuse.ObservationWriter.__init__

        def foreground(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **{**kwargs, "background": False})

        _langfuse.ObservationWriter.__init__ = foreground  # type: ignore[method-assign]
    elif part == "noscores":
        _scores.ScoreSender.add = lambda self, score: None  # type: ignore[method-assign]
    elif part == "noexport":
        _spool.SpoolingSpanExporter.export = lambda self, spans: SpanExportResult.SUCCESS  # type: ignore[method-assign]
    elif part:
        raise ValueError(f"unknown part {part!r}")


async def _child(variant: str, part: str, calls: int, turns: int, endpoint: Endpoint) -> dict[str, Any]:
    from pipecat.workers.runner import WorkerRunner

    from bench.observer_overhead import NoOpObserver
    from pipecat_langfuse._observer import VoiceObserver

    _take_away(part)
    in_observers = [0.0]
    for cls in (VoiceObserver, NoOpObserver):
        handler = cls.on_push_frame

        def timed(handler: Any) -> Any:
            async def on_push_frame(self: Any, data: Any) -> None:
                start = time.perf_counter()
                await handler(self, data)
                in_observers[0] += time.perf_counter() - start

            return on_push_frame

        cls.on_push_frame = timed(handler)  # type: ignore[method-assign]
    run_s = [0.0]
    run = WorkerRunner.run

    async def timed_run(self: Any) -> None:
        start = time.perf_counter()
        try:
            await run(self)
        finally:
            run_s[0] = time.perf_counter() - start

    WorkerRunner.run = timed_run  # type: ignore[method-assign]
    in_gc = [0.0, 0.0]

    def collector(phase: str, info: Any) -> None:
        if phase == "start":
            in_gc[1] = time.perf_counter()
        else:
            in_gc[0] += time.perf_counter() - in_gc[1]

    harness = Harness(variant, endpoint)
    workload = _workload({"turns": turns})
    await run_call(harness, workload, "warm-up")
    gc.callbacks.append(collector)
    rows = []
    for i in range(calls):
        in_observers[0] = in_gc[0] = 0.0
        cpu = time.process_time()
        await run_call(harness, workload, f"call-{i}")
        rows.append((run_s[0], in_observers[0], in_gc[0], time.process_time() - cpu))
    harness.shutdown()
    return {key: statistics.median(row[i] for row in rows) * 1e3 for i, key in enumerate(("wall", "obs", "gc", "cpu"))}


def child(spec_json: str) -> int:
    """Entry point of one child process: one variant, its calls, one result line."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    spec = json.loads(spec_json)
    result = asyncio.run(
        _child(spec["variant"], spec["part"], spec["calls"], spec["turns"], Endpoint(**spec["endpoint"]))
    )
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per variant (default 3)")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per process (default 10)")
    parser.add_argument("--turns", type=int, default=20, help="turns per call (default 20)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    from bench.__main__ import child_env
    from bench._server import RemoteLangfuse

    results: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(VARIANTS))}
    with RemoteLangfuse() as server:
        endpoint = {"url": server.url, "public_key": server.public_key, "secret_key": server.secret_key}
        for rep in range(args.reps):
            for i, (variant, part, label) in enumerate(VARIANTS):
                spec = {
                    "variant": variant,
                    "part": part,
                    "calls": args.calls,
                    "turns": args.turns,
                    "endpoint": endpoint,
                }
                run_id = f"export-cost-{rep}-{i}-{uuid.uuid4().hex[:8]}"
                done = subprocess.run(
                    [sys.executable, "-m", "bench.export_cost", "--child", json.dumps(spec)],
                    env=child_env(run_id),
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
                lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
                if done.returncode != 0 or not lines:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                result = json.loads(lines[-1][len(RESULT_PREFIX) :])
                result["spans"] = sum(server.run_span_names(run_id).values())
                results[i].append(result)
                print(f"rep {rep + 1}/{args.reps} {label}: {results[i][-1]['wall']:.0f} ms", file=sys.stderr)
    noop = statistics.median(r["wall"] for r in results[0])
    print(
        f"Median over {args.reps} processes of each one's median over {args.calls} calls ({args.turns} turns each).\n"
    )
    print(
        "| Variant | Wall of `runner.run()` (ms) | × no-op | In `on_push_frame` (ms) | In GC (ms) "
        "| Process CPU per call (ms) | Spans received |"
    )
    print("|---|---|---|---|---|---|---|")
    for i, (_, _, label) in enumerate(VARIANTS):
        med = {k: statistics.median(r[k] for r in results[i]) for k in ("wall", "obs", "gc", "cpu")}
        print(
            f"| {label} | {med['wall']:.0f} | {med['wall'] / noop:.3f} | {med['obs']:.1f} | {med['gc']:.0f} "
            f"| {med['cpu']:.0f} | {statistics.median(r['spans'] for r in results[i]):.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
