"""The Step protocol and the estimators' declared capabilities.

* Each estimator's :class:`~bayesdl.inference.elbo.Capabilities` say what it does, measured:
  ``compilable`` -- the Trainer compiles it, else falls back with one line; ``data_parallel``
  -- a (one-process) data-parallel Trainer accepts it; ``stateful`` -- its loss leaves
  baselines in the param store; ``scheduled`` -- ``set_step`` changes its loss on the same
  noise; ``enumerates`` -- its loss is the exact marginal over a discrete site the guide leaves
  out; ``discrete`` -- on a categorical guide site its gradient's variance is far below plain
  REINFORCE's (``reparam``'s ``Trace_ELBO``), or it enumerates.
* The eager and the compiled step, built from the same parts (loss, parameters, optimizer),
  give the same losses, parameters and optimizer state on the same noise, through ``Step``.
"""

from __future__ import annotations

import json
import math
import shutil
from functools import partial
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO

import bayesdl.guides.coin as coin_guides
import bayesdl.models.coin as coin
from bayesdl.inference import ESTIMATORS, FitConfig, UserError, fit, make_estimator
from bayesdl.inference import compiled as compiled_mod
from bayesdl.inference.compiled import CompiledStep
from bayesdl.inference.diagnostics import gradient_draws
from bayesdl.inference.elbo import Estimator
from bayesdl.inference.estimators import capabilities, names_with
from bayesdl.inference.params import trainable_params
from bayesdl.inference.step import EagerStep, Step
from bayesdl.inference.trainer import Trainer

COIN = {"flips": torch.cat([torch.ones(6), torch.zeros(4)]), "prior_a": 10.0, "prior_b": 10.0}
NAMES = list(ESTIMATORS)
LOCS = torch.tensor([-2.0, 0.0, 2.0])
PRIOR = torch.tensor([0.2, 0.3, 0.5])


@pytest.fixture
def fx_backend(monkeypatch):
    """Replay the traced graph without Inductor (no compile time)."""
    monkeypatch.setattr(compiled_mod, "BACKEND", "fx")


def test_every_estimator_declares_its_capabilities():
    """Consistent with the estimator object: a data-parallel loss is differentiable, a
    scheduled estimator has ``set_step``, a compiled scheduled one names the tensors its
    ``set_step`` changes in place (the graph's inputs)."""
    for name in NAMES:
        est = make_estimator(name)
        caps = est.capabilities
        assert caps == capabilities(name)
        assert caps.data_parallel == est.differentiable, name
        assert caps.scheduled == callable(getattr(est, "set_step", None)), name
        assert not (caps.compilable and caps.scheduled) or est.graph_inputs, name
        assert not caps.enumerates or caps.discrete, name
    assert all(capabilities(n).compilable for n in NAMES)


# -- compilable


@pytest.mark.parametrize("name", [*NAMES, "renyi"])
def test_compilable_estimators_compile_and_the_others_fall_back_in_one_line(
    name, capsys, fx_backend, monkeypatch
):
    monkeypatch.setitem(ESTIMATORS, "renyi", _renyi)
    pyro.set_rng_seed(0)
    with pyro.get_param_store().scope():
        tr = Trainer(coin.model, coin_guides.beta, FitConfig(steps=5, estimator=name))
        state = tr.init(COIN)
        compiled = tr.compile(state)
        assert compiled == capabilities(name).compilable
        assert tr.current_step.compiled == compiled and isinstance(tr.current_step, Step)
        loss = tr.update(state)
    assert math.isfinite(float(loss)) and state.step == 1
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("--compile")]
    if compiled:
        assert lines == []
    else:
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"--compile: running eagerly: --estimator {name} ")
        assert lines[0].endswith(f"compiled: {', '.join(names_with('compilable'))})")


# -- data-parallel


class OneProcess:
    """A data-parallel context of one process (what ``Trainer.init`` asks of
    :class:`~bayesdl.inference.distributed.DistContext`)."""

    shard = (0, 1)
    is_main = True

    def global_batch(self, batch_size, data_size):
        return data_size if batch_size is None else batch_size

    def check_shardable(self, model, guide, data):
        pass

    def wrap(self, params, loss_fn):
        return params, loss_fn


def _renyi(particles, vectorize, max_plate_nesting):
    """An estimator registered from outside, with no capabilities declared: RenyiELBO has no
    differentiable loss (it computes its own gradients)."""
    return Estimator("renyi", RenyiELBO(num_particles=2))


