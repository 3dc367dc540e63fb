"""The default guide of a user model: ``--guide auto``.

A full-covariance Gaussian (``AutoMultivariateNormal``) holds the correlations of a small
posterior that a mean-field one (``AutoNormal``) shrinks away (sd ratios 0.25-0.5 in
docs/did_it_work.md: correlated regressions, the rugged-terrain tutorial); its
``D (D + 3) / 2`` numbers take long to fit when ``D`` is large (1,274 for the 49 latents of a
hierarchy: 15,000 steps and more), so ``auto`` is auto-mvn up to :data:`AUTO_MVN_MAX_DIM`
unconstrained latent numbers and auto-normal above. k-hat (workflows.checks) judges either.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro import poutine
from torch.distributions import biject_to

#: the default ``--guide``: auto-mvn for a model of at most AUTO_MVN_MAX_DIM unconstrained
#: latent numbers (a full covariance holds correlated posteriors, 230 guide numbers at most),
#: auto-normal above (docs/did_it_work.md)
AUTO_GUIDE, AUTO_MVN_MAX_DIM = "auto", 20


def resolve_guide(spec: Any, trace: poutine.Trace, discrete: list[str]) -> Any:
    """``--guide auto``: ``auto-mvn`` when the model's continuous latent sites hold at most
    :data:`AUTO_MVN_MAX_DIM` unconstrained numbers, else ``auto-normal``; any other spec
    as it is."""
    if spec != AUTO_GUIDE:
        return spec
    dim = 0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name in discrete:
            continue
        if type(site["fn"]).__name__ == "_Subsample" or site["infer"].get("_deterministic"):
            continue
        with torch.no_grad():
            dim += biject_to(site["fn"].support).inv(site["value"]).numel()
    return "auto-mvn" if dim <= AUTO_MVN_MAX_DIM else "auto-normal"
