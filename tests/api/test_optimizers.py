"""Own optimizers as a Pyro user passes them: a ``pyro.optim`` object, a torch optimizer class
with keywords, a scheduler; by name from the command line; recorded in ``config.json`` and
resumed with the run."""

from __future__ import annotations

import json

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch

import bayesdl
import bayesdl.cli as cli

N, SIGMA, PRIOR_SD = 20, 1.0, 10.0
Y = torch.tensor(
    [
        2.1,
        1.4,
        3.0,
        1.9,
        2.5,
        0.8,
        2.2,
        1.7,
        2.9,
        2.0,
        1.1,
        2.6,
        1.8,
        2.3,
        1.5,
        2.4,
        2.8,
        1.6,
        2.0,
        1.2,
    ]
)


def model(y=None):
    """mu ~ N(0, 10^2), y_n ~ N(mu, 1): the posterior of mu is Gaussian in closed form."""
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", N):
        pyro.sample("y", dist.Normal(mu, SIGMA), obs=y)


def exact():
    precision = 1 / PRIOR_SD**2 + N / SIGMA**2
    return float(Y.sum() / SIGMA**2 / precision), precision**-0.5


def _config(run):
    return json.loads((run / "config.json").read_text())["args"]


def _checkpoint(run):
    return torch.load(run / "checkpoint.pt", weights_only=True)


def _data(tmp_path):
    np.savez(tmp_path / "y.npz", y=Y.numpy())
    return ["--data", str(tmp_path / "y.npz")]


def _fit(**kw):
    kw.setdefault("steps", 1500)
    return bayesdl.fit(model, data={"y": Y}, guide="auto-normal", progress=False, seed=1, **kw)


def test_pyro_clipped_adam_fits_the_closed_form_and_is_recorded(tmp_path):
    opt = pyro.optim.ClippedAdam({"lr": 0.05, "clip_norm": 5.0, "lrd": 0.9995})
    post = _fit(optim=opt, out=tmp_path / "r", lr_schedule="constant", particles=16)
    mean, sd = exact()
    row = post.summary()["mu"]  # SVI's iterate noise: within 0.2 posterior sd, sd within 15 %
    assert abs(row["mean"] - mean) < 0.2 * sd and abs(row["std"] / sd - 1) < 0.15
    args = _config(tmp_path / "r")
    assert args["optimizer"] == "clipped-adam" and args["lr"] == 0.05
    assert args["optim_args"] == ["clip_norm=5.0", "lrd=0.9995"]
    group = _checkpoint(tmp_path / "r")["optimizer"]["param_groups"][0]
    # Pyro's ClippedAdam decays lr by lrd at every step: after 1500 steps lr * lrd^1500
    assert group["clip_norm"] == 5.0
    assert group["lr"] == pytest.approx(0.05 * 0.9995**1500, rel=1e-6)


def test_torch_class_with_keywords_keeps_its_own_defaults(tmp_path):
    _fit(
        optim=torch.optim.SGD,
        optim_args={"lr": 0.01, "momentum": 0.5},
        out=tmp_path / "a",
        steps=50,
    )
    group = _checkpoint(tmp_path / "a")["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0.5 and group["lr"] > 0
    assert _config(tmp_path / "a")["optim_args"] == ["momentum=0.5"]
    # torch.optim.SGD without momentum is torch's SGD (momentum 0), not bayesdl's "sgd" (0.9)
    _fit(optim=torch.optim.SGD, lr=0.01, out=tmp_path / "b", steps=50)
    assert _checkpoint(tmp_path / "b")["optimizer"]["param_groups"][0]["momentum"] == 0
    _fit(optimizer="sgd", lr=0.01, out=tmp_path / "c", steps=50)
    assert _checkpoint(tmp_path / "c")["optimizer"]["param_groups"][0]["momentum"] == 0.9


def test_scheduler_steps_every_step_and_resume_equals_uninterrupted(tmp_path):
    def sched():
        return pyro.optim.ExponentialLR(
            {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.1}, "gamma": 0.99}
        )

    whole = _fit(optim=sched(), steps=80, out=tmp_path / "whole", log_every=10)
    _fit(optim=sched(), steps=40, out=tmp_path / "part", log_every=10)
    resumed = _fit(optim=sched(), steps=80, out=tmp_path / "part", log_every=10, resume=True)
    assert resumed.summary()["mu"] == whole.summary()["mu"]
    for run in ("whole", "part"):
        state = _checkpoint(tmp_path / run)
        assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * 0.99**80)
        assert state["scheduler"]["last_epoch"] == 80
    args = _config(tmp_path / "part")
    assert args["scheduler"] == "ExponentialLR" and args["scheduler_args"] == ["gamma=0.99"]
    assert args["lr_schedule"] == "constant"  # the model's cosine gives way to the scheduler


