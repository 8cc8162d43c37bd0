"""``python -m bench.export_cost`` takes each part of the export path away, as the spans received show."""

from __future__ import annotations

from bench.export_cost import VARIANTS
from tests.bench._run import run_module


def test_smoke_run_reports_every_variant() -> None:
    done = run_module("bench.export_cost", "--reps", "1", "--calls", "1", "--turns", "2")
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| Variant")]
    cells = {row.split(" | ")[0].removeprefix("| "): row.removesuffix(" |").split(" | ") for row in rows}
    assert list(cells) == [label for _, _, label in VARIANTS]
    assert cells["no-op observer"][2] == "1.000"  # the reference of the ratios
    # Two calls per process (the warm-up and one timed), each a conversation span and 2 turns of a turn span
    # with three generations: 9 spans a call, 18 a process, unless the part taken away is what writes or sends them.
    spans = {label: int(cell[-1]) for label, cell in cells.items()}
    assert spans == {
        "no-op observer": 0,
        "Langfuse SDK alone: the same tree from a no-op observer": 18,
        "our observer, recording only": 0,
        "our observer, exporting": 18,
        "exporting, no observations written": 2,
        "exporting, written on the loop": 18,
        "exporting, no scores": 18,
        "exporting, no export": 0,
        "README full configuration": 18,
    }
