"""The cases of ``benchmarks/file_safety_audit.py`` (see there): templates, a case folder, and
one short setup per case returning the command (a CLI argv list, or a Python callable)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import bayesdl
import bayesdl.cli as cli

GP = '''import pyro
import pyro.distributions as dist


def model(counts):
    """rate ~ Gamma(5, 0.5), counts_n ~ Poisson(rate)."""
    rate = pyro.sample("rate", dist.Gamma(5.0, 0.5))
    with pyro.plate("data", len(counts)):
        pyro.sample("obs", dist.Poisson(rate), obs=counts)
'''
NET = """from torch import nn


def make_net():
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
"""
# imported, it leaves a marker: the proof that bayesdl ran code a folder named
EVIL = "from pathlib import Path\nPath({marker!r}).write_text('imported')\n"
EVIL_GUIDE = "\n\ndef guide(counts):\n    pass\n"
HOLD = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n"
)
LONG = "x" * 300  # a path part over 255 bytes


def _fork(argv_or_fn, cwd: Path, state: Path) -> int:
    """``bayesdl ARGV`` (or a callable) in a forked child, quietly; its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(cwd)
            os.environ["XDG_STATE_HOME"] = str(state)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            if callable(argv_or_fn):
                argv_or_fn()
                code = 0
            else:
                code = cli.main([str(a) for a in argv_or_fn])
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _fit_from_python(templates: Path) -> None:
    spec = importlib.util.spec_from_file_location("pymodel", templates / "code" / "pymodel.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pymodel"] = module
    spec.loader.exec_module(module)
    counts = np.load(templates / "data" / "counts.npz")["counts"]
    post = bayesdl.fit(module.model, data={"counts": counts}, steps=20, progress=False)
    post.save(templates / "runs" / "py")


def make_templates(t: Path) -> None:
    """The runs every case starts from, fitted here as the user (``XDG_STATE_HOME=state``)."""
    for d in ("code", "data", "runs", "state"):
        (t / d).mkdir(parents=True)
    (t / "code" / "gp.py").write_text(GP)
    (t / "code" / "pymodel.py").write_text(GP)
    (t / "code" / "net.py").write_text(NET)
    np.savez(t / "data" / "counts.npz", counts=np.random.default_rng(0).poisson(3.0, 20))
    np.savez(t / "data" / "new.npz", counts=np.array([1, 2, 3]))
    np.savez(t / "data" / "flips.npz", flips=np.array([1, 0, 1]))
    quick = ["--steps", 20, "--quiet"]
    fits = {
        "coin": ["coin", "--heads", 3, "--tails", 1, *quick],
        "coin2": ["coin", "--heads", 5, "--tails", 2, *quick],
        "user": ["code/gp.py:model", "--data", "data/counts.npz", *quick],
        "nuts": [
            "code/gp.py:model",
            "--data",
            "data/counts.npz",
            "--inference",
            "nuts",
            "--samples",
            40,
            "--warmup",
            40,
            "--chains",
            1,
            "--quiet",
        ],  # fmt: skip
        "bnn": ["bnn", "--net", "code/net.py:make_net", "--steps", 3, "--samples", 5, "--quiet"],
    }
    for name, argv in fits.items():
        code = _fork(["fit", *argv, "--out", f"runs/{name}"], t, t / "state")
        assert code == 0, f"template {name} failed ({code})"
    assert _fork(lambda: _fit_from_python(t), t, t / "state") == 0, "template py failed"


