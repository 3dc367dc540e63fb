"""Matplotlib without a screen, and one way to save a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, out: Path, name: str) -> str:
    """Save ``fig`` as ``out/name`` (PNG, 120 dpi), close it, return ``name``."""
    fig.tight_layout()
    fig.savefig(Path(out) / name, dpi=120)
    plt.close(fig)
    return name


__all__ = ["plt", "save"]
