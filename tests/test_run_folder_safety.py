"""Issue 12, item 1: loading a run folder, a checkpoint or a data file never runs code from it.

Checkpoints hold tensors and plain data and are read with ``weights_only=True``; ``config.json``
makes bayesdl import nothing for a built-in model and only the (absolute, sha256-checked) model
file of a user-model run; plugins are imported only when given again with ``--plugin``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from torch.distributions import transform_to, transforms

from bayesdl.inference import checkpoint as ckpt
from bayesdl.inference.errors import UserError

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

GAMMA_POISSON = '''
import pyro
import pyro.distributions as dist


def model(counts):
    """rate ~ Gamma(5, 0.5), counts_n ~ Poisson(rate)."""
    rate = pyro.sample("rate", dist.Gamma(5.0, 0.5))
    with pyro.plate("data", len(counts)):
        pyro.sample("obs", dist.Poisson(rate), obs=counts)
'''

# imported, it leaves a marker file: the proof that bayesdl ran it
EVIL = """
from pathlib import Path

Path({marker!r}).write_text("imported")


def model(counts):
    raise SystemExit("never called")
"""

PLUGIN = '''
import pyro
import pyro.distributions as dist
from bayesdl.workflows.registry import register
from bayesdl.workflows.user_model import UserModel


def model(counts):
    """rate ~ Gamma(5, 0.5), counts_n ~ Poisson(rate)."""
    rate = pyro.sample("rate", dist.Gamma(5.0, 0.5))
    with pyro.plate("data", len(counts)):
        pyro.sample("obs", dist.Poisson(rate), obs=counts)


@register
class SafetyPlugin(UserModel):
    name = "safety-plugin"
    model_fn = staticmethod(model)
'''


def bayesdl(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m bayesdl ARGS`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "bayesdl", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=600,
    )


def one_error_line(p: subprocess.CompletedProcess) -> str:
    """Exit status 2 and one line on stderr (no traceback); that line."""
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert err.startswith("bayesdl: error:") and "\n" not in err, err
    return err


class Payload:
    """Unpickled (``weights_only=False``), it creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def coin_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coin") / "run"
    p = bayesdl("fit", "coin", "--heads", 3, "--tails", 1, "--steps", 20, "--quiet", "--out", out)
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture
def run(coin_run, tmp_path) -> Path:
    """A fresh copy of the coin run, for a test to tamper with."""
    return Path(shutil.copytree(coin_run, tmp_path / "run"))


