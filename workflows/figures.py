"""Matplotlib without a screen, and one way to save a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from bayesdl.inference.errors import UserError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, out: Path, name: str) -> str:
    """Save ``fig`` as ``out/name`` (PNG, 120 dpi), close it, return ``name``."""
    path = Path(out) / name
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return name


__all__ = ["plt", "save"]
