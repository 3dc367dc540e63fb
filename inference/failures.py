"""A training step that raises: one line that keeps the exception's message, the user's file
and line, and what is kept of the run.

A model or guide is the user's code and may raise anything at any step (a ``KeyError`` at step
31, a ``MemoryError`` as a batch grows). The loop turns such an exception into a
:class:`~bayesdl.inference.errors.UserError` (the original is its ``__cause__``, for a debugger):
``step 31 failed: KeyError: 'a' (/home/me/m.py, line 12, in model); the last checkpoint
(step 30) is kept in runs/m/checkpoint.pt``. The checkpoint on disk is never touched.
"""

from __future__ import annotations

import os
import sysconfig
import traceback
from pathlib import Path

import pyro
import torch

from bayesdl.inference.errors import UserError

#: bayesdl's own code (the repository root is the package): its frames are not the user's
_ROOT = Path(__file__).resolve().parents[1]
_ENGINE = tuple(str(_ROOT / d) + os.sep for d in ("inference", "workflows", "models", "guides"))
_LIBRARIES = tuple(
    {
        os.path.dirname(torch.__file__) + os.sep,
        os.path.dirname(pyro.__file__) + os.sep,
        *(sysconfig.get_paths()[k] + os.sep for k in ("stdlib", "purelib", "platlib")),
    }
)
_MESSAGE_CHARS = 400
#: torch's CUDA out-of-memory error (``torch.OutOfMemoryError`` since torch 2.5)
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def message(e: BaseException) -> str:
    """``Type: message`` on one line (its lines joined; Pyro's shape table left out)."""
    lines = []
    for line in str(e).splitlines():
        if line.strip().startswith("Trace Shapes:"):
            break
        if line.strip():
            lines.append(line.strip())
    text = "; ".join(lines)
    if len(text) > _MESSAGE_CHARS:
        text = text[: _MESSAGE_CHARS - 3].rstrip() + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def user_frame(e: BaseException) -> str | None:
    """``file, line N, in fn`` of the innermost frame of ``e`` outside torch, Pyro, Python's
    library and bayesdl's engine: where the user's code raised, or ``None``."""
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        name = frame.filename
        if name.startswith("<") or name.startswith(_LIBRARIES + _ENGINE):
            continue
        if Path(name).parent == _ROOT:  # bayesdl's top-level modules (api.py, fits/posterior.py)
            continue
        return f"{name}, line {frame.lineno}, in {frame.name}"
    return None


def _out_of_memory(e: BaseException) -> bool:
    """A Python ``MemoryError``, a CUDA out-of-memory error, or torch's CPU allocator failing."""
    if isinstance(e, MemoryError | _OOM):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def step_failure(e: Exception, step: int, kept: tuple[int, Path] | None, writes: bool) -> UserError:
    """The :class:`UserError` for ``e`` raised while taking step ``step + 1``.

    :param kept: the step and path of the run's last checkpoint on disk, if any.
    :param writes: whether the fit writes a run folder (else nothing is said of checkpoints).
    """
    if kept is not None:
        tail = f"; the last checkpoint (step {kept[0]}) is kept in {kept[1]}"
    else:
        tail = "; no checkpoint was written yet" if writes else ""
    if _out_of_memory(e):
        return UserError(
            f"step {step + 1} ran out of memory ({message(e)}): lower --batch-size or "
            f"--particles, or fit a smaller model{tail}"
        )
    where = user_frame(e)
    at = f" ({where})" if where else ""
    return UserError(f"step {step + 1} failed: {message(e)}{at}{tail}")
