"""What the run-folder safety tests share (issue 22): template runs fitted in this process as
the user would, copies to tamper with, planted code that leaves a marker when imported, and
``bayesdl`` commands in this process or in a real one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import bayesdl.cli as cli

GAMMA_POISSON = '''import pyro
import pyro.distributions as dist


def model(counts):
    """rate ~ Gamma(5, 0.5), counts_n ~ Poisson(rate)."""
    rate = pyro.sample("rate", dist.Gamma(5.0, 0.5))
    with pyro.plate("data", len(counts)):
        pyro.sample("obs", dist.Poisson(rate), obs=counts)
'''
NET = """from torch import nn


def make_net():
    return nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
"""
#: prepended to a planted file: importing it leaves the marker, the proof that bayesdl ran it
EVIL = "from pathlib import Path\nPath({marker!r}).write_text('imported')\n"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def main(capsys, *argv) -> tuple[int, str]:
    """``bayesdl ARGV`` in this process: its status and stderr (no traceback allowed)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out, err
    return code, err


def refused(capsys, *argv) -> str:
    """``bayesdl ARGV`` in this process ends with status 2 and one error line: that line."""
    code, err = main(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("bayesdl: error: "), err
    return lines[0]


def real(*argv, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m bayesdl ARGV`` in a fresh process (600 s only guard against a hang)."""
    return subprocess.run(
        [sys.executable, "-m", "bayesdl", *map(str, argv)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=600,
    )


def real_refused(*argv, cwd: Path | None = None) -> str:
    """:func:`real`, which must end with status 2 and one error line: that line."""
    p = real(*argv, cwd=cwd)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("bayesdl: error: ") and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def make_templates(root: Path, only: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Runs fitted here (so in this user's record of fitted code): ``coin``, ``coin2``,
    ``user`` (a file model), ``nuts`` (the same by NUTS), ``bnn`` (``--net
    code/net.py:make_net`` typed from ``root``), or ``only`` these; ``code/`` and ``data/``
    hold their files, ``new.npz``/``flips.npz`` inputs."""
    for d in ("code", "data", "runs"):
        (root / d).mkdir(parents=True)
    (root / "code" / "gp.py").write_text(GAMMA_POISSON)
    (root / "code" / "net.py").write_text(NET)
    np.savez(root / "data" / "counts.npz", counts=np.random.default_rng(0).poisson(3.0, 20))
    np.savez(root / "data" / "new.npz", counts=np.array([1, 2, 3]))
    np.savez(root / "data" / "flips.npz", flips=np.array([1, 0, 1]))
    gp = [f"{root / 'code' / 'gp.py'}:model", "--data", root / "data" / "counts.npz"]
    fits = {
        "coin": ["coin", "--heads", 3, "--tails", 1, "--steps", 20],
        "coin2": ["coin", "--heads", 5, "--tails", 2, "--steps", 20],
        "user": [*gp, "--steps", 20],
        "nuts": [*gp, "--inference", "nuts", "--samples", 30, "--warmup", 30, "--chains", 1],
        "bnn": ["bnn", "--net", "code/net.py:make_net", "--steps", 2, "--samples", 3],
    }
    fits = {k: v for k, v in fits.items() if only is None or k in only}
    old = os.getcwd()
    os.chdir(root)  # `--net code/net.py:make_net` as typed there
    try:
        for name, argv in fits.items():
            code = cli.main([str(a) for a in ["fit", *argv, "--quiet", "--out", f"runs/{name}"]])
            assert code == 0, name
    finally:
        os.chdir(old)
    return {name: root / "runs" / name for name in fits} | {"root": root}


def copy(run: Path, dest: Path) -> Path:
    """A copy of a run folder (links kept as links) to tamper with."""
    return Path(shutil.copytree(run, dest, symlinks=True))


def edit_config(run: Path, fn) -> None:
    path = run / "config.json"
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


def edit_checkpoint(run: Path, fn) -> None:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    fn(state)
    torch.save(state, run / "checkpoint.pt")


def plant(path: Path, marker: Path, body: str = GAMMA_POISSON) -> str:
    """Write code at ``path`` that leaves ``marker`` when imported; its sha256."""
    path.write_text(EVIL.format(marker=str(marker)) + body)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def name_model_file(run: Path, path: str, digest: str | None = None) -> None:
    """Make the user-model run ``run`` name the model file ``path`` (and its sha256)."""

    def edit(cfg):
        cfg["model"] = f"{path}:model"
        cfg["args"]["model_file"] = path
        cfg["model_file"] = {"path": path, "sha256": digest}

    edit_config(run, edit)


def link(path: Path, target: Path | str) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def fifo(path: Path) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
    os.mkfifo(path)


def tree(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (links not followed): kind, contents, mtime."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = os.lstat(p)
        if p.is_symlink():
            out[str(p)] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(p)] = ("file", p.read_bytes(), st.st_mtime_ns)
        else:
            out[str(p)] = ("other", st.st_mode)
    return out
