"""Gaussian guides for Bayesian linear regression, from Pyro's autoguides.

``full_covariance``: ``q(theta) = N(m, L L^T)`` (AutoMultivariateNormal) -- holds the exact
posterior. ``mean_field``: ``q(theta) = prod_i N(m_i, s_i^2)`` (AutoNormal) -- matches the
means and under-estimates the marginal variances.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from pyro.infer.autoguide.initialization import init_to_sample


def full_covariance(model: Callable) -> AutoMultivariateNormal:
    """``q(theta) = N(m, L L^T)`` with a lower-triangular ``L``."""
    return AutoMultivariateNormal(model, init_loc_fn=init_to_sample, init_scale=0.1)


def mean_field(model: Callable) -> AutoNormal:
    """``q(theta) = prod_i N(m_i, s_i^2)``."""
    return AutoNormal(model, init_loc_fn=init_to_sample, init_scale=0.1)


def gaussian(guide) -> tuple[torch.Tensor, torch.Tensor]:
    """The fitted ``(mean, covariance)`` of either guide."""
    if isinstance(guide, AutoMultivariateNormal):
        q = guide.get_posterior()
        return q.loc.detach(), q.covariance_matrix.detach()
    loc = guide.locs.theta.detach()
    return loc, torch.diag(guide.scales.theta.detach() ** 2)