@pytest.fixture(scope="module")
def user_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A fitted user-model run: (run folder, model file, data file)."""
    d = tmp_path_factory.mktemp("user")
    f = d / "gp.py"
    f.write_text(GAMMA_POISSON)
    data = d / "counts.npz"
    np.savez(data, counts=np.random.default_rng(0).poisson(3.0, 20))
    out = d / "run"
    p = bayesdl("fit", f"{f}:model", "--data", data, "--steps", 20, "--quiet", "--out", out)
    assert p.returncode == 0, p.stderr
    return out, f, data


@pytest.fixture
def user_copy(user_run, tmp_path) -> tuple[Path, Path, Path]:
    """A copy of the user-model run and of its model file (config.json pointing at it)."""
    run, f, data = user_run
    run = Path(shutil.copytree(run, tmp_path / "run"))
    model = tmp_path / "gp.py"
    shutil.copy(f, model)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"] = f"{model}:model"
    cfg["args"]["model_file"] = str(model)
    if "model_file" in cfg:
        cfg["model_file"]["path"] = str(model)
    (run / "config.json").write_text(json.dumps(cfg))
    return run, model, data


def edit_config(run: Path, fn) -> None:
    cfg = json.loads((run / "config.json").read_text())
    fn(cfg)
    (run / "config.json").write_text(json.dumps(cfg))


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("kind", ["torch", "pickle"])
def test_a_crafted_checkpoint_runs_no_code(run, tmp_path, kind):
    # the payload is live: unpickled as bayesdl did before, it creates its marker
    control = tmp_path / "control-marker"
    torch.save({"x": Payload(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()

    marker = tmp_path / "marker"
    crafted = {"format": ckpt.FORMAT, "step": 10, "param_store": Payload(marker)}
    if kind == "torch":
        torch.save(crafted, run / "checkpoint.pt")
    else:  # a plain (legacy format) pickle
        with open(run / "checkpoint.pt", "wb") as f:
            pickle.dump(crafted, f)
    new = tmp_path / "new.npz"
    np.savez(new, flips=np.array([1, 0, 1]))
    commands = [
        ("evaluate", run),
        ("predict", run, "--input", new),
        ("sample", run),
        ("fit", "coin", "--heads", 3, "--tails", 1, "--steps", 40, "--quiet", "--resume"),
    ]
    for argv in commands:
        if argv[0] == "fit":
            argv = (*argv, "--out", run)
        err = one_error_line(bayesdl(*argv))
        assert not marker.exists(), argv
        assert str(run / "checkpoint.pt") in err and "older bayesdl" in err, err


def test_an_old_checkpoint_is_refused_in_one_line(tmp_path):
    # what bayesdl wrote before: constraint objects and numpy's RNG state, pickled
    path = tmp_path / "checkpoint.pt"
    torch.save(
        {
            "format": 1,
            "step": 5,
            "param_store": {
                "params": {"p": torch.zeros(2)},
                "constraints": {"p": constraints.positive},
            },
            "rng": {"numpy": np.random.get_state(), "python": random.getstate()},
        },
        path,
    )
    with pytest.raises(UserError, match="older bayesdl") as e:
        ckpt.load(path)
    assert "refit" in str(e.value) and "\n" not in str(e.value)
    torch.save({"format": 1, "step": 5}, path)  # plain data, but not this format
    with pytest.raises(UserError, match="older bayesdl"):
        ckpt.load(path)
    torch.save({"format": ckpt.FORMAT, "x": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(UserError, match="cannot read checkpoint") as e:
        ckpt.load(path)
    assert "\n" not in str(e.value)


def test_a_checkpoint_holds_only_plain_data(coin_run):
    state = torch.load(coin_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["format"] == ckpt.FORMAT and state["step"] == 20
    assert ckpt.load(coin_run / "checkpoint.pt")["step"] == 20


# ----------------------------------------------------------------------------- config.json


def test_a_builtin_run_imports_nothing_config_json_names(run, tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL.format(marker=str(marker)))

    def plant(cfg):
        cfg["args"]["plugin"] = [str(evil)]
        cfg["args"]["model_file"] = str(evil)
        cfg["args"]["model_function"] = "model"

    edit_config(run, plant)
    p = bayesdl("evaluate", run)
    assert p.returncode == 0, p.stderr
    assert not marker.exists()


def test_a_user_model_run_imports_only_its_model_file(user_run, tmp_path):
    run = Path(shutil.copytree(user_run[0], tmp_path / "run"))  # the model file stays put
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL.format(marker=str(marker)))
    edit_config(run, lambda cfg: cfg["args"].update(plugin=[str(evil)]))
    p = bayesdl("evaluate", run)
    assert p.returncode == 0, p.stderr
    assert not marker.exists()
    assert p.stderr.strip() == ""  # the model file is the one this user fitted: no warning

    # a model file named by a relative path (here: the evil file, next to the caller)
    def relative(cfg):
        cfg["model"] = "evil.py:model"
        cfg["args"]["model_file"] = "evil.py"

    edit_config(run, relative)
    err = one_error_line(bayesdl("evaluate", run, cwd=tmp_path))
    assert "relative path" in err and "evil.py" in err and "--model-file" in err
    assert not marker.exists()


def test_a_plugin_run_needs_plugin_again(tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    data = tmp_path / "counts.npz"
    np.savez(data, counts=np.random.default_rng(0).poisson(3.0, 20))
    out = tmp_path / "run"
    p = bayesdl(
        "fit", "safety-plugin", "--plugin", plugin, "--data", data, "--steps", 20, "--quiet",
        "--out", out,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    marker = tmp_path / "marker"
    plugin.write_text(PLUGIN + f"\nfrom pathlib import Path\nPath({str(marker)!r}).touch()\n")
    err = one_error_line(bayesdl("evaluate", out))
    assert not marker.exists()
    assert f"--plugin {plugin}" in err
    p = bayesdl("evaluate", out, "--plugin", plugin)  # the user's own choice
    assert p.returncode == 0, p.stderr
    assert marker.exists()


def test_fit_records_the_model_files_sha256(user_run):
    run, f, _ = user_run
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_file"]["path"] == str(f.resolve())
    assert cfg["model_file"]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()


def test_a_model_file_this_user_did_not_fit_is_imported_only_when_named(user_copy, tmp_path):
    # config.json names a copy of the model file, at a path this user never fitted: refused,
    # although its contents are the fitted ones (a checksum in the folder proves nothing)
    run, model, data = user_copy
    err = one_error_line(bayesdl("evaluate", run))
    assert str(model) in err and "not fitted" in err and "--model-file" in err, err
    # named again by the user: imported, silently (its sha256 is the one config.json records)
    p = bayesdl("evaluate", run, "--model-file", model)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    assert (run / "evaluation.json").exists()

    # changed since the fit: named again, it is loaded with a one-line warning
    model.write_text(model.read_text() + "\n# edited after the fit\n")
    new = tmp_path / "new.npz"
    np.savez(new, counts=np.array([1, 2, 3]))
    p = bayesdl("predict", run, "--input", new, "--model-file", model)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(model) in lines[0] and "not the one" in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_a_changed_model_file_of_ones_own_run_needs_naming_again(tmp_path):
    model = tmp_path / "gp.py"
    model.write_text(GAMMA_POISSON)
    data = tmp_path / "counts.npz"
    np.savez(data, counts=np.array([2, 3, 4, 1]))
    out = tmp_path / "run"
    p = bayesdl("fit", f"{model}:model", "--data", data, "--steps", 10, "--quiet", "--out", out)
    assert p.returncode == 0, p.stderr
    marker = tmp_path / "marker"
    model.write_text(EVIL.format(marker=str(marker)) + GAMMA_POISSON)  # changed after the fit
    err = one_error_line(bayesdl("evaluate", out))
    assert "changed since you fitted it" in err and "--model-file" in err, err
    assert not marker.exists()
    p = bayesdl("evaluate", out, "--model-file", model)  # the user's own choice
    assert p.returncode == 0, p.stderr
    assert marker.exists()


# ----------------------------------------------------------------------------- round trip


def constrained_model():
    pyro.sample("s", dist.HalfNormal(1.0))
    pyro.sample("p", dist.Beta(2.0, 3.0))
    pyro.sample("w", dist.Dirichlet(torch.ones(3)))
    pyro.sample("L", dist.LKJCholesky(3, 2.0))
    pyro.sample("u", dist.Uniform(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 2.0])).to_event(1))
    pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(0.3))


def extra_params():
    """Parameters with the constraints pyro.param users write."""
    pyro.param("gt", torch.tensor(3.0), constraint=constraints.greater_than(2.0))
    pyro.param("lt", torch.tensor(-3.0), constraint=constraints.less_than(1.0))
    pyro.param("ge", torch.tensor(2.5), constraint=constraints.greater_than_eq(2.0))
    pyro.param(
        "iv",
        torch.tensor([0.5, 1.5]),
        constraint=constraints.independent(
            constraints.interval(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])), 1
        ),
    )
    pyro.param("ord", torch.tensor([0.1, 0.5, 2.0]), constraint=constraints.ordered_vector)
    pyro.param(
        "pord", torch.tensor([0.1, 0.5, 2.0]), constraint=constraints.positive_ordered_vector
    )
    pyro.param("pd", torch.eye(2) * 2.0, constraint=constraints.positive_definite)
    pyro.param("lc", torch.eye(2), constraint=constraints.lower_cholesky)
    pyro.param("slc", torch.eye(2), constraint=constraints.softplus_lower_cholesky)


def _store() -> dict:
    store = pyro.get_param_store()
    return {
        k: (store._params[k].detach().clone(), store._constraints[k], v.detach().clone())
        for k, v in store.items()
    }


@pytest.mark.parametrize(
    "guide_cls", [AutoNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoDelta]
)
def test_checkpoint_round_trip_restores_parameters_and_constraints(tmp_path, guide_cls):
    pyro.clear_param_store()
    guide = guide_cls(constrained_model)
    svi = SVI(constrained_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(5):
        svi.step()
    extra_params()
    before = _store()
    medians = {k: v.detach().clone() for k, v in guide.median().items()}
    path = tmp_path / "checkpoint.pt"
    ckpt.save(path, {"step": 5, "param_store": ckpt.param_store_state(), "config": {"a": 1.0}})

    # into an empty store: every entry is created from its saved constraint
    pyro.clear_param_store()
    ckpt.load_param_store_state(ckpt.load(path)["param_store"], torch.device("cpu"))
    after = _store()
    assert after.keys() == before.keys()
    for k, (_, c, value) in before.items():
        c2 = after[k][1]
        assert type(c2) is type(c), k
        assert ckpt.encode_constraint(c2).keys() == ckpt.encode_constraint(c).keys(), k
        assert str(c2) == str(c), k
        assert torch.allclose(after[k][2], value, atol=1e-5), k
    for name in ("s", "p", "w", "L"):  # the site constraints (AutoDelta's locations)
        if f"AutoDelta.{name}" in before:
            assert before[f"AutoDelta.{name}"][1] is after[f"AutoDelta.{name}"][1]

    # into a store the guide made (as restore and --resume do): bit for bit
    pyro.clear_param_store()
    guide = guide_cls(constrained_model)
    guide()
    extra_params()
    ckpt.load_param_store_state(ckpt.load(path)["param_store"], torch.device("cpu"))
    after = _store()
    for k, (unconstrained, _, _) in before.items():
        assert torch.equal(after[k][0], unconstrained), k
    for k, v in guide.median().items():
        assert torch.equal(v, medians[k]), k


def test_every_named_constraint_round_trips():
    for name, c in ckpt._NAMED.items():
        d = ckpt.encode_constraint(c)
        assert d == {"name": ckpt._NAME_OF[id(c)]}, name
        assert ckpt.decode_constraint(d) is c
    made = [
        constraints.interval(-1.0, 3.0),
        constraints.half_open_interval(0.0, 1.0),
        constraints.integer_interval(0, 4),
        constraints.greater_than(torch.tensor([1.0, 2.0])),
        constraints.independent(constraints.positive, 2),
        constraints.cat([constraints.real, constraints.positive], dim=-1, lengths=[2, 3]),
        constraints.stack([constraints.real, constraints.unit_interval], dim=0),
        constraints.multinomial(5),
    ]
    for c in made:
        c2 = ckpt.decode_constraint(ckpt.encode_constraint(c))
        assert type(c2) is type(c) and str(c2) == str(c)
        assert ckpt.encode_constraint(c2).keys() == ckpt.encode_constraint(c).keys()


class _Odd(constraints.Constraint):
    """A user's constraint with an attribute that is not plain data."""

    def __init__(self):
        self.fn = lambda x: x
        super().__init__()

    def check(self, value):
        return value == value


