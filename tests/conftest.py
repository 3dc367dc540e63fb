"""Shared test helpers: a clean Pyro state per test and a way to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyro
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Small models on a 2-core machine: one intra-op thread per process avoids oversubscription
# (measured: a 500-step linreg fit took 2.5 s with 1 thread, 28 s with the default under load).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
# bayesdl's per-user record of fitted code (workflows/trust.py) goes to a folder of this test
# session, inherited by the commands the tests start, never to the user's own ~/.local/state
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="bayesdl-test-state-")


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from a fixed seed. The param store is *not* cleared between tests:
    fits must own their parameters, as they do for a user who never clears it."""
    pyro.set_rng_seed(0)


def run_cli(
    *args: str, timeout: float = 600, check: bool = False, process: bool = False
) -> subprocess.CompletedProcess:
    """``bayesdl ARGS`` from the checkout's root; the finished command's status and output.

    By default through :func:`bayesdl.cli.main` in this process, which is what the console
    script runs (:mod:`bayesdl.__main__` adds only what a process has: signals, a closed pipe,
    the exit); its standard output and error are captured, and its warnings printed there as a
    fresh interpreter prints them (Python's default filters, each warning once per place).
    That saves the 3-5 s of CPU a fresh process spends importing torch and Pyro.
    ``process=True``: a fresh ``python -m bayesdl`` process (``timeout`` seconds at most)."""
    if process:
        proc = subprocess.run(
            [sys.executable, "-m", "bayesdl", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=dict(os.environ),
        )
    else:
        proc = _in_process([str(a) for a in args])
    if check and proc.returncode != 0:
        raise AssertionError(f"cli {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _in_process(argv: list[str]) -> subprocess.CompletedProcess:
    """:func:`bayesdl.cli.main` on ``argv`` in the root folder, as a finished process."""
    import contextlib
    import io
    import warnings

    from bayesdl import cli

    out, err = io.StringIO(), io.StringIO()

    def show(message, category, filename, lineno, file=None, line=None):
        err.write(warnings.formatwarning(message, category, filename, lineno, line))

    here = os.getcwd()
    threads = torch.get_num_threads()
    try:
        os.chdir(ROOT)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            warnings.resetwarnings()  # a fresh interpreter's filters (python -W default aside)
            for action, category in FRESH_FILTERS:
                warnings.simplefilter(action, category, append=True)
            warnings.showwarning = show
            try:
                code = cli.main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(here)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["bayesdl", *argv], code, out.getvalue(), err.getvalue())


#: a fresh interpreter's warning filters (``print(warnings.filters)`` in ``python -c``)
FRESH_FILTERS = [
    ("ignore", DeprecationWarning),
    ("ignore", PendingDeprecationWarning),
    ("ignore", ImportWarning),
    ("ignore", ResourceWarning),
]


@pytest.fixture
def cli():
    """The :func:`run_cli` helper as a fixture (in this process; ``process=True``: a fresh one)."""
    return run_cli


@pytest.fixture(scope="session")
def run_templates(tmp_path_factory):
    """Template runs fitted once per test process as the user (``folder_kit``): coin, coin2,
    a file model, the same by NUTS, ``bnn --net``. Tests tamper with copies only."""
    from folder_kit import make_templates

    return make_templates(tmp_path_factory.mktemp("run-templates"))
