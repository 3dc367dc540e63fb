"""Compiled SVI (``--compile``): the same fit as eager steps, at compiled speed.

Most tests replay the traced graph uncompiled (``backend="fx"``: the same aten graph Inductor
compiles, without its compile time); the linear-regression test compiles with Inductor.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

import bayesdl.cli as cli
import bayesdl.guides.coin as coin_guides
import bayesdl.guides.linear_regression as lr_guides
import bayesdl.models.coin as coin
import bayesdl.models.linear_regression as linreg
from bayesdl.datasets.bundled import diabetes
from bayesdl.inference import FitConfig, fit
from bayesdl.inference import compiled as compiled_mod
from bayesdl.inference.train import Interrupted, Trainer
from bayesdl.workflows.coin import Coin
from bayesdl.workflows.fit_options import from_keywords
from bayesdl.workflows.options import fit_parser

COIN = {"flips": torch.cat([torch.ones(6), torch.zeros(4)]), "prior_a": 10.0, "prior_b": 10.0}


@pytest.fixture
def fx_backend(monkeypatch):
    """Replay the traced graph without Inductor (no compile time)."""
    monkeypatch.setattr(compiled_mod, "BACKEND", "fx")


def _linreg_data() -> dict:
    s = diabetes()
    return {"x": s.x_train, "y": s.y_train}


@pytest.mark.parametrize("mode", ["false", "true"])
def test_coin_reaches_beta_posterior(mode, fx_backend):
    """q = Beta(a, b) holds the exact posterior Beta(16, 14): mean 0.533, sd 0.089."""
    cfg = FitConfig(steps=1500, lr=0.1, lr_schedule="linear", particles=8, compile=mode)
    r = fit(coin.model, coin_guides.beta, COIN, cfg, progress=False)
    assert r.compiled == (mode == "true")
    a, b = float(r.param("a_q")), float(r.param("b_q"))
    mean, sd = a / (a + b), (a * b / ((a + b) ** 2 * (a + b + 1))) ** 0.5
    assert mean == pytest.approx(16 / 30, abs=0.01)
    assert sd == pytest.approx((16 * 14 / (30**2 * 31)) ** 0.5, abs=0.01)


def test_linreg_reaches_posterior_and_compiled_is_5x_faster():
    """Mean-field q on diabetes: means within 0.02 of mu_N, sds within 10% of the mean-field
    optimum 1 / sqrt(diag Lambda_N); the Inductor-compiled loop takes >= 5x the eager steps per
    second (eager measured before and after, the faster of the two kept)."""
    data = _linreg_data()
    mu, cov = linreg.posterior(data["x"], data["y"])
    sd_opt = linreg.mean_field_optimum_variance(cov).sqrt()

    def run(mode: str, steps: int):
        cfg = FitConfig(steps=steps, lr=0.05, lr_schedule="linear", particles=16, compile=mode)
        r = fit(linreg.model, lr_guides.mean_field(linreg.model), data, cfg, progress=False)
        return r, r.param("AutoNormal.locs.theta"), r.param("AutoNormal.scales.theta")

    rates = {"false": [], "true": []}
    for mode in ("false", "true", "false"):
        r, loc, scale = run(mode, 2000 if len(rates[mode]) == 0 else 500)
        rates[mode].append(r.steps_per_second)
        if len(rates[mode]) == 1:
            assert r.compiled == (mode == "true")
            assert (loc.double() - mu).abs().max() < 0.02
            np.testing.assert_allclose(scale.double(), sd_opt, rtol=0.1)
    assert max(rates["true"]) >= 5 * max(rates["false"]), rates


MINIBATCH_KL_CLIP = {"batch_size": 100, "kl_warmup": 10, "clip_norm": 1.0}


@pytest.mark.parametrize(
    "problem, opts, backend",
    [
        ("coin", {}, "fx"),
        ("coin", MINIBATCH_KL_CLIP, "fx"),
        ("linreg-mvn", {}, "fx"),
        ("linreg-mvn", MINIBATCH_KL_CLIP, "fx"),
        ("linreg-mvn", MINIBATCH_KL_CLIP, "inductor"),
    ],
)
def test_compiled_gradient_equals_eager_on_fixed_noise(problem, opts, backend):
    """SGD's momentum buffer is the gradient (``g1`` after one step, ``0.9 g1 + g2`` after
    two): with the same parameters and the same RNG state (the graph draws the same noise from
    torch's RNG as the eager step) eager and compiled agree to float32 rounding."""
    if problem == "coin":
        model, make_guide, data, size = coin.model, lambda: coin_guides.beta, COIN, 10
    else:
        model, data, size = linreg.model, _linreg_data(), 331
        make_guide = lambda: lr_guides.full_covariance(linreg.model)  # noqa: E731
    out = {}
    for mode in ("eager", backend):
        pyro.set_rng_seed(3)
        cfg = FitConfig(steps=5, optimizer="sgd", lr=1e-3, particles=2, **opts)
        with pyro.get_param_store().scope():
            tr = Trainer(model, make_guide(), cfg, data_size=size)
            state = tr.init(data)
            if mode != "eager":
                assert tr.compile(state, backend=mode)
                assert tr.compiled.backend == mode
            losses = [tr.update(state) for _ in range(2)]
            grads = [tr.optimizer.state[p]["momentum_buffer"].clone() for p in tr.params.values()]
            out[mode] = losses, grads, [p.detach().clone() for p in tr.params.values()]
    (le, ge, pe), (lc, gc, pc) = out["eager"], out[backend]
    for a, b in zip(le + ge + pe, lc + gc + pc, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _growing_model(y):
    """A model whose number of sites depends on a sampled value."""
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    for i in range(min(1 + int(3 * z.abs()), len(y))):
        pyro.sample(f"y{i}", dist.Normal(z, 1.0), obs=y[i])


def _growing_guide(y):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    pyro.sample("z", dist.Normal(loc, scale))


def test_data_dependent_sites_fall_back_with_a_message(capsys, fx_backend):
    cfg = FitConfig(steps=30, log_every=10, compile="true")
    r = fit(_growing_model, _growing_guide, {"y": torch.zeros(10)}, cfg, progress=False)
    err = capsys.readouterr().err
    assert not r.compiled and r.steps == 30 and np.isfinite(r.final_elbo)
    lines = [line for line in err.splitlines() if line.startswith("--compile")]
    assert len(lines) == 1 and "running eagerly" in lines[0] and "sites" in lines[0], err


def test_structure_change_mid_run_returns_to_eager(capsys, fx_backend):
    """The log-point check re-traces eagerly: a site that appears later ends the graph."""
    extra = {"on": False}

    def model(y):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=y)
        if extra["on"]:
            pyro.sample("w", dist.Normal(z, 1.0), obs=y)

    def guide(y):
        pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))

    with pyro.get_param_store().scope():
        tr = Trainer(model, guide, FitConfig(steps=10))
        state = tr.init({"y": torch.tensor(1.0)})
        assert tr.compile(state)
        tr.update(state)
        tr.recheck(state)
        assert tr.compiled is not None
        extra["on"] = True
        tr.recheck(state)
    assert tr.compiled is None
    assert "back to eager steps at step 1" in capsys.readouterr().err


