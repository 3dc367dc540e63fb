"""Guides of the Bayesian neural network ``models/bnn.py``.

* Local reparameterization, sparse VD, dropout, MAP and MLE keep ``q(theta)`` inside the layers
  (``theta``, ``log_sigma2``, dropout masks): their guide samples nothing, :func:`in_layers`.
* Mean field with sampled weights: ``q(theta) = prod_i N(m_i, s_i^2)`` over the latent sites
  that :func:`models.bnn.bayesian_` made, which is Pyro's :class:`~pyro.infer.autoguide.AutoNormal`
  (Bayes by backprop, Blundell et al. 2015), started at the network's initial weights.
"""

from __future__ import annotations

import math

import torch
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value


def in_layers(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """``q(theta)`` lives in the model's layers: nothing to sample here."""


def mean_field(model, init: dict[str, torch.Tensor], log_sigma2: float = -10.0) -> AutoNormal:
    """``q(theta) = N(m, diag s^2)`` over the model's weight sites, ``m`` started at ``init``
    (site name -> value), ``s`` at ``exp(log_sigma2 / 2)`` as the layers start theirs."""
    return AutoNormal(
        model, init_loc_fn=init_to_value(values=init), init_scale=math.exp(log_sigma2 / 2)
    )