class Box:
    """One case's folder: copies of template runs, victims outside them, a marker."""

    def __init__(self, root: Path, templates: Path):
        self.root, self.templates, self.cwd = root, templates, root
        self.marker = root / "MARKER"
        self.victims = root / "victim"
        self.victims.mkdir()
        (self.victims / "keep.txt").write_text("victim\n")
        self.allowed: list[Path] = []
        self.checks: list[Callable[[], str | None]] = []  # more harm a case looks for
        self.state = root / "state"
        self._holders: list[subprocess.Popen] = []

    # -- setting up

    def run(self, name: str, dest: str | None = None, allow: bool = True) -> Path:
        path = self.root / (dest or name)
        shutil.copytree(self.templates / "runs" / name, path, symlinks=True)
        if allow:
            self.allowed.append(path)
        return path

    def victim(self, name: str = "victim.txt", content: bytes = b"victim\n") -> Path:
        path = self.victims / name
        path.write_bytes(content)
        return path

    def evil(self, path: Path, body: str = GP) -> Path:
        path.write_text(EVIL.format(marker=str(self.marker)) + body)
        return path

    def fit(self, argv: list) -> None:
        assert _fork(["fit", *argv], self.cwd, self.state) == 0, argv

    def hold_lock(self, run: Path) -> None:
        p = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(run / ".bayesdl.lock")], stdout=subprocess.PIPE
        )
        assert p.stdout.readline().strip() == b"held"
        self._holders.append(p)

    def release(self) -> None:
        for p in self._holders:
            p.kill()
            p.wait()

    # -- checking

    def snapshot(self) -> dict[str, str]:
        """Everything outside the allowed folders (and the templates' code and data)."""
        skip = {self.root / n for n in ("stdout", "stderr", "state", "MARKER")} | set(self.allowed)
        out = {}
        roots = [(self.root, "")] + [(self.templates / d, f"T/{d}/") for d in ("code", "data")]
        for base, prefix in roots:
            for p in sorted(base.rglob("*")):
                if p in skip or any(a in p.parents for a in skip):
                    continue
                out[prefix + str(p.relative_to(base))] = _describe(p)
        return out


def _describe(p: Path) -> str:
    if p.is_symlink():
        return "link -> " + os.readlink(p)
    st = os.lstat(p)
    if p.is_dir():
        return "dir"
    if not p.is_file():
        return f"special {st.st_mode:o}"
    return hashlib.sha256(p.read_bytes()).hexdigest()


@dataclass
class Case:
    name: str
    group: str
    expect: str  # "refuse" (status 2, one line) or "ok" (status 0)
    setup: Callable[[Box], list | Callable]
    timeout: float = 60.0
    silent: bool = False  # status 0 would be a silently wrong answer (NaN, prior draws...)


CASES: list[Case] = []


def case(group: str, expect: str, silent: bool = False):
    """Register the decorated setup as a case named like it (a console-script case, which
    starts a fresh process, may take 300 s before it counts as hanging; the others 60 s)."""

    def add(fn):
        timeout = 300.0 if group == "console script" else 60.0
        name = fn.__name__.replace("_", "-")
        CASES.append(Case(name, group, expect, fn, timeout=timeout, silent=silent))
        return fn

    return add


# ----------------------------------------------------------------------------- helpers


def edit(path: Path, fn) -> None:
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


def link(path: Path, target: Path | str) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def fifo(path: Path) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
    os.mkfifo(path)


def edit_ckpt(run: Path, fn) -> None:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    fn(state)
    torch.save(state, run / "checkpoint.pt")


def params(state: dict) -> dict:
    return state["param_store"]["params"]


def npz_with(path: Path, extra: dict[str, bytes], arrays: dict | None = None) -> None:
    """An ``.npz`` of ``arrays`` plus raw members ``extra`` (not ``.npy``)."""
    with open(path, "wb") as f:
        np.savez(f, **(arrays or {}))
    with zipfile.ZipFile(path, "a") as z:
        for name, data in extra.items():
            z.writestr(name, data)


def huge_npy_member(path: Path, name: str) -> None:
    """An ``.npz`` whose member ``name`` claims 10**11 float64 values and holds 64 bytes."""
    text = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }"
    text = text.ljust(118) + "\n"
    header = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.npy", header + b"\x00" * 64)


def evaluate(run: Path) -> list:
    return ["evaluate", run]


def resume(box: Box, run: Path, model: str = "coin") -> list:
    """``fit ... --resume`` of a copy of the coin or the user-model template run."""
    if model == "coin":
        argv = ["coin", "--heads", 3, "--tails", 1]
    else:  # as the template was fitted: from its folder, the spec as typed
        box.cwd = box.templates
        argv = ["code/gp.py:model", "--data", "data/counts.npz"]
    return ["fit", *argv, "--steps", 30, "--quiet", "--resume", "--out", run]


def load(run: Path, show=True, **kw) -> Callable:
    def go():
        post = bayesdl.load(run, **kw)
        if show:
            print(post)

    return go


def unchanged(box: Box, path: Path) -> None:
    """Harm if ``path`` (inside an allowed folder) is replaced or changed."""
    before = _describe(path)
    box.checks.append(lambda: None if _describe(path) == before else f"{path.name} changed")