@pytest.mark.parametrize("first", ["true", "false"])
def test_resume_of_a_compiled_run_continues_exactly(tmp_path, first, fx_backend):
    """Stop at step 30 of 60, resume compiled: the parameters equal an uninterrupted compiled
    run's; a run checkpointed eagerly and resumed compiled continues it too (float32 rounding:
    Adam's arithmetic in another order)."""

    def run(mode, out, **kw):
        cfg = FitConfig(steps=60, lr=0.05, log_every=10, checkpoint_every=20, compile=mode)
        return fit(coin.model, coin_guides.beta, COIN, cfg, out, progress=False, **kw)

    whole = run("true", tmp_path / "whole")
    with pytest.raises(Interrupted):
        run(first, tmp_path / "split", stop_at_step=30)
    resumed = run("true", tmp_path / "split", resume=True)
    assert resumed.compiled and resumed.steps == 60
    for name in ("a_q", "b_q"):
        if first == "true":
            assert torch.equal(resumed.param(name), whole.param(name))
        else:
            torch.testing.assert_close(resumed.param(name), whole.param(name), rtol=1e-5, atol=0)
    assert [h["elbo"] for h in resumed.history] == pytest.approx(
        [h["elbo"] for h in whole.history], rel=1e-5
    )


def test_compile_option_from_cli_and_python():
    workflow = Coin
    p = fit_parser(workflow, "bayesdl fit coin")
    assert p.parse_args([]).compile == "false"
    assert p.parse_args(["--compile"]).compile == "true"
    assert p.parse_args(["--compile", "auto"]).compile == "auto"
    assert from_keywords(workflow, compile=True).engine.compile == "true"
    assert from_keywords(workflow, compile="auto").engine.compile == "auto"
    with pytest.raises(ValueError, match="compile"):
        from_keywords(workflow, compile="sometimes")
    cfg = FitConfig(compile=True)
    cfg.validate()
    assert cfg.compile == "true"


