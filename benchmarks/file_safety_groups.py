"""The cases of the file-safety audit, by group (see ``benchmarks/file_safety_audit.py``):
importing the modules registers their cases, in this order."""

from __future__ import annotations

import file_safety_binary  # noqa: F401
import file_safety_code  # noqa: F401
import file_safety_reads  # noqa: F401
from file_safety_cases import CASES

ORDER = [
    "code from a folder",
    "writes through links",
    "replaced without --overwrite",
    "special files and limits",
    "wrong JSON types",
    "checkpoints",
    "npz files",
    "console script",
]
CASES.sort(key=lambda c: ORDER.index(c.group))  # stable: each group in its file's order

__all__ = ["CASES"]
