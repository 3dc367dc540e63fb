"""What a fit did, as numbers: :class:`FitInfo`, ``post.fit_info`` -- the entries of
``summary.json`` about the run itself, typed, the same after :func:`bayesdl.load`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["FitInfo"]


def _real(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _flag(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


@dataclass(frozen=True)
class FitInfo:
    """The facts of one fit, read from its ``summary.json`` (``None`` where the run does not
    say: an old run, a NUTS run has no compile step).

    ``steps_per_second = steps / wall_seconds`` of the optimizer loop (VI; for NUTS, warm-up
    and sampling transitions of every chain over the sampling time).
    """

    method: str  #: "vi" or "nuts"
    steps: int | None  #: optimizer steps (NUTS: chains x (warmup + samples) transitions)
    wall_seconds: float | None
    steps_per_second: float | None
    compiled: bool | None  #: whether the step ran compiled (``--compile``)
    compile_seconds: float | None
    device: str | None
    converged: bool | None
    reliable: bool | None
    seed: int | None
    threads: int | None = None  #: torch threads the steps ran on (VI; chosen by size by default)

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> FitInfo:
        """The facts of ``summary.json``'s entries (values of other types read as ``None``)."""
        method = summary.get("method") or "vi"
        steps, wall = _count(summary.get("steps")), _real(summary.get("wall_seconds"))
        rate = _real(summary.get("steps_per_second"))
        if rate is None and method == "nuts" and steps and wall:
            rate = round(steps / wall, 2)
        device = summary.get("device")
        return cls(
            method=method if isinstance(method, str) else "vi",
            steps=steps,
            wall_seconds=wall,
            steps_per_second=None if rate is not None and math.isnan(rate) else rate,
            compiled=_flag(summary.get("compiled")) if method != "nuts" else False,
            compile_seconds=_real(summary.get("compile_seconds")),
            device=device if isinstance(device, str) else None,
            converged=_flag(summary.get("converged")),
            reliable=_flag(summary.get("reliable")),
            seed=_count(summary.get("seed")),
            threads=_count(summary.get("threads")),
        )