@pytest.mark.parametrize("name", [*NAMES, "renyi"])
def test_data_parallel_trainers_accept_exactly_the_data_parallel_estimators(name, monkeypatch):
    monkeypatch.setitem(ESTIMATORS, "renyi", _renyi)
    pyro.set_rng_seed(0)
    cfg = FitConfig(steps=5, estimator=name)
    with pyro.get_param_store().scope():
        tr = Trainer(coin.model, coin_guides.beta, cfg, data_size=10, ddp=OneProcess())
        if capabilities(name).data_parallel:
            state = tr.init(COIN)
            assert math.isfinite(float(tr.update(state)))
        else:
            with pytest.raises(UserError, match="cannot run data-parallel"):
                tr.init(COIN)
    assert capabilities("renyi").data_parallel is False


# -- stateful, scheduled


def _categorical_model(x):
    z = pyro.sample("z", dist.Categorical(PRIOR))
    mean = (z * LOCS).sum(-1) if z.is_floating_point() else LOCS[z]  # relaxed: a simplex point
    pyro.factor("offset", torch.tensor(-20.0))  # a constant cost: baselines remove it
    pyro.sample("x", dist.Normal(mean, 1.0), obs=x)


def _categorical_guide(x):
    pyro.sample("z", dist.Categorical(logits=pyro.param("logits", torch.zeros(3))))


X = {"x": torch.tensor(1.0)}


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("enum", "meanfield")])
def test_stateful_estimators_keep_baselines_between_steps(name):
    est = make_estimator(name)
    model, guide = est.wrap_model(_categorical_model), est.wrap_guide(_categorical_guide)
    pyro.set_rng_seed(0)
    with pyro.get_param_store().scope():
        trainable_params(model, guide, X)
        before = set(pyro.get_param_store().keys())
        est.loss(model, guide, **X)
        kept = {k for k in pyro.get_param_store().keys() if k not in before}
    assert bool(kept) == capabilities(name).stateful, kept
    assert all(k.startswith("__baseline") for k in kept)


@pytest.mark.parametrize("name", NAMES)
def test_scheduled_estimators_change_with_the_step(name):
    est = make_estimator(name)
    if not capabilities(name).scheduled:
        assert not hasattr(est, "set_step")
        return
    model, guide = est.wrap_model(_categorical_model), est.wrap_guide(_categorical_guide)
    losses = []
    with pyro.get_param_store().scope():
        for step in (0, 99):
            est.set_step(step, 100)
            pyro.set_rng_seed(0)
            losses.append(float(est.loss(model, guide, **X)))
    assert losses[0] != losses[1]


# -- enumerates, discrete


def _mixed_model(x):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    z = pyro.sample("z", dist.Categorical(PRIOR))
    mean = (z * LOCS).sum(-1) if z.is_floating_point() else LOCS[z]
    pyro.sample("x", dist.Normal(w + mean, 1.0), obs=x)


def _w_guide(x):
    pyro.sample("w", dist.Delta(pyro.param("w_loc", torch.tensor(0.5))))


def _marginal_loss(x: float, w: float) -> float:
    """``-(log p(w) + log sum_z p(z) N(x; w + loc_z, 1))`` with ``q(w) = Delta(w)``."""
    log_w = dist.Normal(0.0, 1.0).log_prob(torch.tensor(w))
    mix = (PRIOR.log() + dist.Normal(w + LOCS, 1.0).log_prob(torch.tensor(x))).logsumexp(0)
    return -float(log_w + mix)


@pytest.mark.parametrize("name", NAMES)
def test_enumerating_estimators_sum_out_a_site_the_guide_leaves_out(name):
    est = make_estimator(name, max_plate_nesting=0)
    model, guide = est.wrap_model(_mixed_model), est.wrap_guide(_w_guide)
    exact = _marginal_loss(1.0, 0.5)
    pyro.set_rng_seed(0)
    with pyro.get_param_store().scope():
        try:
            losses = [float(est.loss(model, guide, **X)) for _ in range(5)]
        except (AssertionError, KeyError, ValueError, NotImplementedError):
            losses = None  # the estimator refuses a model site the guide does not cover
    exact_every_time = losses is not None and all(abs(v - exact) < 1e-5 for v in losses)
    assert exact_every_time == capabilities(name).enumerates, (losses, exact)


