"""``fit(..., data_hook=...)``: data redrawn every epoch, and a resume mid-epoch is exact."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesdl.inference.train import FitConfig, Interrupted, fit


def model(x: torch.Tensor) -> None:
    """``x_n ~ N(mu, 1)`` with a point ``mu`` (a parameter)."""
    mu = pyro.param("mu", torch.zeros(()))
    with pyro.plate("data", x.shape[0]) as idx:
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x[idx])


def guide(x: torch.Tensor) -> None:  # noqa: ARG001
    """No latent variables."""


def jitter(epoch: int, data: dict) -> dict:  # noqa: ARG001
    """Fresh noise on the data each epoch, from torch's RNG."""
    return {"x": data["x"] + torch.randn_like(data["x"])}


def _fit(tmp_path, steps, **kw):
    config = FitConfig(
        steps=steps, lr=0.05, batch_size=8, log_every=1, seed=3, checkpoint_every=100
    )
    x = torch.arange(20.0)
    result = fit(
        model,
        guide,
        {"x": x},
        config,
        tmp_path,
        data_size=20,
        progress=False,
        data_hook=jitter,
        **kw,
    )
    return result.param("mu").item()


def test_hook_called_once_per_epoch():
    calls = []

    def hook(epoch, data):
        calls.append(epoch)
        return data

    config = FitConfig(steps=7, lr=0.05, batch_size=8, log_every=7)
    fit(
        model,
        guide,
        {"x": torch.arange(20.0)},
        config,
        None,
        data_size=20,
        progress=False,
        data_hook=hook,
    )
    # 20 // 8 = 2 batches per epoch: epochs start at steps 0, 2, 4, 6; epoch 0's data also
    # serve the initialisation pass
    assert calls == [0, 1, 2, 3]


def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    full = _fit(tmp_path / "a", 7)
    with pytest.raises(Interrupted):
        _fit(tmp_path / "b", 7, stop_at_step=3)  # step 3 is inside epoch 1
    resumed = _fit(tmp_path / "b", 7, resume=True)
    assert resumed == full  # bit-for-bit: same minibatches, same noise draws
    # the hook matters: without the noise the answer differs
    config = FitConfig(steps=7, lr=0.05, batch_size=8, seed=3)
    r = fit(model, guide, {"x": torch.arange(20.0)}, config, None, data_size=20, progress=False)
    assert r.param("mu").item() != full
