"""The training step of a network made Bayesian by ``bayesdl.bnn.bayesian`` without a draw of
``theta`` where its local estimator reads only ``q``'s parameters (issue 20, item 4), the
parameter plumbing that replaced ``functional_call``, and the flat prior."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

import bayesdl
import bayesdl.bnn as bnn
from bayesdl.models.net_plumbing import Plumbing


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))


def data(n: int = 40):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g)
    return x, (x[:, 0] > 0).long()


def sites(bnet, x, y):
    """The sample sites of one guide run and the model replayed on it."""
    guide = poutine.trace(bnet.guide).get_trace(x, y)
    model = poutine.trace(poutine.replay(bnet, trace=guide)).get_trace(x, y)
    keep = ("sample",)
    return (
        {n for n, s in guide.nodes.items() if s["type"] in keep},
        {n for n, s in model.nodes.items() if s["type"] in keep},
    )


DRAW_FREE = ["meanfield", "sparse-vd", "mc-dropout", "map", "gaussian-dropout"]


@pytest.mark.parametrize("guide", DRAW_FREE)
def test_a_training_step_has_no_theta_site_and_a_prediction_has(guide):
    x, y = data()
    bnet = bnn.bayesian(mlp(), likelihood="categorical", guide=guide)
    g, m = sites(bnet, x, y)
    assert "theta" not in g and "theta" not in m and "y" in m
    with torch.no_grad():  # predictions draw theta, one network per draw
        g, m = sites(bnet, x, y)
    assert "theta" in g and "theta" in m
    with pyro.plate("particles", 3, dim=-2):  # vectorized draws: theta drawn too
        g, m = sites(bnet, x, y)
    assert "theta" in g


@pytest.mark.parametrize("guide", ["flipout", "dropconnect"])
def test_guides_that_read_a_draw_keep_theta(guide):
    x, y = data()
    g, m = sites(bnn.bayesian(mlp(), likelihood="categorical", guide=guide), x, y)
    assert "theta" in g and "theta" in m


def test_a_prior_without_a_closed_kl_keeps_the_draw():
    """The scale mixture's KL is one Monte Carlo draw of theta: it must be drawn."""
    x, y = data()
    bnet = bnn.bayesian(mlp(), likelihood="categorical", prior="scale-mixture")
    g, m = sites(bnet, x, y)
    assert "theta" in g and "theta" in m


@pytest.mark.parametrize("guide", ["meanfield", "mc-dropout", "map"])
def test_the_loss_without_theta_is_the_loss_with_it(guide):
    """The draw-free step and the step that draws theta (and then does not read it) estimate
    the same -ELBO: the means of 2000 evaluations agree within 4 standard errors (MAP: the
    same number)."""
    x, y = data()
    bnet = bnn.bayesian(mlp(), likelihood="categorical", guide=guide, dropout=0.3)
    with torch.no_grad():
        if hasattr(bnet.guide, "log_sigma"):
            bnet.guide.log_sigma.fill_(-1.0)  # a wide q: noise that shows in the loss
    elbo = Trace_ELBO()

    def losses(draw: bool) -> torch.Tensor:
        bnet.guide.exact_kl = not draw  # exact_kl False: theta is drawn (the old path)
        out = []
        for i in range(2000 if guide != "map" else 3):
            pyro.set_rng_seed(i)
            out.append(elbo.differentiable_loss(bnet, bnet.guide, x, y).detach())
        return torch.stack(out)

    free, drawn = losses(False), losses(True)
    if guide == "map":
        assert torch.allclose(free, drawn, rtol=1e-6)
        return
    se = (free.var() / len(free) + drawn.var() / len(drawn)).sqrt()
    assert abs(free.mean() - drawn.mean()) < 4 * se
    assert free.std() > 0


def test_plumbing_puts_the_parameters_back_even_when_the_forward_raises():
    net = mlp()
    before = [p for p in net.parameters()]
    weights = bnn.select(net)
    plumbing = Plumbing(net, weights)
    theta = torch.zeros(bnn.flat_size(weights))
    out = plumbing.call(torch.ones(2, 3), plumbing.views(theta))
    assert torch.equal(out, torch.zeros(2, 2))  # every parameter was theta's (0)
    with pytest.raises(RuntimeError):
        plumbing.call(torch.ones(2, 5), plumbing.views(theta))  # wrong input width
    assert [p for p in net.parameters()] == before
    assert all(isinstance(p, nn.Parameter) for p in net.parameters())


def test_a_fit_leaves_the_users_network_unchanged():
    net = mlp()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = data()
    bnet = bnn.bayesian(net, likelihood="categorical", guide="meanfield")
    bayesdl.fit(bnet, data={"x": x, "y": y}, steps=30, progress=False)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    assert not net._forward_hooks and not net[0]._forward_hooks


def test_the_flat_prior_has_no_kl_for_dropout_and_is_refused_by_meanfield():
    x, y = data()
    bnet = bnn.bayesian(mlp(), likelihood="categorical", guide="mc-dropout", prior="flat")
    g, m = sites(bnet, x, y)
    assert "kl" not in m  # no weight decay: p(theta) = const
    post = bayesdl.fit(bnet, data={"x": x, "y": y}, steps=20, progress=False)
    assert torch.isfinite(torch.tensor(post.elbo[-1]))
    with pytest.raises(ValueError, match="flat prior is improper"):
        bnn.bayesian(mlp(), likelihood="categorical", guide="meanfield", prior="flat")
