"""SIGINT and SIGTERM while fitting: stop at a clean point, save, say so in one line.

The command line (``bayesdl.__main__``) makes SIGTERM raise :class:`KeyboardInterrupt`, as
SIGINT does, from its first line on, so a signal at any moment ends the process with status
130 and one line, never by the signal (143) with nothing saved. Inside the training loop
:class:`StopFlag` turns both signals into a flag the loop reads between steps: the step in
progress finishes, the checkpoint is written, and :class:`Interrupted` says where.
:meth:`StopFlag.immediate` marks the long stretches that hold nothing to tear (capturing the
compiled step): a signal there stops them at once, and the loop saves the last whole step.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was saved at ``step``."""

    def __init__(self, step: int, path: Path | None):
        super().__init__(f"interrupted at step {step}")
        self.step, self.path = step, path


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop reads between steps (in the main thread;
    elsewhere signals are left alone)."""

    def __init__(self) -> None:
        self.raised: int | None = None
        self._old: dict = {}
        self._immediate = False

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):  # noqa: ARG002
        self.raised = signum
        if self._immediate:
            raise KeyboardInterrupt

    @contextmanager
    def immediate(self) -> Iterator[None]:
        """Inside, a signal (or one already flagged) raises :class:`KeyboardInterrupt` at once."""
        if self.raised is not None:
            raise KeyboardInterrupt
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def interrupted_line(out: Path | None, checkpoint: str) -> str:
    """What a fit interrupted outside its loop (start-up, data, NUTS, the summary) left in its
    run folder ``out``: its checkpoint, kept whole, or nothing (then whether the folder holds
    the run's options only, which a new fit into it must replace)."""
    if out is None or not Path(out).is_dir():
        return "interrupted; nothing was saved"
    if (Path(out) / checkpoint).is_file():
        return (
            f"interrupted; {Path(out) / checkpoint} is kept: rerun the command with --resume to "
            "continue"
        )
    if (Path(out) / "config.json").is_file():
        return (
            f"interrupted; nothing was fitted or saved ({out} holds only the run's options: "
            "rerun the command with --overwrite)"
        )
    return "interrupted; nothing was saved"
