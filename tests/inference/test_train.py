"""The SVI loop: exact resume, minibatch scaling, schedules, settings validation."""

from __future__ import annotations

import json

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

from bayesdl.inference import FitConfig, Interrupted, UserError, fit
from bayesdl.inference.batching import DataSubsample, EpochBatcher
from bayesdl.inference.estimators import make_estimator
from bayesdl.inference.schedules import kl_weight, lr_factor


def logistic(x, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]) as idx:
        pyro.sample("y", dist.Bernoulli(logits=(x[idx] * w).sum(-1)), obs=y[idx])


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = (x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(200, generator=g) > 0).float()
    return {"x": x, "y": y}


def _params(result) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.param_values().items()}


@pytest.mark.parametrize("estimator", ["reparam", "score"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, data, estimator):
    cfg = dict(
        steps=60,
        lr=0.05,
        batch_size=32,
        particles=2,
        estimator=estimator,
        log_every=10,
        checkpoint_every=25,
        lr_schedule="cosine",
        kl_warmup=20,
    )
    with pytest.raises(Interrupted) as info:
        fit(
            logistic,
            AutoNormal(logistic),
            data,
            FitConfig(**cfg),
            tmp_path,
            data_size=200,
            progress=False,
            stop_at_step=33,
        )
    assert info.value.step == 33 and (tmp_path / "checkpoint.pt").exists()
    resumed = fit(
        logistic,
        AutoNormal(logistic),
        data,
        FitConfig(**cfg),
        tmp_path,
        data_size=200,
        progress=False,
        resume=True,
    )
    a = _params(resumed)
    straight = fit(
        logistic, AutoNormal(logistic), data, FitConfig(**cfg), None, data_size=200, progress=False
    )
    b = _params(straight)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.final_elbo == straight.final_elbo
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(10, 61, 10))  # no duplicated rows after the resume


def test_minibatch_loss_is_unbiased_for_full_data_loss(data):
    """E over batches of the N/B-scaled minibatch loss equals the full-data loss (same q)."""
    guide = AutoDelta_like()
    est = make_estimator("reparam")
    full = est.loss(logistic, guide, **data).item()
    sub = DataSubsample("data")
    batcher = EpochBatcher(200, 25, torch.device("cpu"))
    losses = []
    for _ in range(8):  # one epoch = 8 disjoint batches covering all 200 points
        sub.indices = batcher.next()
        losses.append(est.loss(sub(logistic), sub(guide), **data).item())
    assert sum(losses) / len(losses) == pytest.approx(full, rel=1e-5)


def AutoDelta_like():
    """A point-mass guide, so the loss is deterministic given the batch."""

    def guide(x, y):
        w = pyro.param("w_hat", torch.tensor([0.5, -0.5, 0.1]))
        pyro.sample("w", dist.Delta(w).to_event(1))

    return guide


def test_epoch_batcher_covers_every_point_once():
    b = EpochBatcher(10, 3, torch.device("cpu"))
    seen = torch.cat([b.next() for _ in range(b.batches_per_epoch)])
    assert len(seen) == 9 and len(set(seen.tolist())) == 9  # ragged last batch dropped
    shards = [EpochBatcher(10, 4, torch.device("cpu"), rank=r, world=2) for r in range(2)]
    torch.manual_seed(0)
    s0 = shards[0].next()
    torch.manual_seed(0)
    s1 = shards[1].next()
    assert len(s0) == len(s1) == 2 and not set(s0.tolist()) & set(s1.tolist())


def test_schedules():
    assert lr_factor("constant", 50, 100) == 1.0
    assert lr_factor("linear", 50, 100) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("constant", 4, 100, warmup=10) == pytest.approx(0.5)
    assert [kl_weight(s, 10, 5) for s in (0, 5, 10, 15, 30)] == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_kl_warmup_scales_only_latent_terms(data):
    """At beta = 0 the loss is the expected negative log-likelihood alone."""
    guide = AutoDelta_like()
    est = make_estimator("reparam")
    from bayesdl.inference.schedules import KLScale

    kl = KLScale(0.0)
    annealed = est.loss(kl(logistic), kl(guide), **data).item()
    w = torch.tensor([0.5, -0.5, 0.1])
    nll = -dist.Bernoulli(logits=data["x"] @ w).log_prob(data["y"]).sum().item()
    assert annealed == pytest.approx(nll, rel=1e-5)


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(steps=0), "--steps must be positive"),
        (dict(lr=-1.0), "--lr must be a positive"),
        (dict(particles=0), "--particles"),
        (dict(batch_size=0), "--batch-size"),
        (dict(lr_schedule="zigzag"), "--lr-schedule"),
        (dict(device="tpu"), "unknown device"),
        (dict(estimator="magic"), "unknown estimator"),
    ],
)
def test_impossible_settings_are_user_errors(data, cfg, match):
    with pytest.raises(UserError, match=match):
        fit(logistic, AutoNormal(logistic), data, FitConfig(**cfg), progress=False, data_size=200)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error(data):
    with pytest.raises(UserError, match="no CUDA"):
        fit(logistic, AutoNormal(logistic), data, FitConfig(device="cuda"), progress=False)


def test_divergence_is_reported_not_saved(tmp_path, data):
    def bad_model(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.factor("boom", 1e3 * (w**2).sum())  # unbounded: an absurd lr overflows it

    cfg = FitConfig(steps=20, lr=1e30, log_every=10, checkpoint_every=5)
    with pytest.raises(UserError, match="ELBO became|diverged"):
        fit(bad_model, AutoNormal(bad_model), data, cfg, tmp_path, progress=False)


def test_a_fit_naming_no_threads_runs_small_steps_on_one_and_leaves_torchs_count(data):
    """Threads by the step's size (inference.devices.auto_threads): the logistic regression's
    806 numbers run on one thread, a step of 400,000 data numbers on min(4, CPUs); either way
    torch's own count is what it was before the fit, and --threads is taken as given."""
    import os

    before = torch.get_num_threads()
    cfg = FitConfig(steps=5, log_every=5)
    small = fit(logistic, AutoNormal(logistic), data, cfg, progress=False)
    assert small.threads == 1 and torch.get_num_threads() == before
    g = torch.Generator().manual_seed(1)
    wide = {"x": torch.randn(20_000, 20, generator=g), "y": torch.ones(20_000)}
    large = fit(logistic, AutoNormal(logistic), wide, cfg, progress=False)
    assert large.threads == min(4, os.cpu_count() or 1) and torch.get_num_threads() == before
    # a minibatch of 100 rows of those 20,000 is a small step again
    cfg_mb = FitConfig(steps=5, log_every=5, batch_size=100)
    mini = fit(logistic, AutoNormal(logistic), wide, cfg_mb, data_size=20_000, progress=False)
    assert mini.threads == 1
    told = fit(logistic, AutoNormal(logistic), data, FitConfig(steps=5, threads=1), progress=False)
    assert told.threads == 1