def test_auto_compiles_only_when_it_pays_off():
    assert not compiled_mod.auto_pays_off(100, 0.002)  # 0.2 s of steps: not worth 20 s
    assert compiled_mod.auto_pays_off(100_000, 0.002)  # 200 s of steps
    r = fit(coin.model, coin_guides.beta, COIN, FitConfig(steps=20, compile="auto"), progress=False)
    assert not r.compiled and r.steps == 20


def test_readme_command_writes_compiled_summary(tmp_path, monkeypatch, fx_backend):
    """The README's `--compile` command, shortened: summary.json records the compilation."""
    monkeypatch.chdir(tmp_path)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Compiled SVI", 1)[1]
    command = re.search(r"```bash\n(.*?)```", block, re.S).group(1).split("#")[0].strip()
    argv = shlex.split(command)
    assert argv[:2] == ["bayesdl", "fit"] and "--compile" in argv
    assert cli.main([*argv[1:], "--quiet", "--steps", "200"]) == 0
    s = json.loads((tmp_path / "runs/linreg-compiled/summary.json").read_text())
    assert s["compiled"] is True and s["compile_seconds"] > 0 and s["steps_per_second"] > 0


# -- values read in Python: a graph keeps what its capture read


def _flip_guide(y):
    loc = pyro.param("loc", torch.tensor(-1.0))
    pyro.sample("z", dist.Normal(loc, 0.5))


def _branch_model(y):
    """The prior's mean follows the sign of the guide's ``loc``, which crosses 0 in training
    (from -1 towards y = 3): the same sites on either branch."""
    loc = pyro.param("loc")
    prior = 1.0 if loc > 0 else -1.0  # the line the message names
    z = pyro.sample("z", dist.Normal(prior, 1.0))
    pyro.sample("y", dist.Normal(z, 1.0), obs=y)


def _item_model(y):
    """``.item()`` of a sampled value in the likelihood's arithmetic."""
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(z, 1.0 + abs(z.item())), obs=y)


def _tolist_model(y):
    """``.tolist()`` reads memory without an aten op: make_fx alone does not see it."""
    shift = max(pyro.param("loc").detach().tolist(), 0.0)
    z = pyro.sample("z", dist.Normal(shift, 1.0))
    pyro.sample("y", dist.Normal(z, 1.0), obs=y)


def _fit_both(model, steps=200):
    """The compiled fit and the eager one, both from seed 0, with what --compile said."""
    out = {}
    for mode in ("true", "false"):
        pyro.set_rng_seed(0)
        cfg = FitConfig(steps=steps, lr=0.05, log_every=50, compile=mode)
        with pyro.get_param_store().scope():
            out[mode] = fit(model, _flip_guide, {"y": torch.tensor(3.0)}, cfg, progress=False)
    return out["true"], out["false"]


