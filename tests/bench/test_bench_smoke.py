"""``python -m bench --smoke`` runs every section and writes a report with every variant: no timing asserted."""

from __future__ import annotations

from pathlib import Path

from bench.__main__ import LAG_MODES, REALTIME_LABELS
from bench._fast import LABELS, THROUGHPUT_VARIANTS
from tests.bench._run import run_module

SECTIONS = (
    "## Reading",
    "## Throughput",
    "## Event-loop lag during a real-time call",
    "## Voice-to-voice latency added",
    "## Cost per usage report on the loop",
    "## Memory across calls",
    "## Shutdown",
)
TARGETS = (
    "Full configuration at least as fast as Pipecat's native tracing",
    "Our observer alone",
    "Added voice-to-voice latency",
    "Loop lag p99",
    "per usage report at p99",
    "Flat memory across calls",
)


def test_smoke_run_writes_every_section_and_variant(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    run_module("bench", "--smoke", "--output", str(report))
    text = report.read_text()
    for heading in SECTIONS:
        assert f"\n{heading}\n" in text, heading
    for target in TARGETS:
        assert target in text, target
    assert text.count("**MET**") + text.count("**NOT MET**") == len(TARGETS)
    for variant in THROUGHPUT_VARIANTS:
        assert f"| {LABELS[variant]} |" in text, variant
    for mode in LAG_MODES:
        assert f"| {REALTIME_LABELS[mode]} |" in text, mode
    for endpoint in ("healthy", "down (port closed)", "hanging"):
        assert f"| {endpoint} |" in text, endpoint
    for turns in ("2", "5", "10"):
        assert f"\n| {turns} | " in text, turns
    assert "Problems seen during the run" not in text
    assert "--smoke" in text
    assert "Machine:" in text