def test_discrete_estimators_have_low_variance_gradients_on_a_categorical_site():
    """On ``q(z) = Cat(softmax(logits))`` with a constant -20 nats in the cost, plain
    REINFORCE (``reparam``: Trace_ELBO's score-function term) has a gradient variance of about
    350; the score function with baselines and the relaxation below 2 (measured), 30 times
    less here at least; ``meanfield`` refuses a guide site it cannot reparameterize."""
    variance = {}
    for name in NAMES:
        if capabilities(name).enumerates:
            continue  # no guide site to score: test_enumerating_estimators_... covers it
        pyro.set_rng_seed(0)
        with pyro.get_param_store().scope():
            try:
                g = gradient_draws(_categorical_model, _categorical_guide, X, name, 120)
            except NotImplementedError:
                variance[name] = None
                continue
        variance[name] = float(g["logits"][20:].var(0).sum())  # after the baselines warm up
    reference = variance["reparam"]
    for name, v in variance.items():
        low = v is not None and v < reference / 30
        assert low == capabilities(name).discrete, variance
    assert variance["meanfield"] is None


# -- the Step protocol


def _parts(optimizer: str):
    """The loss, the parameters and the optimizer of the coin, in a fresh param store."""
    est = make_estimator("reparam", particles=2)
    params = trainable_params(coin.model, coin_guides.beta, COIN)
    opts = {
        "adam": lambda p: torch.optim.Adam(p, lr=0.05),
        "sgd": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
    }
    loss_fn = partial(est.loss, coin.model, coin_guides.beta)
    loss_fn(**COIN)  # settles Pyro's lazy state (the plate nesting), as Trainer.init does
    return loss_fn, params, opts[optimizer](list(params.values()))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_eager_and_compiled_steps_from_the_same_parts_agree(optimizer):
    """Three steps of each ``Step`` on the same noise: the same losses, parameters and
    optimizer state (float32 rounding); the compiled step's state loads into an eager step,
    which then continues as the compiled one does."""
    out = {}
    for kind in ("eager", "compiled"):
        with pyro.get_param_store().scope():
            pyro.set_rng_seed(1)
            loss_fn, params, opt = _parts(optimizer)
            if kind == "eager":
                step = EagerStep(params, opt, loss_fn=loss_fn)
            else:
                step = CompiledStep(
                    loss_fn,
                    params,
                    opt,
                    COIN,
                    model=coin.model,
                    guide=coin_guides.beta,
                    backend="fx",
                )
            assert isinstance(step, Step) and step.compiled == (kind == "compiled")
            pyro.set_rng_seed(2)
            losses = [step(COIN) for _ in range(3)]
            values = [p.detach().clone() for p in params.values()]
            saved = step.state_dict()
            if kind == "compiled":  # a checkpoint of the compiled step, resumed eagerly
                eager = EagerStep(params, opt, loss_fn=loss_fn)
                eager.load_state_dict(saved)
                losses.append(eager(COIN))
            else:
                losses.append(step(COIN))
            out[kind] = losses, values, saved
    (le, pe, se), (lc, pc, sc) = out["eager"], out["compiled"]
    assert losses[0].ndim == 0 and not losses[0].requires_grad
    for a, b in zip(le + pe, lc + pc, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for i, state in se["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(value, sc["state"][i][key], rtol=1e-5, atol=1e-6)


# -- checkpoints written before the Step protocol

OLD_RUN = Path(__file__).resolve().parent / "data" / "coin_at_step_30"


@pytest.mark.parametrize("mode", ["false", "true"])
def test_a_checkpoint_written_before_the_step_protocol_resumes(mode, tmp_path, fx_backend):
    """``data/coin_at_step_30``: the coin fit of 60 steps (Adam, lr 0.05) stopped at step 30 by
    bayesdl at commit 50c61cd, before the Step protocol, with the final parameters and ELBOs of
    its uninterrupted run. Resumed now, eagerly it ends where that run ended, to the bit;
    compiled, to float32 rounding (Adam's arithmetic in another order)."""
    out = tmp_path / "run"
    shutil.copytree(OLD_RUN, out)
    whole = json.loads((out / "uninterrupted.json").read_text())
    cfg = FitConfig(steps=60, lr=0.05, log_every=10, checkpoint_every=20, compile=mode)
    r = fit(coin.model, coin_guides.beta, COIN, cfg, out, resume=True, progress=False)
    assert r.steps == 60 and r.compiled == (mode == "true")
    for name in ("a_q", "b_q"):
        if mode == "false":
            assert float(r.param(name)) == whole[name]
        else:
            assert float(r.param(name)) == pytest.approx(whole[name], rel=1e-5)
    assert [h["elbo"] for h in r.history] == pytest.approx(whole["elbo"], rel=1e-5)
