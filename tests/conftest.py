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


def run_cli(*args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m bayesdl ARGS`` as a user would; returns the finished process."""
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "bayesdl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"cli {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def cli():
    """The :func:`run_cli` helper as a fixture."""
    return run_cli


@pytest.fixture(scope="session")
def run_templates(tmp_path_factory):
    """Template runs fitted once per test process as the user (``folder_kit``): coin, coin2,
    a file model, the same by NUTS, ``bnn --net``. Tests tamper with copies only."""
    from folder_kit import make_templates

    return make_templates(tmp_path_factory.mktemp("run-templates"))