class HalfAdam(torch.optim.Adam):
    """An optimizer of the user's own: no name a run folder can rebuild it from."""


def test_a_python_class_is_recorded_as_such_and_resumed_from_python_only(tmp_path, capsys):
    run = tmp_path / "own"
    _fit(optim=HalfAdam, lr=0.05, steps=40, out=run)
    assert _config(run)["optimizer"] == "python:HalfAdam"
    argv = ["fit", f"{__file__}:model", *_data(tmp_path), "--out", str(run), "--resume"]
    code = cli.main([*argv, "--steps", "80", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "python:HalfAdam" in err[0] and "optim=" in err[0]
    _fit(optim=HalfAdam, lr=0.05, steps=80, out=run, resume=True)
    state = _checkpoint(run)  # continued: Adam's moments count all 80 steps
    assert state["step"] == 80
    assert all(float(s["step"]) == 80 for s in state["optimizer"]["state"].values())


def test_bad_optimizers_are_one_line_errors(tmp_path, capsys):
    for bad, says in [
        (dict(optim="nosuch"), "unknown optimizer 'nosuch'"),
        (dict(optim=object()), "optim=: expected"),
        (dict(optim=torch.optim.Adam([torch.zeros(1, requires_grad=True)])), "pass its class"),
        (dict(optim="adam", optim_args={"nosuch": 1}), "nosuch"),
        (dict(scheduler="ReduceLROnPlateau"), "needs a metric"),
        (dict(scheduler="StepLR", scheduler_args={"step_size": 5}, steps="auto"), "--steps N"),
    ]:
        with pytest.raises(bayesdl.UserError, match=says):
            _fit(**bad)
    spec = f"{__file__}:model"
    for argv, says in [
        (["--optimizer", "nosuch"], "unknown optimizer"),
        (["--optim-arg", "betas"], "name=value"),
        (["--scheduler", "NoSuchLR", "--steps", "10"], "unknown scheduler"),
    ]:
        code = cli.main(["fit", spec, *_data(tmp_path), "--out", str(tmp_path / "x"), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and says in err[0], err


def test_cli_names_an_optimizer_and_a_scheduler(tmp_path, capsys):
    run = tmp_path / "cli"
    argv = ["fit", f"{__file__}:model", *_data(tmp_path), "--out", str(run), "--steps", "60"]
    argv += ["--quiet"]
    code = cli.main(
        [
            *argv,
            "--optimizer",
            "ClippedAdam",
            "--optim-arg",
            "clip_norm=2",
            "--lr",
            "0.05",
            "--scheduler",
            "steplr",
            "--scheduler-arg",
            "step_size=20",
            "--scheduler-arg",
            "gamma=0.5",
        ]
    )
    assert code == 0, capsys.readouterr().err
    args = _config(run)
    assert args["optimizer"] == "clipped-adam" and args["scheduler"] == "StepLR"
    assert args["optim_args"] == ["clip_norm=2"]
    group = _checkpoint(run)["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.05 * 0.5**3) and group["clip_norm"] == 2


def test_a_subclass_of_adam_is_never_compiled_as_adam():
    """--compile traces torch's own Adam / AdamW / SGD update; an optimizer of the user's own
    (a subclass may change step()) runs eagerly instead of as the parent's arithmetic."""
    from bayesdl.inference.compiled import Fallback, _optimizer_kind

    p = [torch.zeros(1, requires_grad=True)]
    assert _optimizer_kind(torch.optim.Adam(p)) == "adam"
    with pytest.raises(Fallback):
        _optimizer_kind(HalfAdam(p))