transform_to.register(_Odd)(lambda c: transforms.identity_transform)


def test_unknown_constraints_never_fail_a_save_and_are_refused_at_load_only_if_needed(tmp_path):
    pyro.clear_param_store()
    pyro.param("odd", torch.ones(2), constraint=_Odd())
    state = ckpt.param_store_state()
    assert "unencodable" in state["constraints"]["odd"]
    ckpt.save(tmp_path / "c.pt", {"param_store": state})  # a fit never fails to checkpoint
    saved = ckpt.load(tmp_path / "c.pt")["param_store"]
    ckpt.load_param_store_state(saved, torch.device("cpu"))  # the entry exists: values copied
    pyro.clear_param_store()
    with pytest.raises(UserError, match="odd"):
        ckpt.load_param_store_state(saved, torch.device("cpu"))
    # names of classes are looked up, never imported, and must be constraints
    for cls in ("subprocess:Popen", "os:system", "nonexistent.module:Thing", "builtins:eval"):
        with pytest.raises(ValueError):
            ckpt.decode_constraint({"class": cls, "attrs": {}})
    assert "nonexistent" not in sys.modules


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(3)
    random.seed(4)
    np.random.seed(5)
    np.random.standard_normal()  # a cached Gaussian in numpy's state
    ckpt.save(tmp_path / "c.pt", {"rng": ckpt.rng_state()})
    expected = (torch.rand(3), random.random(), np.random.standard_normal(3))
    ckpt.set_rng_state(ckpt.load(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), random.random(), np.random.standard_normal(3))
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]
    assert np.array_equal(got[2], expected[2])
