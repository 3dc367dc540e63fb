"""The fitting time of a run folder over all the processes that made it.

A run that was stopped and resumed (``--resume``) restarts its clock: each process's
``metrics.jsonl`` rows count ``wall_seconds`` from its own start and ``summary.json`` holds the
last process's only. The processes' own records (a benchmark's ``parts.json``) are lost when a
process is killed before it writes them. The rows survive: a fall of ``wall_seconds`` marks a
new process, and the fitting time is the sum of each process's last row (the steps a killed
process took after its last checkpoint are counted too: they were paid for).
"""

from __future__ import annotations

import json
from pathlib import Path


def loop_seconds(run_dir: str | Path) -> tuple[float, int]:
    """``(seconds, processes)``: the fitting wall time summed over the processes of a run."""
    total, last, processes = 0.0, None, 0
    with open(Path(run_dir) / "metrics.jsonl") as f:
        for line in f:
            w = json.loads(line).get("wall_seconds")
            if w is None:
                continue
            if last is None or w < last:
                total += last or 0.0
                processes += 1
            last = w
    return total + (last or 0.0), processes
