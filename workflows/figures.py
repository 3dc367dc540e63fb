"""Matplotlib without a screen, and one way to save a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from bayesdl.inference import files
from bayesdl.inference.errors import UserError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, out: Path, name: str, replace: bool = True) -> str:
    """Save ``fig`` as ``out/name`` (PNG, 120 dpi; :func:`bayesdl.inference.files.write_with`:
    never through a link, an existing file replaced only if ``replace``), close it, return
    ``name``."""
    path = Path(out) / name
    try:
        fig.tight_layout()
        files.write_with(path, lambda f: fig.savefig(f, format="png", dpi=120), replace=replace)
    except files.Exists:
        raise UserError(f"{path} already exists: add --overwrite to replace it") from None
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return name


__all__ = ["plt", "save"]