@pytest.mark.parametrize(
    "model, read, line",
    [
        (_branch_model, "(__bool__)", "prior = 1.0 if loc > 0"),
        (_item_model, "(item)", "abs(z.item())"),
        (_tolist_model, "(tolist)", "shift = max("),
    ],
)
def test_value_read_in_python_falls_back_and_fits_as_eager(model, read, line, capsys, fx_backend):
    """A read of a value that depends on the parameters or the noise stops the capture, with
    one line naming the read and the model's source line; the fit is then the eager fit."""
    compiled, eager = _fit_both(model)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("--compile")]
    assert len(lines) == 1, err
    assert "running eagerly: the model or guide reads a tensor's value" in lines[0]
    assert read in lines[0] and "test_compiled.py:" in lines[0] and line in lines[0], lines[0]
    assert not compiled.compiled
    assert float(compiled.param("loc")) == float(eager.param("loc")) > 0  # the branch crossed


def test_reads_of_constants_still_compile(fx_backend):
    """A read of a tensor made from constants alone is the same at every step: it compiles
    (make_fx alone refuses ``torch.zeros(3).sum().item()``), shapes too."""

    def model(y):
        c = torch.zeros(3).sum().item() + float(torch.tensor(1.0)) + y.shape[0]
        z = pyro.sample("z", dist.Normal(c - 2.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(z, 1.0), obs=y)

    pyro.set_rng_seed(0)
    data = {"y": torch.full((2,), 3.0)}
    cfg = FitConfig(steps=100, lr=0.05, log_every=50, compile="true")
    r = fit(model, _flip_guide, data, cfg, progress=False)
    assert r.compiled
    pyro.set_rng_seed(0)
    e = fit(model, _flip_guide, data, FitConfig(steps=100, lr=0.05, log_every=50), progress=False)
    torch.testing.assert_close(r.param("loc"), e.param("loc"), rtol=1e-5, atol=1e-5)


def test_a_value_the_graph_kept_is_found_at_a_log_point(capsys, fx_backend, monkeypatch):
    """What the capture cannot see (a Python global the model reads): the loss check at a
    log point compares the graph's loss with the eager loss on the same noise."""
    # at every log point (raising=False: the test must fail, not error, where there is none)
    monkeypatch.setattr(compiled_mod, "VALUE_CHECK_SHARE", 1.0, raising=False)
    prior = {"loc": 0.0}

    def model(y):
        z = pyro.sample("z", dist.Normal(prior["loc"], 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=y)

    with pyro.get_param_store().scope():
        tr = Trainer(model, _flip_guide, FitConfig(steps=10))
        state = tr.init({"y": torch.tensor(1.0)})
        assert tr.compile(state)
        rng = torch.get_rng_state()
        tr.update(state)
        tr.recheck(state)
        assert tr.compiled is not None
        assert not torch.equal(torch.get_rng_state(), rng)  # the step drew noise
        rng = torch.get_rng_state()
        tr.recheck(state)  # the check leaves the RNG as it was
        assert torch.equal(torch.get_rng_state(), rng)
        prior["loc"] = 5.0
        tr.recheck(state)
    assert tr.compiled is None
    err = capsys.readouterr().err
    assert "back to eager steps at step 1: the compiled loss" in err and "eager loss" in err


# the check reads the eager loss as a float: without a warning that it requires grad
@pytest.mark.filterwarnings("error:Converting a tensor with requires_grad")
def test_loss_check_holds_with_minibatches_kl_warmup_and_clipping(monkeypatch, fx_backend):
    """The eager loss at a log point sees the step's minibatch, KL weight and noise: the check
    runs at each of the 5 log points and the fit stays compiled."""
    monkeypatch.setattr(compiled_mod, "VALUE_CHECK_SHARE", 1.0, raising=False)
    seen = []
    check = compiled_mod.CompiledStep.check_values

    def spy(self, data):
        why = check(self, data)
        seen.append(why)
        return why

    monkeypatch.setattr(compiled_mod.CompiledStep, "check_values", spy, raising=False)
    cfg = FitConfig(steps=50, log_every=10, compile="true", **MINIBATCH_KL_CLIP)
    model = linreg.model
    guide, data = lr_guides.full_covariance(model), _linreg_data()
    r = fit(model, guide, data, cfg, data_size=331, progress=False)
    assert r.compiled and seen == [None] * 5


@pytest.mark.parametrize(
    "argv",
    [
        ["vae"],
        ["bnn"],
        [
            "examples/eight_schools.py:model",
            "--data",
            "examples/data/eight_schools.csv",
            "--guide",
            "auto-mvn",
        ],
        ["ss-vae"],
        ["stochastic-depth"],
        ["stochastic-depth", "--estimator", "score"],
        ["stochastic-depth", "--estimator", "relaxed"],
    ],
    ids=["vae", "bnn", "eight-schools", "ss-vae", "depth-enum", "depth-score", "depth-relaxed"],
)
def test_project_models_still_compile(argv, tmp_path, monkeypatch, fx_backend):
    """The project's models read no value the capture refuses (Pyro's handlers included)."""
    root = Path(__file__).resolve().parents[2]
    argv = [str(root / a) if a.startswith("examples/") else a for a in argv]
    out = tmp_path / "run"
    assert cli.main(["fit", *argv, "--compile", "--steps", "20", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["compiled"] is True


@pytest.mark.parametrize("guide", ["flipout", "meanfield"])
def test_bayesian_net_passes_every_loss_check(guide, tmp_path, monkeypatch, fx_backend):
    """A network made Bayesian by ``bayesdl.bnn.bayesian`` picks its local estimator (Flipout,
    local reparameterization) only while gradients are on: the eager loss of the check must be
    computed as in training, or every check fails and the fit returns to eager steps."""
    import bayesdl
    import bayesdl.bnn as bnn

    monkeypatch.setattr(compiled_mod, "VALUE_CHECK_SHARE", 1.0, raising=False)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x = torch.randn(200, 4)
    data = {"x": x, "y": (x[:, 0] > 0).long() + (x[:, 1] > 1).long()}
    out = tmp_path / "run"
    # posterior sds of 0.3 from the start: the two estimators' losses differ clearly
    bnet = bnn.bayesian(net, likelihood="categorical", guide=guide, init_scale=0.3)
    bayesdl.fit(bnet, data, steps=40, log_every=10, batch_size=50, compile=True, out=out)
    assert json.loads((out / "summary.json").read_text())["compiled"] is True


def _coin_step(data: dict, backend: str) -> tuple[list, compiled_mod.CompiledStep]:
    """Two SGD steps on fixed noise, eager or compiled: losses and gradients (as above)."""
    pyro.set_rng_seed(3)
    cfg = FitConfig(steps=5, optimizer="sgd", lr=1e-3, particles=2)
    with pyro.get_param_store().scope():
        tr = Trainer(coin.model, coin_guides.beta, cfg, data_size=10)
        state = tr.init(data)
        if backend != "eager":
            assert tr.compile(state, backend=backend) and tr.compiled.backend == backend
        losses = [tr.update(state) for _ in range(2)]
        grads = [tr.optimizer.state[p]["momentum_buffer"].clone() for p in tr.params.values()]
    return losses + grads, tr.compiled


def test_a_second_fit_of_the_same_graph_reuses_its_compiled_code_on_its_own_data(monkeypatch):
    """The replications of ``bayesdl.sbc``: the same model and guide on other data of the same
    shape trace to the same graph, whose Inductor code is reused (no second compile) and runs
    on the new data (gradients equal eager's on fixed noise); a graph holding another constant
    (the prior's ``a`` is inlined) has another key, so it is compiled afresh."""
    from collections import OrderedDict

    monkeypatch.setattr(compiled_mod, "_COMPILED", OrderedDict())
    other = {**COIN, "flips": 1 - COIN["flips"]}
    reused = []
    for data in (COIN, other):
        compiled, step = _coin_step(data, "inductor")
        reused.append(step.reused)
        for a, b in zip(_coin_step(data, "eager")[0], compiled, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert reused == [False, True] and len(compiled_mod._COMPILED) == 1

    def key(data: dict) -> str:
        step = _coin_step(data, "fx")[1]
        return compiled_mod.graph_key(step.graph, step._inputs(data), {})

    assert key(COIN) == key(other) != key({**COIN, "prior_a": 2.0})
